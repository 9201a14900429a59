#!/usr/bin/env bash
# ops/kafka/acls.sh --env-file PATH [--topic-prefix PREFIX] [--group GROUP] [--csp ID]...
#
# Grants, on a broker started with `ops/kafka/start.sh --sasl`, the Kafka ACLs that
# docs/OPERATIONS.md ("Kafka ACLs") prescribes, with Kafka's own kafka.admin.AclCommand (the
# class behind kafka-acls.sh) from the jars, as User:admin over the SASL listener:
#   each CSP (default csp-a and csp-b): Write, Describe on its own usage topic (literal);
#   User:gpuledger-operator: Write, Describe on the registry; Read, Describe on the rejected
#     topic with its consumer group gpuledger-rejected-monitor;
#   User:gpuledger-ingest: Read, Describe on every usage topic (prefixed) and the registry; Read
#     on its consumer group (--group, default gpuledger-ingest); Write, Describe on the rejected
#     topic.
# --topic-prefix puts a namespace in front of every topic, as gpuledger's own option does.
# Topics are not created (the administrator does that, e.g. `gpuledger publish --kafka-config
# $KAFKA_SASL_DIR/admin.properties`, whose principal is a super user). Output: the commands'
# output on stderr. Exit 1 if any grant fails.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PROG=ops/kafka/acls.sh
die() { printf '%s: ERROR: %s\n' "$PROG" "$*" >&2; exit 1; }
usage() {
  printf 'usage: %s --env-file PATH [--topic-prefix PREFIX] [--group GROUP] [--csp ID]...\n' \
    "$PROG" >&2
}

ENV_FILE=
PREFIX=
GROUP=gpuledger-ingest
CSPS=()
while [ $# -gt 0 ]; do
  case $1 in
    --env-file) [ $# -ge 2 ] || { usage; exit 2; }; ENV_FILE=$2; shift 2 ;;
    --topic-prefix) [ $# -ge 2 ] || { usage; exit 2; }; PREFIX=$2; shift 2 ;;
    --group) [ $# -ge 2 ] || { usage; exit 2; }; GROUP=$2; shift 2 ;;
    --csp) [ $# -ge 2 ] || { usage; exit 2; }; CSPS+=("$2"); shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) usage; exit 2 ;;
  esac
done
[ -n "$ENV_FILE" ] || { usage; exit 2; }
[ ${#CSPS[@]} -gt 0 ] || CSPS=(csp-a csp-b)
[ -f "$ENV_FILE" ] || die "no env file $ENV_FILE (start the broker with ops/kafka/start.sh --sasl --env-file $ENV_FILE)"
SASL_BOOTSTRAP=$(sed -n 's/^KAFKA_SASL_BOOTSTRAP=//p' "$ENV_FILE" | tail -n 1)
SASL_DIR=$(sed -n 's/^KAFKA_SASL_DIR=//p' "$ENV_FILE" | tail -n 1)
RUN=$(sed -n 's/^KAFKA_RUN_DIR=//p' "$ENV_FILE" | tail -n 1)
[ -n "$SASL_BOOTSTRAP" ] && [ -n "$SASL_DIR" ] ||
  die "$ENV_FILE has no KAFKA_SASL_BOOTSTRAP/KAFKA_SASL_DIR: the broker was not started with --sasl"
ADMIN=$SASL_DIR/admin.java.properties
[ -f "$ADMIN" ] || die "no administrator credentials at $ADMIN"

LIBS=$(cd "${KAFKA_LIBS:-$HERE/libs}" && pwd)
JAVA=${JAVA_HOME:+$JAVA_HOME/bin/}java
LOGS=$RUN/logs/acls
mkdir -p "$LOGS"

# One JVM per grant, all at once (each takes ~2 s, mostly JVM start-up).
pids=()
names=()
grant() {      # grant NAME AclCommand-arguments...
  local name=$1
  shift
  "$JAVA" -Xmx128m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -XX:-UsePerfData \
    "-Dlog4j.configuration=file:$HERE/log4j.properties" "-Dkafka.logs.dir=$LOGS" \
    -cp "$LIBS/*" kafka.admin.AclCommand --bootstrap-server "$SASL_BOOTSTRAP" \
    --command-config "$ADMIN" --add "$@" >"$LOGS/$name.log" 2>&1 &
  pids+=($!)
  names+=("$name")
}

for csp in "${CSPS[@]}"; do
  grant "$csp-usage" --allow-principal "User:$csp" --operation Write --operation Describe \
    --topic "${PREFIX}gpuledger.usage.$csp"
done
grant operator-registry --allow-principal User:gpuledger-operator \
  --operation Write --operation Describe --topic "${PREFIX}gpuledger.registry"
grant operator-rejected --allow-principal User:gpuledger-operator \
  --operation Read --operation Describe --topic "${PREFIX}gpuledger.rejected"
grant operator-group --allow-principal User:gpuledger-operator \
  --operation Read --group gpuledger-rejected-monitor
grant ingest-usage --allow-principal User:gpuledger-ingest --operation Read --operation Describe \
  --resource-pattern-type prefixed --topic "${PREFIX}gpuledger.usage."
grant ingest-registry --allow-principal User:gpuledger-ingest \
  --operation Read --operation Describe --topic "${PREFIX}gpuledger.registry"
grant ingest-group --allow-principal User:gpuledger-ingest --operation Read --group "$GROUP"
grant ingest-rejected --allow-principal User:gpuledger-ingest \
  --operation Write --operation Describe --topic "${PREFIX}gpuledger.rejected"

failed=()
for i in "${!pids[@]}"; do
  if ! wait "${pids[$i]}" || ! grep -q 'Adding ACLs' "$LOGS/${names[$i]}.log"; then
    failed+=("${names[$i]}")
    sed "s/^/$PROG: ${names[$i]}: /" "$LOGS/${names[$i]}.log" >&2
  fi
done
[ ${#failed[@]} -eq 0 ] || die "granting failed: ${failed[*]} (logs in $LOGS)"
printf '%s: granted the ACLs of docs/OPERATIONS.md on %s (topic prefix "%s", CSPs %s)\n' \
  "$PROG" "$SASL_BOOTSTRAP" "$PREFIX" "${CSPS[*]}" >&2
