#!/usr/bin/env bash
# ops/demo.sh — gpuledger's main job, end to end, on this machine:
#   set up and build (ops/setup.sh), start a local Kafka broker, generate a sample month,
#   publish it as the operator and two CSPs would, ingest it into a fresh ledger, verify the
#   ledger, print the month's co-pay invoices, CSP statements and programme summaries, close the
#   month, ingest late events (adjustments on the next month), and replay the closed month as
#   an auditor would. The broker is stopped on exit.
# Output files (documents as JSON, CSV and HTML, the ledger, its export, the operator's key
# pair) are kept under $DEMO_DIR
# (default: run/demo/, replaced on each run).
# Options: --skip-setup  do not install or build (use an existing $BUILD_DIR)
#          --serve       at the end, serve the pages and API on $SERVE_LISTEN (default
#                        127.0.0.1:8080) until Ctrl-C; without it, the job ends by printing
#                        the command that serves them and the URL of the month's pages
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
DEMO_DIR=${DEMO_DIR:-$ROOT/run/demo}
PERIOD=${PERIOD:-2026-03}
SERVE_LISTEN=${SERVE_LISTEN:-127.0.0.1:8080}
SKIP_SETUP=0
SERVE=0
for arg in "$@"; do
  case $arg in
    --skip-setup) SKIP_SETUP=1 ;;
    --serve) SERVE=1 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
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

NEXT=$(python3 -c "y,m=map(int,'$PERIOD'.split('-')); print(f'{y+(m==12)}-{m%12+1:02d}')")
INGEST=("$GPULEDGER" ingest --until-end --signing-key "$DEMO_DIR/operator-key.pem")

step "live drafts for $PERIOD: invoices, CSP statements, programme summaries"
"$GPULEDGER" settle --period "$PERIOD"

step "closing $PERIOD: the close goes through Kafka; ingest records it and seals it"
"$GPULEDGER" settle close --period "$PERIOD" --wait-s 0
"${INGEST[@]}"
"$GPULEDGER" settle status
OUT=$DEMO_DIR/documents
mkdir -p "$OUT"
"$GPULEDGER" settle --period "$PERIOD" --format json -o "$OUT/$PERIOD.json"
"$GPULEDGER" settle --period "$PERIOD" --format html -o "$OUT/$PERIOD.html"
"$GPULEDGER" settle --period "$PERIOD" --format html --lang en -o "$OUT/$PERIOD.en.html"
for doc in invoices statements programs; do
  "$GPULEDGER" settle --period "$PERIOD" --format csv --document "$doc" -o "$OUT/$PERIOD-$doc.csv"
done

step "late events for $PERIOD arrive after the close: adjustments on $NEXT's drafts"
"$GPULEDGER" publish --kind usage "$DEMO_DIR/sample/late.jsonl"
"${INGEST[@]}"
"$GPULEDGER" settle --period "$NEXT"
"$GPULEDGER" settle --period "$NEXT" --format json -o "$OUT/$NEXT-draft.json"

step "auditor: verify an export with the public key, then rebuild every closed period from it"
"$GPULEDGER" ledger export --out "$DEMO_DIR/ledger.export"
"$GPULEDGER" settle status --format json -o "$OUT/closes.json"
"$GPULEDGER" audit replay --export "$DEMO_DIR/ledger.export" \
  --public-key "$DEMO_DIR/operator-pub.pem" --expect "$OUT/closes.json"
step "auditor: decide every entry again from the ledger alone and compare with what was recorded"
"$GPULEDGER" audit decisions

step "final documents of $PERIOD (frozen at its close)"
"$GPULEDGER" settle --period "$PERIOD"
printf '\nDocuments written to %s: %s.json (canonical), %s.html (printable, Korean; %s.en.html in\n' \
  "$OUT" "$PERIOD" "$PERIOD" "$PERIOD"
printf 'English), %s-{invoices,statements,programs}.csv, %s-draft.json and closes.json (digests).\n' \
  "$PERIOD" "$NEXT"
step "the year so far: budgets drawn down, usage and capacity by programme (docs/REPORTS.md)"
"$GPULEDGER" report budget --year "${PERIOD%-*}"
"$GPULEDGER" report usage --from "$PERIOD" --to "$NEXT" --by program
step "alerts: each raised once, published to the Kafka alerts topic (docs/ALERTS.md)"
"$GPULEDGER" alerts run --until-delivered --poll-ms 100 2>"$DEMO_DIR/alerts.log"
grep -E "alert raised|published" "$DEMO_DIR/alerts.log" >&2 || true
"$GPULEDGER" alerts list
step "pages and API for people and systems"
TOKENS=$DEMO_DIR/tokens
FINANCE_TOKEN=$("$GPULEDGER" tokens add --file "$TOKENS" --role finance --name "demo finance" 2>/dev/null)
"$GPULEDGER" tokens add --file "$TOKENS" --role auditor --name "demo auditor" \
  >"$DEMO_DIR/auditor.token" 2>/dev/null
"$GPULEDGER" tokens add --file "$TOKENS" --role csp:csp-alpha --name "demo csp-alpha" \
  >"$DEMO_DIR/csp-alpha.token" 2>/dev/null
URL="http://$SERVE_LISTEN/ui/invoices?period=$PERIOD"
if [ "$SERVE" = 1 ]; then
  printf '\nServing %s: open %s\nand sign in with the finance token %s\n' "$PERIOD" "$URL" "$FINANCE_TOKEN"
  printf '(auditor token in %s/auditor.token). Ctrl-C stops it.\n' "$DEMO_DIR"
  echo "main job done" >&2
  "$GPULEDGER" serve --tokens "$TOKENS" --listen "$SERVE_LISTEN"
  exit 0
fi
printf '\nThe pages for %s: run\n  %s serve --db %s --tokens %s --listen %s\n' \
  "$PERIOD" "$GPULEDGER" "$GPULEDGER_DB" "$TOKENS" "$SERVE_LISTEN"
printf 'then open %s and sign in with the finance token\n  %s\n' "$URL" "$FINANCE_TOKEN"
printf '(or run ops/demo.sh --serve to do both). Auditor and CSP tokens: %s/*.token\n' "$DEMO_DIR"
echo "main job done" >&2
