#!/usr/bin/env bash
# i18n/check_catalog.sh ROOT: the Korean catalog against the sources (GNU gettext's tools).
#   1. xgettext extracts every message id passed to Tr(lang, "...") from the C++ sources;
#   2. msgcmp fails if i18n/po/ko.po lacks one of them;
#   3. msgfmt --statistics must report every message translated (none fuzzy or untranslated);
#   4. no message of ko.po is unused by the sources (msgcomm finds what only ko.po has).
# To add a message: use it through i18n::Tr, then add its msgid and msgstr to i18n/po/ko.po.
set -euo pipefail
ROOT=${1:?usage: check_catalog.sh ROOT}
PO=$ROOT/i18n/po/ko.po
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cd "$ROOT"
# The product's sources; tests use messages on purpose that the catalog lacks.
mapfile -t sources < <(git ls-files '*.cc' '*.h' | grep -v -e '^tests/' -e '/tests/')
xgettext --language=C++ --from-code=UTF-8 --keyword= --keyword=Tr:2 --keyword=T:1 --no-location \
  --output="$WORK/sources.pot" "${sources[@]}"
[ -s "$WORK/sources.pot" ] || { echo "check_catalog: no message found in the sources" >&2; exit 1; }
n=$(grep -c '^msgid "[^"]' "$WORK/sources.pot" || true)
if ! msgcmp "$PO" "$WORK/sources.pot" 2>"$WORK/msgcmp.err"; then
  echo "check_catalog: i18n/po/ko.po lacks messages the sources use:" >&2
  cat "$WORK/msgcmp.err" >&2
  exit 1
fi
stats=$(msgfmt --check --statistics --output-file=/dev/null "$PO" 2>&1)
case $stats in
  *fuzzy*|*untranslated*) echo "check_catalog: $stats" >&2; exit 1 ;;
esac
# Messages in only one of the two files; after msgcmp above, those are ko.po's leftovers.
msgcomm --less-than=2 --no-location "$PO" "$WORK/sources.pot" -o "$WORK/extra.po" 2>/dev/null || true
extra=$(grep -c '^msgid "[^"]' "$WORK/extra.po" 2>/dev/null || true)
if [ "${extra:-0}" -gt 0 ]; then
  echo "check_catalog: i18n/po/ko.po holds $extra message(s) no source uses:" >&2
  grep '^msgid "[^"]' "$WORK/extra.po" >&2
  exit 1
fi
echo "check_catalog: every message the sources use ($n) is translated in i18n/po/ko.po: $stats"
