#!/usr/bin/env bash
# The one launcher of Apache Kafka for eventline: `make up`, `make test`, `make bench`, the test
# kit and the tools all start their brokers through it (docs/decisions.md, "The local broker").
#
#   kafka.sh classpath
#       Resolves the broker (tools/kafka/pom.xml: org.apache.kafka:kafka_2.13 and its logging
#       backend) from Maven Central once into ~/.cache/eventline and prints its classpath.
#
#   kafka.sh run DIR [options] [-- key=value ...]
#       Runs one KRaft node (broker and controller combined) with its data, configuration and
#       server log under DIR, formatting its storage the first time only. It execs Java, so the
#       caller's child process *is* the broker (signals reach it directly).
#         --port P              client listener on 127.0.0.1:P (default 9092)
#         --controller-port C   controller listener on 127.0.0.1:C (default P + 1000)
#         --node-id N           (default 1)
#         --voters V            the KRaft quorum, id@host:port,… (default: this node alone)
#         --cluster-id ID       shared by every node of a cluster (default: made once, kept in DIR)
#         --heap SIZE           maximum heap (default 512m)
#         --logs LOGDIR         where the broker's own log goes (default DIR/logs)
#         --listener NAME://127.0.0.1:PORT
#                               a further client listener (e.g. SASL_SSL), also advertised; repeatable
#         --add-scram SPEC      a SCRAM credential created at format time, as kafka-storage takes it
#                               (e.g. 'SCRAM-SHA-512=[name=eventline,password=…]'); repeatable
#       Every key=value after `--` is appended to the broker's configuration, overriding a default
#       (listeners, TLS and SASL settings for a secured listener, replication defaults).
#
#   kafka.sh topics ARGS...
#       Kafka's topic tool (what kafka-topics.sh runs): --list, --describe, --delete, ...
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE_DIR="${EVENTLINE_CACHE_DIR:-$HOME/.cache/eventline}"
KAFKA_VERSION=4.4.0
POM="$ROOT/tools/kafka/pom.xml"
LIBS="$CACHE_DIR/kafka-$KAFKA_VERSION/libs"

die() { printf 'kafka.sh: %s\n' "$*" >&2; exit 1; }

# The classpath, resolved once per version of the pom (its hash is the stamp).
classpath() {
  local stamp="$LIBS/.pom"
  if ! cmp -s "$POM" "$stamp" 2>/dev/null; then
    command -v java >/dev/null || die "Java 17 is needed to run Apache Kafka (java not found)"
    command -v mvn >/dev/null || die "Maven is needed to fetch Apache Kafka (mvn not found)"
    printf '\033[1m==> %s\033[0m\n' "Resolving Apache Kafka $KAFKA_VERSION from Maven Central into $LIBS (once)" >&2
    rm -rf "$LIBS.part"
    mvn -q -B -Dstyle.color=never -f "$POM" dependency:copy-dependencies -DincludeScope=runtime \
      -DoutputDirectory="$LIBS.part" >&2 || die "could not resolve Apache Kafka with Maven"
    rm -rf "$LIBS"
    mv "$LIBS.part" "$LIBS"
    cp "$POM" "$stamp"
  fi
  printf '%s/*' "$LIBS"
}

# A random cluster id as Kafka writes them: 16 random bytes, URL-safe base64 without padding, and
# never starting with '-' (kafka-storage would take it for an option; Kafka's own ids skip those).
new_cluster_id() {
  local id
  while id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=') && [[ $id == -* ]]; do :; done
  echo "$id"
}

run() {
  local dir=${1:?usage: kafka.sh run DIR [options]}
  shift
  local port=9092 controller_port="" node_id=1 voters="" cluster_id="" heap=512m logs=$dir/logs
  local scram=() overrides=() listeners=""
  while (($#)); do
    case $1 in
      --port) port=$2; shift 2 ;;
      --controller-port) controller_port=$2; shift 2 ;;
      --node-id) node_id=$2; shift 2 ;;
      --voters) voters=$2; shift 2 ;;
      --cluster-id) cluster_id=$2; shift 2 ;;
      --heap) heap=$2; shift 2 ;;
      --logs) logs=$2; shift 2 ;;
      --add-scram) scram+=(--add-scram "$2"); shift 2 ;;
      --listener) listeners+=",$2"; shift 2 ;;
      --) shift; overrides=("$@"); break ;;
      *) die "unknown option $1" ;;
    esac
  done
  controller_port=${controller_port:-$((port + 1000))}
  voters=${voters:-$node_id@127.0.0.1:$controller_port}
  mkdir -p "$dir/data" "$logs"
  if [[ -z $cluster_id ]]; then
    [[ -s $dir/cluster-id ]] || new_cluster_id >"$dir/cluster-id"
    cluster_id=$(cat "$dir/cluster-id")
  fi
  local cp
  cp=$(classpath)

  # Rewritten on every start, so a changed option takes effect; the data stays.
  local config="$dir/server.properties" voter_count
  voter_count=$(tr ',' '\n' <<<"$voters" | grep -c .)
  {
    echo "# Written by scripts/kafka.sh on every start; edits are lost."
    echo "process.roles=broker,controller"
    echo "node.id=$node_id"
    echo "controller.quorum.voters=$voters"
    echo "controller.listener.names=CONTROLLER"
    echo "listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller_port$listeners"
    echo "advertised.listeners=PLAINTEXT://127.0.0.1:$port$listeners"
    echo "inter.broker.listener.name=PLAINTEXT"
    echo "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL"
    echo "log.dirs=$dir/data"
    # The services create the event topic themselves, with retention.ms=-1; a topic created by a
    # stray metadata request would have the broker's finite default.
    echo "auto.create.topics.enable=false"
    # One local projector should not wait 3 s for group members that never come.
    echo "group.initial.rebalance.delay.ms=0"
    # Internal topics as replicated as the cluster allows.
    local rf=$((voter_count < 3 ? voter_count : 3)) min_isr=$((voter_count < 3 ? 1 : 2))
    echo "offsets.topic.replication.factor=$rf"
    echo "transaction.state.log.replication.factor=$rf"
    echo "transaction.state.log.min.isr=$min_isr"
    echo "share.coordinator.state.topic.replication.factor=$rf"
    echo "share.coordinator.state.topic.min.isr=$min_isr"
    echo "default.replication.factor=$rf"
    echo "offsets.topic.num.partitions=6"
    printf '%s\n' "${overrides[@]}"
  } >"$config"

  if [[ ! -s $dir/data/meta.properties ]]; then
    java -Xmx256m -cp "$cp" -Dlog4j2.configurationFile="$ROOT/tools/kafka/log4j2.properties" \
      -Dkafka.logs.dir="$logs" kafka.tools.StorageTool format \
      --cluster-id "$cluster_id" --config "$config" "${scram[@]}" >"$logs/format.log" 2>&1 ||
      die "formatting $dir/data failed: $(tail -n 3 "$logs/format.log")"
  fi

  # The services' traces are exported over OTLP; the broker's JVM has no agent that would.
  exec java "-Xmx$heap" "-Xms$heap" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$ROOT/tools/kafka/log4j2.properties" -Dkafka.logs.dir="$logs" \
    -cp "$cp" kafka.Kafka "$config"
}

# Kafka's own topic tool (what kafka-topics.sh runs), e.g.
# `kafka.sh topics --bootstrap-server 127.0.0.1:9092 --list`.
topics() {
  local cp
  cp=$(classpath)
  exec java -Xmx256m -Dlog4j2.configurationFile="$ROOT/tools/kafka/log4j2-tools.properties" \
    -cp "$cp" org.apache.kafka.tools.TopicCommand "$@"
}

case ${1:-} in
  classpath) classpath; echo ;;
  run) shift; run "$@" ;;
  topics) shift; topics "$@" ;;
  *) die "usage: kafka.sh classpath | kafka.sh run DIR [options] [-- key=value …] | kafka.sh topics ARGS…" ;;
esac
