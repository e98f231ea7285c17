#!/usr/bin/env bash
# scripts/cluster.sh [DIR]: a three-broker Apache Kafka cluster on loopback for trying eventline
# against replication: three KRaft nodes (each broker and controller, a three-voter quorum), the
# default replication factor 3 and min.insync.replicas=2, through the same launcher as `make up`.
# Clients on 127.0.0.1:39092,39093,39094; Ctrl-C stops the three. Then, for example:
#   KAFKA_BROKERS=127.0.0.1:39092,127.0.0.1:39093,127.0.0.1:39094 EVENTLINE_TOPIC_REPLICATION=3 \
#     EVENTLINE_TOPIC=eventline.replicated make up
# and kill -9 one node's pid (printed below) to watch the stack carry on, or two to watch commands
# answer 503 (below the minimum in-sync replicas) until one comes back.
# `make chaos` runs the same faults under load and checks nothing is lost (docs/reliability.md).
source "$(dirname "$0")/common.sh"

dir="${1:-$STATE_DIR/cluster}"
ensure_kafka
cluster_id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
[[ -s $dir/cluster-id ]] && cluster_id=$(cat "$dir/cluster-id")
mkdir -p "$dir"
echo "$cluster_id" >"$dir/cluster-id"
voters="1@127.0.0.1:39192,2@127.0.0.1:39193,3@127.0.0.1:39194"
pids=()
for node in 1 2 3; do
  port=$((39091 + node))
  bash "$KAFKA_LAUNCHER" run "$dir/node-$node" --node-id "$node" --port "$port" \
    --controller-port $((port + 100)) --voters "$voters" --cluster-id "$cluster_id" --heap 384m \
    -- min.insync.replicas=2 >>"$dir/node-$node.log" 2>&1 &
  pids+=($!)
  say "Kafka node $node on 127.0.0.1:$port (pid $!, data in $dir/node-$node)"
done
trap 'kill "${pids[@]}" 2>/dev/null; wait' INT TERM EXIT
for node in 1 2 3; do
  wait_port 127.0.0.1 $((39091 + node)) 120 || die "node $node did not start; see $dir/node-$node/logs/server.log"
done
say "The cluster is up: KAFKA_BROKERS=127.0.0.1:39092,127.0.0.1:39093,127.0.0.1:39094 (Ctrl-C stops it)"
wait
