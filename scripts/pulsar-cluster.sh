#!/usr/bin/env bash
# A real multi-node Apache Pulsar cluster on loopback, from the Maven Central jars of scripts/pulsar.sh:
# one ZooKeeper (the metadata store), 3 bookies and 2 brokers, each its own JVM, data folder and ports.
# Ledgers: ensemble 3, write quorum 3, ack quorum 2; every bookie fsyncs its journal (journalSyncData=true).
#   scripts/pulsar-cluster.sh start          start every node not running, wait until the cluster serves
#   scripts/pulsar-cluster.sh stop           stop every node (brokers first; SIGTERM, SIGKILL after 30 s)
#   scripts/pulsar-cluster.sh status         each node up or down, RSS, and the bundles each broker owns
#   scripts/pulsar-cluster.sh kill NODE      SIGKILL one node (zk, bookie1..3, broker1..2)
#   scripts/pulsar-cluster.sh stop NODE      SIGTERM one node (a clean stop)
#   scripts/pulsar-cluster.sh start NODE     start one node, wait until it serves
#   scripts/pulsar-cluster.sh restart NODE   stop (SIGTERM) then start one node
#   scripts/pulsar-cluster.sh env            the test variables (EDBUS_TEST_PULSAR, ...), for `eval`
#   scripts/pulsar-cluster.sh wipe           stop everything and delete the data folder
#   scripts/pulsar-cluster.sh test           start a cluster of its own on free ports, run the contract
#                                            suite and the cluster fault scenarios on it, stop and delete it
# Environment: EDBUS_CACHE (default ~/.cache/edbus), EDBUS_CLUSTER_DATA (default <cache>/pulsar-cluster),
# EDBUS_PULSAR_VERSION (the Pulsar release of every node; default: scripts/pulsar.sh's).
# Ports: EDBUS_CLUSTER_ZK_PORT, EDBUS_CLUSTER_BOOKIE{1,2,3}_PORT, EDBUS_CLUSTER_BROKER{1,2}_PORT,
# EDBUS_CLUSTER_BROKER{1,2}_ADMIN_PORT; any not set is a free port chosen at the first start and kept in
# <data>/ports.env, so a restarted node comes back on the same port and concurrent runs never share.
set -euo pipefail
shopt -s inherit_errexit

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
cache=${EDBUS_CACHE:-$HOME/.cache/edbus}
lib=  # the broker's jars, from scripts/pulsar.sh (its version: EDBUS_PULSAR_VERSION)
data=${EDBUS_CLUSTER_DATA:-$cache/pulsar-cluster}
NODES=(zk bookie1 bookie2 bookie3 broker1 broker2)

classpath() {  # fetched once per version (scripts/pulsar.sh), then read from the cache
  [ -n "$lib" ] || lib=$(bash "$here/pulsar.sh" classpath)
}
START_LIMIT=${EDBUS_CLUSTER_START_LIMIT:-180}  # seconds a node may take to serve

say() { echo "pulsar-cluster.sh: $*"; }
die() { echo "pulsar-cluster.sh: $*" >&2; exit 1; }

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

ports() {  # this cluster's ports: from the environment, else kept from the first start, else free ones
  mkdir -p "$data"
  local f=$data/ports.env name var
  [ -f "$f" ] && . "$f"
  for name in ZK BOOKIE1 BOOKIE2 BOOKIE3 BROKER1 BROKER1_ADMIN BROKER2 BROKER2_ADMIN; do
    var=EDBUS_CLUSTER_${name}_PORT
    if [ -z "${!var:-}" ]; then printf -v "$var" %s "$(free_port)"; fi
    export "${var?}"
  done
  env | grep '^EDBUS_CLUSTER_.*_PORT=' | sort | sed 's/^/export /' >"$f"
}

port_of() {  # NODE [admin]
  case "$1" in
    zk) echo "$EDBUS_CLUSTER_ZK_PORT" ;;
    bookie[123]) local v=EDBUS_CLUSTER_${1^^}_PORT; echo "${!v}" ;;
    broker[12]) local v=EDBUS_CLUSTER_${1^^}${2:+_ADMIN}_PORT; echo "${!v}" ;;
    *) die "unknown node '$1' (one of: ${NODES[*]})" ;;
  esac
}

pid_of() { cat "$data/$1/pid" 2>/dev/null || true; }
running() { local pid; pid=$(pid_of "$1"); [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; }

zk_ok() { [ "$(exec 3<>/dev/tcp/127.0.0.1/"$EDBUS_CLUSTER_ZK_PORT" && printf ruok >&3 && timeout 2 cat <&3)" = imok ]; } 2>/dev/null

ready() {  # NODE: serves (ZooKeeper answers, a bookie is registered writable, a broker answers its admin)
  case "$1" in
    zk) zk_ok ;;
    bookie*) running "$1" && listening "$(port_of "$1")" ;;  # BookKeeper opens its port once registered
    broker*) curl -sf --max-time 3 "http://127.0.0.1:$(port_of "$1" admin)/admin/v2/brokers/health" 2>/dev/null | grep -q ok ;;
  esac
}

listening() { (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null; }

# JVM flags. 2 cores shared by 6 JVMs (and the tests): serial GC, fixed heap limits, 2 CPUs seen.
jvm_opts() {
  local heap direct
  case "$1" in
    zk) heap=256m direct=64m ;;
    bookie*) heap=256m direct=256m ;;
    broker*) heap=512m direct=512m ;;
  esac
  echo "-Xms64m -Xmx$heap -XX:MaxDirectMemorySize=$direct -XX:+UseSerialGC -XX:ActiveProcessorCount=2
    -XX:+ExitOnOutOfMemoryError -Djava.net.preferIPv4Stack=true -Dio.netty.tryReflectionSetAccessible=true
    --add-opens java.base/java.io=ALL-UNNAMED --add-opens java.base/java.lang=ALL-UNNAMED
    --add-opens java.base/java.nio=ALL-UNNAMED --add-opens java.base/sun.nio.ch=ALL-UNNAMED
    --add-opens java.base/java.util.zip=ALL-UNNAMED --add-opens java.base/jdk.internal.platform=ALL-UNNAMED
    --add-opens java.base/sun.net=ALL-UNNAMED --add-opens java.management/sun.management=ALL-UNNAMED
    --add-opens jdk.management/com.sun.management.internal=ALL-UNNAMED"
}

fill() {  # TEMPLATE NODE-DIR PORT [ADMIN-PORT]: the node's configuration with its folder and ports
  sed -e "s|@DATA@|$2|g" -e "s|@PORT@|$3|g" -e "s|@ADMIN_PORT@|${4:-}|g" -e "s|@ZK_PORT@|$EDBUS_CLUSTER_ZK_PORT|g" \
    "$here/pulsar/cluster/$1"
}

launch() {  # NODE: start its JVM in the background
  local node=$1 dir=$data/$1 main args
  mkdir -p "$dir"
  classpath
  case "$node" in
    zk) fill zookeeper.conf "$dir/data" "$(port_of zk)" >"$dir/node.conf"; mkdir -p "$dir/data"
        main=org.apache.zookeeper.server.ZooKeeperServerMain args="$dir/node.conf" ;;
    bookie*) fill bookie.conf "$dir" "$(port_of "$node")" >"$dir/node.conf"
        main=org.apache.bookkeeper.server.Main args="--conf $dir/node.conf" ;;
    broker*) fill broker.conf "$dir" "$(port_of "$node")" "$(port_of "$node" admin)" >"$dir/node.conf"
        main=org.apache.pulsar.PulsarBrokerStarter args="--broker-conf $dir/node.conf" ;;
  esac
  # shellcheck disable=SC2046,SC2086
  (cd "$dir" && exec nohup java $(jvm_opts "$node") -Dlog4j2.formatMsgNoLookups=true -cp "$lib/*" \
     "$main" $args >>"$dir/node.log" 2>&1) &
  echo $! >"$dir/pid"
}

await() {  # NODE: wait until it serves; on failure show its log and fail
  local node=$1 deadline=$((SECONDS + START_LIMIT))
  until ready "$node"; do
    if ! running "$node" || [ $SECONDS -ge $deadline ]; then
      echo "pulsar-cluster.sh: $node did not serve within $START_LIMIT s ($(running "$node" && echo running || echo exited)); its log:" >&2
      tail -n 60 "$data/$node/node.log" >&2
      return 1
    fi
    sleep 1
  done
}

init_metadata() {  # once per data folder: the cluster, its tenant and namespace, BookKeeper's layout
  [ -f "$data/metadata.initialised" ] && return 0
  classpath
  local zk=zk:127.0.0.1:$EDBUS_CLUSTER_ZK_PORT
  # shellcheck disable=SC2046
  java $(jvm_opts zk) -cp "$lib/*" org.apache.pulsar.PulsarClusterMetadataSetup --cluster edbus \
    --metadata-store "$zk" --configuration-metadata-store "$zk" \
    --web-service-url "http://127.0.0.1:$EDBUS_CLUSTER_BROKER1_ADMIN_PORT,127.0.0.1:$EDBUS_CLUSTER_BROKER2_ADMIN_PORT" \
    --broker-service-url "pulsar://127.0.0.1:$EDBUS_CLUSTER_BROKER1_PORT,127.0.0.1:$EDBUS_CLUSTER_BROKER2_PORT" \
    --default-namespace-bundle-number 16 >"$data/metadata-setup.log" 2>&1 ||
    { tail -n 40 "$data/metadata-setup.log" >&2; die "metadata set-up failed (log above)"; }
  touch "$data/metadata.initialised"
}

start_node() {
  local node=$1
  if running "$node"; then say "$node already running (pid $(pid_of "$node"))"; else launch "$node"; fi
  await "$node"
}

start_all() {
  classpath
  ports
  local t0=$SECONDS node
  start_node zk
  init_metadata
  for node in bookie1 bookie2 bookie3; do running "$node" || launch "$node"; done
  for node in bookie1 bookie2 bookie3; do await "$node" || { stop_all >/dev/null 2>&1; return 1; }; done
  for node in broker1 broker2; do running "$node" || launch "$node"; done
  for node in broker1 broker2; do await "$node" || { stop_all >/dev/null 2>&1; return 1; }; done
  say "cluster ready in $((SECONDS - t0)) s: service pulsar://127.0.0.1:$EDBUS_CLUSTER_BROKER1_PORT,127.0.0.1:$EDBUS_CLUSTER_BROKER2_PORT, admin http://127.0.0.1:$EDBUS_CLUSTER_BROKER1_ADMIN_PORT and :$EDBUS_CLUSTER_BROKER2_ADMIN_PORT, data $data"
}

signal_node() {  # NODE SIGNAL [wait-seconds]
  local node=$1 sig=$2 wait=${3:-30} pid
  pid=$(pid_of "$node")
  if ! running "$node"; then rm -f "$data/$node/pid"; return 0; fi
  kill -"$sig" "$pid"
  for _ in $(seq 1 $((wait * 10))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; sleep 0.5; fi
  rm -f "$data/$node/pid"
}

stop_all() {
  local node
  for node in broker2 broker1 bookie3 bookie2 bookie1 zk; do
    if running "$node"; then signal_node "$node" TERM; say "$node stopped"; fi
  done
}

status() {
  [ -d "$data" ] || { say "no cluster in $data"; return 1; }
  ports
  local node up=0 rss
  for node in "${NODES[@]}"; do
    if running "$node"; then
      rss=$(awk '/VmRSS/ {printf "%d MiB", $2 / 1024}' "/proc/$(pid_of "$node")/status")
      printf '%-8s up    pid %-8s port %-6s RSS %s%s\n' "$node" "$(pid_of "$node")" "$(port_of "$node")" "$rss" \
        "$(ready "$node" && echo '' || echo ', not serving')"
      up=$((up + 1))
    else
      printf '%-8s down\n' "$node"
    fi
  done
  for node in broker1 broker2; do
    ready "$node" || continue
    curl -sf --max-time 5 "http://127.0.0.1:$(port_of "$node" admin)/admin/v2/brokers/edbus" |
      python3 -c 'import json, sys; print("brokers:", ", ".join(json.load(sys.stdin)))'
    python3 - "http://127.0.0.1:$(port_of "$node" admin)" <<'EOF'
import json, sys, urllib.request
admin = sys.argv[1]
brokers = json.load(urllib.request.urlopen(f"{admin}/admin/v2/brokers/edbus", timeout=5))
for b in brokers:
    owned = json.load(urllib.request.urlopen(f"{admin}/admin/v2/brokers/edbus/{b}/ownedNamespaces", timeout=5))
    print(f"  {b} owns {len(owned)} bundle(s): {', '.join(sorted(owned))}")
EOF
    break
  done
  [ "$up" -eq ${#NODES[@]} ]
}

print_env() {
  ports
  echo "export EDBUS_TEST_PULSAR=pulsar://127.0.0.1:$EDBUS_CLUSTER_BROKER1_PORT,127.0.0.1:$EDBUS_CLUSTER_BROKER2_PORT"
  echo "export EDBUS_TEST_PULSAR_ADMIN=http://127.0.0.1:$EDBUS_CLUSTER_BROKER1_ADMIN_PORT"
  echo "export EDBUS_CLUSTER_DATA=$data"
}

# The CI target: a cluster of its own (fresh folder, free ports), the contract suite, the short fault
# runs on the cluster, then the cluster stopped and deleted whatever happened.
run_tests() {
  test_tmp=$(mktemp -d)  # global: the EXIT trap runs after this function returned
  export EDBUS_CLUSTER_DATA=$test_tmp/cluster
  data=$EDBUS_CLUSTER_DATA
  trap 'stop_all >/dev/null 2>&1; rm -rf "$test_tmp"' EXIT
  trap 'exit 130' INT TERM
  start_all
  eval "$(print_env)"
  cd "$root"
  # the contract suite's Pulsar half (its SQLite half runs in `make unit`), then tests/cluster: its topics'
  # owners (both brokers), and a short run of each cluster fault scenario
  .venv/bin/pytest -q -p no:cacheprovider tests/contract -k pulsar "$@"
  .venv/bin/pytest -q -p no:cacheprovider tests/cluster "$@"
}

node_arg() { [ -n "${1:-}" ] || die "which node? one of: ${NODES[*]}"; port_of "$1" >/dev/null; }

case "${1:-}" in
  start) if [ -n "${2:-}" ]; then ports; node_arg "$2"; start_node "$2"; else start_all; fi ;;
  stop) if [ -n "${2:-}" ]; then ports; node_arg "$2"; signal_node "$2" TERM; say "$2 stopped"; else ports; stop_all; fi ;;
  kill) ports; node_arg "${2:-}"; signal_node "$2" KILL 10; say "$2 killed" ;;
  restart) ports; node_arg "${2:-}"; signal_node "$2" TERM; start_node "$2"; say "$2 restarted" ;;
  status) status ;;
  env) print_env ;;
  wipe) ports; stop_all; rm -rf "$data"; say "deleted $data" ;;
  test) shift; run_tests "$@" ;;
  *) echo "usage: scripts/pulsar-cluster.sh start|stop|status|kill NODE|restart NODE|start NODE|stop NODE|env|wipe|test" >&2
     exit 2 ;;
esac
