#!/usr/bin/env bash
# ops/kafka/fetch.sh — make sure everything the test broker needs is on this machine:
#   * java (>= 11) and kcat, installed with apt-get if missing;
#   * the Kafka broker jars (version from pom.xml) in $KAFKA_LIBS (default ops/kafka/libs),
#     downloaded from Maven Central with mvn (maven is apt-installed only if a download is
#     actually needed).
# Idempotent and cheap when everything is already there. All output goes to stderr.
# Exit 0 = ready; nonzero = something is missing, with a message saying what to do.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PROG=ops/kafka/fetch.sh
POM=$HERE/pom.xml
DEP_PLUGIN=org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies

log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() { printf '%s: ERROR: %s\n' "$PROG" "$*" >&2; exit 1; }

KAFKA_VERSION=$(sed -n 's:.*<kafka\.version>\(.*\)</kafka\.version>.*:\1:p' "$POM")
[ -n "$KAFKA_VERSION" ] || die "cannot read <kafka.version> from $POM"

# --- apt-get install, waiting for a dpkg/apt lock held by someone else -------------
apt_install() {
  command -v apt-get >/dev/null 2>&1 ||
    die "missing: $*. This is not a Debian/Ubuntu machine; install Java >= 11, Maven and kcat yourself (or set JAVA_HOME / PATH)"
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      sudo=(sudo -n)
    else
      die "missing: $*. Run as root:  apt-get install -y $*"
    fi
  fi
  # DPkg::Lock::Timeout makes apt wait (up to 10 min) for a lock held by another apt/dpkg.
  local apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive
             apt-get -y -q -o DPkg::Lock::Timeout=600)
  log "installing $* with apt-get (waits up to 10 min if another apt/dpkg holds the lock)"
  if "${apt[@]}" install --no-install-recommends "$@" >&2; then
    return 0
  fi
  log "apt-get install failed; running apt-get update and retrying"
  local i
  for i in $(seq 1 20); do            # the lists lock is not covered by DPkg::Lock::Timeout
    if "${apt[@]}" update >&2; then break; fi
    [ "$i" -lt 20 ] || die "apt-get update kept failing; fix apt (network? sources?) and re-run $PROG"
    log "apt-get update failed (lock held? network?); retry $i/20 in 30 s"
    sleep 30
  done
  "${apt[@]}" install --no-install-recommends "$@" >&2 ||
    die "apt-get install $* failed (see above); install them by hand and re-run $PROG"
}

# --- java and kcat --------------------------------------------------------------------
if [ -n "${JAVA_HOME:-}" ] && [ ! -x "$JAVA_HOME/bin/java" ]; then
  die "JAVA_HOME=$JAVA_HOME has no bin/java; unset JAVA_HOME or point it at a Java >= 11 installation"
fi
JAVA=${JAVA_HOME:+$JAVA_HOME/bin/}java
pkgs=()
command -v "$JAVA" >/dev/null 2>&1 || pkgs+=(openjdk-17-jre-headless)
command -v kcat >/dev/null 2>&1 || pkgs+=(kcat)
if [ "${#pkgs[@]}" -gt 0 ]; then apt_install "${pkgs[@]}"; fi
command -v "$JAVA" >/dev/null 2>&1 || die "no '$JAVA' even after installing openjdk-17-jre-headless; set JAVA_HOME"
command -v kcat >/dev/null 2>&1 || die "no kcat even after installing it; put it on PATH"

java_spec=$("$JAVA" -XX:-UsePerfData -XshowSettings:properties -version 2>&1 |
            sed -n 's/^ *java\.specification\.version = //p')
java_major=${java_spec#1.}; java_major=${java_major%%.*}
case $java_major in
  ''|*[!0-9]*) die "cannot tell the version of '$JAVA' (got '$java_spec')" ;;
esac
[ "$java_major" -ge 11 ] ||
  die "'$JAVA' is Java $java_spec; Kafka $KAFKA_VERSION needs Java >= 11 (17 recommended): apt-get install -y openjdk-17-jre-headless and set JAVA_HOME=/usr/lib/jvm/java-17-openjdk-amd64"

# --- the jars ---------------------------------------------------------------------------
LIBS=${KAFKA_LIBS:-$HERE/libs}
mkdir -p "$LIBS" || die "cannot create KAFKA_LIBS=$LIBS"
LIBS=$(cd "$LIBS" && pwd)
STAMP=$LIBS/.fetch-complete
WANT="kafka=$KAFKA_VERSION pom-sha256=$(sha256sum <"$POM" | cut -d' ' -f1)"

jars_ready() {
  [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] &&
    [ -f "$LIBS/kafka_2.13-$KAFKA_VERSION.jar" ] &&
    [ -f "$LIBS/kafka-clients-$KAFKA_VERSION.jar" ] &&
    compgen -G "$LIBS/reload4j-*.jar" >/dev/null &&
    compgen -G "$LIBS/slf4j-reload4j-*.jar" >/dev/null
}

if jars_ready; then
  exit 0
fi

# Serialise concurrent fetches (e.g. two start.sh at once on a fresh checkout).
exec 9>"$LIBS/.fetch.lock"
flock 9
if jars_ready; then exit 0; fi

command -v mvn >/dev/null 2>&1 || apt_install maven
command -v mvn >/dev/null 2>&1 || die "no mvn even after installing maven; put it on PATH"

if [ -f "$STAMP" ]; then                  # jars from an older pom.xml: start clean
  log "pom.xml changed since the last fetch; replacing the jars in $LIBS"
  rm -f "$STAMP" "$LIBS"/*.jar
fi
log "downloading Kafka $KAFKA_VERSION jars from Maven Central into $LIBS (about 50 MB, once)"
# (Debian's Maven 3.8 prints stray colour codes even with -B -q: strip them.)
# -U: re-check Maven Central even if an earlier (e.g. offline) attempt cached a failure.
if ! mvn -B -q -U -f "$POM" -Dkafka.libs="$LIBS" "$DEP_PLUGIN" 2>&1 |
     sed -e 's/\x1b\[[0-9;]*m//g' -e '/^[[:space:]]*$/d' >&2; then
  die "mvn could not download the Kafka $KAFKA_VERSION jars (see its output above: network, proxy in ~/.m2/settings.xml, disk?). Fix that and re-run $PROG, or set KAFKA_LIBS to a directory that already holds them."
fi
printf '%s\n' "$WANT" >"$STAMP"
jars_ready || die "mvn finished but $LIBS lacks kafka_2.13-$KAFKA_VERSION.jar / kafka-clients / reload4j jars; check $POM"
log "Kafka $KAFKA_VERSION jars ready in $LIBS ($(find "$LIBS" -maxdepth 1 -name '*.jar' | wc -l) jars)"
