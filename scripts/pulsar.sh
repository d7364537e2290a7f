#!/usr/bin/env bash
# A real Apache Pulsar standalone broker on loopback (6650, admin 8080), from Maven Central. No Docker.
#   scripts/pulsar.sh fetch    resolve the broker's runtime classpath into the cache (once)
#   scripts/pulsar.sh start    fetch if needed, start, wait until ready (120 s limit; log shown on failure)
#   scripts/pulsar.sh stop     stop it (SIGTERM, then SIGKILL after 30 s)
#   scripts/pulsar.sh status   running and ready?
#   scripts/pulsar.sh wipe     stop it and delete its data (topics, cursors, schemas)
#   scripts/pulsar.sh free-port  print a free loopback port (for EDBUS_PULSAR_PORT / EDBUS_PULSAR_ADMIN_PORT)
#   scripts/pulsar.sh classpath  fetch if needed, print the folder of the broker's jars (scripts/pulsar-cluster.sh)
# Environment: EDBUS_CACHE (default ~/.cache/edbus), EDBUS_PULSAR_DATA (default: <cache>/pulsar-data),
# EDBUS_PULSAR_VERSION (default below; each version has its own classpath in the cache),
# EDBUS_PULSAR_PORT (default 6650), EDBUS_PULSAR_ADMIN_PORT (default 8080): concurrent test runs use
# their own data folder and free ports, so they never share (or stop) each other's broker.
# Secured mode: EDBUS_PULSAR_SECURE_DIR=<dir> holding ca.pem (the CA that signed the server certificate),
# server.pem and server-key.pem (PKCS#8; for 127.0.0.1 and localhost), secret.key (the HS256 key that
# signs tokens) and admin.token (a token of role "admin", the superuser: the broker's own internal client
# and the readiness check use it). The two ports are then TLS only (pulsar+ssl://, https://), tokens are
# required (authenticationEnabled, AuthenticationProviderToken) and checked against grants
# (authorizationEnabled, superUserRoles=admin). tests/test_pulsar_security.py writes such a folder.
set -euo pipefail
shopt -s inherit_errexit

PULSAR_VERSION=${EDBUS_PULSAR_VERSION:-3.0.7}  # 3.0.x LTS; 4.2.4 also resolves from Maven Central (Java 17)
MAVEN_VERSION=3.9.9           # Maven 3.8's resolver does not finish on pulsar-broker's dependency graph
here=$(cd "$(dirname "$0")" && pwd)
cache=${EDBUS_CACHE:-$HOME/.cache/edbus}
home=$cache/pulsar-$PULSAR_VERSION
data=${EDBUS_PULSAR_DATA:-$cache/pulsar-data}
repo=$cache/m2  # Maven's own download cache, kept beside the rest
pidfile=$data/broker.pid
log=$data/broker.log
port=${EDBUS_PULSAR_PORT:-6650}
admin_port=${EDBUS_PULSAR_ADMIN_PORT:-8080}
secure=${EDBUS_PULSAR_SECURE_DIR:-}
if [ -n "$secure" ]; then
  secure=$(cd "$secure" && pwd)
  admin=https://127.0.0.1:$admin_port
  service=pulsar+ssl://127.0.0.1:$port
else
  admin=http://127.0.0.1:$admin_port
  service=pulsar://127.0.0.1:$port
fi

maven() {
  local mvn=$cache/apache-maven-$MAVEN_VERSION/bin/mvn
  if [ ! -x "$mvn" ]; then
    echo "pulsar.sh: fetching Maven $MAVEN_VERSION from Maven Central" >&2
    mvn -q -B -s "$here/pulsar/settings.xml" -Dmaven.repo.local="$repo" dependency:get -Dtransitive=false \
      -Dartifact=org.apache.maven:apache-maven:$MAVEN_VERSION:tar.gz:bin >&2
    mkdir -p "$cache"
    tar xzf "$repo/org/apache/maven/apache-maven/$MAVEN_VERSION/apache-maven-$MAVEN_VERSION-bin.tar.gz" -C "$cache"
  fi
  echo "$mvn"
}

fetch() {
  [ -f "$home/lib/.complete" ] && return 0
  echo "pulsar.sh: resolving Apache Pulsar $PULSAR_VERSION (pulsar-broker and its runtime dependencies)" >&2
  local mvn
  mvn=$(maven)
  rm -rf "$home/lib"
  mkdir -p "$home/lib"
  # the pom names its parent's version, which Maven takes only literally: written per version
  sed "s/@PULSAR_VERSION@/$PULSAR_VERSION/g" "$here/pulsar/pom.xml" > "$home/pom.xml"
  "$mvn" -q -B -s "$here/pulsar/settings.xml" -Dmaven.repo.local="$repo" -f "$home/pom.xml" \
    dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$home/lib"
  touch "$home/lib/.complete"
}

get() {
  if [ -n "$secure" ]; then
    # the token from a header file: never on a command line (ps shows those)
    curl -sf --max-time 2 --cacert "$secure/ca.pem" -H "@$data/admin-header" "$admin$1"
  else
    curl -sf --max-time 2 "$admin$1"
  fi
}

ready() {
  get /admin/v2/clusters >/dev/null 2>&1 && get /admin/v2/namespaces/public 2>/dev/null | grep -q 'public/default'
}

secure_conf() {
  local f
  for f in ca.pem server.pem server-key.pem secret.key admin.token; do
    [ -s "$secure/$f" ] || { echo "pulsar.sh: EDBUS_PULSAR_SECURE_DIR has no $f" >&2; return 1; }
  done
  (umask 077; printf 'Authorization: Bearer %s\n' "$(cat "$secure/admin.token")" >"$data/admin-header")
  cat <<CONF
brokerServicePort=
webServicePort=
brokerServicePortTls=$port
webServicePortTls=$admin_port
tlsCertificateFilePath=$secure/server.pem
tlsKeyFilePath=$secure/server-key.pem
tlsTrustCertsFilePath=$secure/ca.pem
tlsAllowInsecureConnection=false
authenticationEnabled=true
authenticationProviders=org.apache.pulsar.broker.authentication.AuthenticationProviderToken
tokenSecretKey=file://$secure/secret.key
authorizationEnabled=true
superUserRoles=admin
brokerClientTlsEnabled=true
brokerClientTrustCertsFilePath=$secure/ca.pem
brokerClientAuthenticationPlugin=org.apache.pulsar.client.impl.auth.AuthenticationToken
brokerClientAuthenticationParameters=file://$secure/admin.token
CONF
}

running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

start() {
  if running && ready; then echo "pulsar.sh: already running (pid $(cat "$pidfile"))"; return 0; fi
  if ready; then
    echo "pulsar.sh: another broker (not this data folder's) answers on $admin; use other ports" >&2
    return 1
  fi
  fetch
  mkdir -p "$data"
  # this run's ports, in a copy of the configuration
  sed -e "s/^brokerServicePort=.*/brokerServicePort=$port/" -e "s/^webServicePort=.*/webServicePort=$admin_port/" \
    "$here/pulsar/standalone.conf" >"$data/standalone.conf"
  if [ -n "$secure" ]; then secure_conf >>"$data/standalone.conf"; fi  # later keys win
  # the JDK's module system hides internals Pulsar reads (bin/pulsar opens the same ones)
  local opens="--add-opens java.base/java.io=ALL-UNNAMED --add-opens java.base/java.lang=ALL-UNNAMED
    --add-opens java.base/java.nio=ALL-UNNAMED --add-opens java.base/sun.nio.ch=ALL-UNNAMED
    --add-opens java.base/java.util.zip=ALL-UNNAMED --add-opens java.base/jdk.internal.platform=ALL-UNNAMED
    --add-opens java.base/sun.net=ALL-UNNAMED --add-opens java.management/sun.management=ALL-UNNAMED
    --add-opens jdk.management/com.sun.management.internal=ALL-UNNAMED -Dio.netty.tryReflectionSetAccessible=true"
  # shellcheck disable=SC2086
  cd "$data"  # anything the broker writes relative to its working directory stays in the data folder
  nohup java -Xms256m -Xmx1g -XX:+UseG1GC -XX:ParallelGCThreads=2 -XX:ConcGCThreads=1 $opens \
    -Dpulsar.log.level=info -cp "$home/lib/*" org.apache.pulsar.PulsarStandaloneStarter \
    --config "$data/standalone.conf" --no-functions-worker --no-stream-storage \
    --bookkeeper-dir "$data/bookkeeper" --metadata-dir "$data/metadata" >"$log" 2>&1 &
  echo $! >"$pidfile"
  local deadline=$((SECONDS + 120))
  until ready; do
    if ! running || [ $SECONDS -ge $deadline ]; then
      echo "pulsar.sh: the broker did not become ready within 120 s; its log:" >&2
      tail -n 80 "$log" >&2
      stop >/dev/null 2>&1 || true
      return 1
    fi
    sleep 1
  done
  echo "pulsar.sh: Apache Pulsar $PULSAR_VERSION ready on $service (admin $admin, pid $(cat "$pidfile"))"
}

stop() {
  if ! running; then echo "pulsar.sh: not running"; rm -f "$pidfile"; return 0; fi
  local pid
  pid=$(cat "$pidfile")
  kill -TERM "$pid"
  for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
  rm -f "$pidfile"
  echo "pulsar.sh: stopped"
}

status() {
  if running && ready; then echo "pulsar.sh: running and ready (pid $(cat "$pidfile"))"; return 0; fi
  if running; then echo "pulsar.sh: running (pid $(cat "$pidfile")), not ready"; return 1; fi
  echo "pulsar.sh: not running"
  return 1
}

wipe() {
  stop
  rm -rf "$data"
  echo "pulsar.sh: deleted $data"
}

case "${1:-}" in
  fetch) fetch ;;
  classpath) fetch; echo "$home/lib" ;;
  wipe) wipe ;;
  start) start ;;
  stop) stop ;;
  status) status ;;
  free-port) python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' ;;
  *) echo "usage: scripts/pulsar.sh fetch|start|stop|status|wipe" >&2; exit 2 ;;
esac
