#!/usr/bin/env bash
# make bench [QUICK=1]: the benchmark (tools/src/bin/eventline-bench) against release builds of the
# services, on the dependencies `make up` uses (started if needed). A topic, a database and ports
# (18081-18083) of its own: a running stack is not disturbed. Writes target/bench/results.json and
# docs/benchmarks.md.
source "$(dirname "$0")/common.sh"

ensure_dependencies
build_services_and_tool eventline-bench

if [[ $KAFKA_BROKERS == 127.0.0.1:9092 ]]; then
  export EVENTLINE_BROKER="Tansu $TANSU_VERSION on this machine, in-memory storage (memory://)"
else
  export EVENTLINE_BROKER="${EVENTLINE_BROKER:-Kafka at $KAFKA_BROKERS}"
fi
# Open-loop runs keep up to 2,000 requests (sockets) in flight.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
args=()
[[ ${QUICK:-} == 1 ]] && args+=(--quick)
say "Running the benchmark${args:+ (quick)}"
cd "$ROOT" && EVENTLINE_ROOT="$ROOT" "$CARGO_TARGET_DIR/release/eventline-bench" "${args[@]}"
