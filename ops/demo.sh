#!/usr/bin/env bash
# ops/demo.sh — gpuledger's main job, end to end, on this machine:
#   set up and build (ops/setup.sh), start a local Kafka broker, generate a sample month,
#   publish it as the operator and two CSPs would, ingest it into a fresh ledger, verify the
#   ledger, and print the month's co-pay invoices. The broker is stopped on exit.
# Output files (invoices as JSON and CSV, the ledger, its export, the operator's key pair) are
# kept under $DEMO_DIR
# (default: run/demo/, replaced on each run).
# Options: --skip-setup  do not install or build (use an existing $BUILD_DIR)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
DEMO_DIR=${DEMO_DIR:-$ROOT/run/demo}
PERIOD=${PERIOD:-2026-03}
SKIP_SETUP=0
for arg in "$@"; do
  case $arg in
    --skip-setup) SKIP_SETUP=1 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "demo: unknown option $arg (try --help)" >&2; exit 2 ;;
  esac
done

step() { printf '\n==> %s\n' "$*" >&2; }

[ "$SKIP_SETUP" = 1 ] || "$ROOT/ops/setup.sh"
GPULEDGER=$BUILD_DIR/cli/gpuledger
[ -x "$GPULEDGER" ] || { echo "demo: $GPULEDGER not built; run ops/setup.sh" >&2; exit 1; }

rm -rf "$DEMO_DIR"
mkdir -p "$DEMO_DIR"
step "starting a local Kafka broker"
"$ROOT/ops/kafka/start.sh" --env-file "$DEMO_DIR/kafka.env" >/dev/null
trap '"$ROOT/ops/kafka/stop.sh" --env-file "$DEMO_DIR/kafka.env" || true' EXIT
# shellcheck disable=SC1091
. "$DEMO_DIR/kafka.env"
export GPULEDGER_BROKERS=$KAFKA_BOOTSTRAP GPULEDGER_DB=$DEMO_DIR/ledger
echo "broker at $KAFKA_BOOTSTRAP" >&2

step "generating the sample month $PERIOD"
python3 "$ROOT/ops/sample/make_sample.py" "$DEMO_DIR/sample" --period "$PERIOD" >&2

step "publishing: the operator's registry, then the CSPs' usage"
"$GPULEDGER" publish --kind registry "$DEMO_DIR/sample/registry.jsonl"
"$GPULEDGER" publish --kind usage "$DEMO_DIR/sample/usage.jsonl"

step "creating the operator's checkpoint signing key"
"$GPULEDGER" keys generate --private-key "$DEMO_DIR/operator-key.pem" \
  --public-key "$DEMO_DIR/operator-pub.pem"

step "ingesting every topic to its end into $GPULEDGER_DB (a signed checkpoint every 500 entries)"
"$GPULEDGER" ingest --until-end --signing-key "$DEMO_DIR/operator-key.pem" \
  --checkpoint-interval 500
"$GPULEDGER" ledger stats
"$GPULEDGER" ledger gaps

step "verifying the ledger, then an export of it, as an auditor would (public key only)"
"$GPULEDGER" ledger verify --public-key "$DEMO_DIR/operator-pub.pem"
"$GPULEDGER" ledger export --out "$DEMO_DIR/ledger.export"
"$GPULEDGER" ledger verify --export "$DEMO_DIR/ledger.export" \
  --public-key "$DEMO_DIR/operator-pub.pem"

step "settling $PERIOD"
"$GPULEDGER" settle --period "$PERIOD" --format json -o "$DEMO_DIR/invoices-$PERIOD.json"
"$GPULEDGER" settle --period "$PERIOD" --format csv -o "$DEMO_DIR/invoices-$PERIOD.csv"
"$GPULEDGER" settle --period "$PERIOD"
printf '\nInvoices also written to %s/invoices-%s.{json,csv}\n' "$DEMO_DIR" "$PERIOD"
