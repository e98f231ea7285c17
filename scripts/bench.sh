#!/usr/bin/env bash
# make bench [QUICK=1]: the benchmark (tools/src/bin/eventline-bench) against release builds of the
# services, on the dependencies `make up` uses (started if needed: Apache Kafka, PostgreSQL, Redis).
# A topic, a database and ports (18081-18083) of its own: a running stack is not disturbed. Writes
# target/bench/results-kafka.json and docs/benchmarks.md.
source "$(dirname "$0")/common.sh"

ensure_dependencies
# Topics of runs that did not finish (a run deletes its own).
delete_stale_topics 'eventline\.bench\..*'
build_services_and_tool eventline-bench
# Open-loop runs keep up to 2,000 requests (sockets) in flight.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
args=()
[[ ${QUICK:-} == 1 ]] && args+=(--quick)
# ONLY=projection: the log, the projector and the rebuilds, the topic and database kept to profile.
[[ ${ONLY:-} == projection ]] && args+=(--only-projection)

read -r bhost _ < <(host_port "$KAFKA_BROKERS" 9092)
if is_local "$bhost" && [[ -f $STATE_DIR/broker.pid ]]; then
  broker="Apache Kafka $KAFKA_VERSION on this machine (one KRaft node, $KAFKA_BROKERS)"
else
  broker="Kafka at $KAFKA_BROKERS"
fi
say "Running the benchmark${QUICK:+ (quick)}${ONLY:+ (only the $ONLY)} on $broker"
cd "$ROOT" && EVENTLINE_ROOT="$ROOT" EVENTLINE_BROKER="${EVENTLINE_BROKER:-$broker}" \
  "$CARGO_TARGET_DIR/release/eventline-bench" "${args[@]}" --label kafka
