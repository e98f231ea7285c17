#!/usr/bin/env bash
# make bench [QUICK=1]: the benchmark (tools/src/bin/eventline-bench) against release builds of the
# services, on the dependencies `make up` uses (started if needed). A topic, a database and ports
# (18081-18083) of its own: a running stack is not disturbed. Writes target/bench/results-*.json and
# docs/benchmarks.md.
#
# On the local broker it runs twice, once per storage engine of nisshi, and shows both side by
# side: first the durable PostgreSQL engine (the broker `make up` runs), then the in-memory engine
# on a broker of its own (port 19092), whose run writes the main tables of docs/benchmarks.md.
source "$(dirname "$0")/common.sh"

ensure_dependencies
build_services_and_tool eventline-bench
# Open-loop runs keep up to 2,000 requests (sockets) in flight.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
args=()
[[ ${QUICK:-} == 1 ]] && args+=(--quick)
bench() { cd "$ROOT" && EVENTLINE_ROOT="$ROOT" "$CARGO_TARGET_DIR/release/eventline-bench" "$@"; }

read -r bhost _ < <(host_port "$KAFKA_BROKERS" 9092)
if ! is_local "$bhost" || [[ ! -f $STATE_DIR/broker.pid ]]; then
  # A broker this script did not start: one run, described by EVENTLINE_BROKER.
  export EVENTLINE_BROKER="${EVENTLINE_BROKER:-Kafka-compatible broker at $KAFKA_BROKERS}"
  say "Running the benchmark${args:+ (quick)}"
  bench "${args[@]}" --label default
  exit
fi

say "Running the benchmark${args:+ (quick)} on nisshi $NISSHI_VERSION, log in PostgreSQL ($EVENTLINE_BROKER_STORAGE engine on $KAFKA_BROKERS)"
EVENTLINE_BROKER="nisshi $NISSHI_VERSION on this machine, $EVENTLINE_BROKER_STORAGE storage" \
  bench "${args[@]}" --label "$EVENTLINE_BROKER_STORAGE" --json-only

other=memory; [[ $EVENTLINE_BROKER_STORAGE == memory ]] && other=postgres
port=19092
say "Running the benchmark${args:+ (quick)} on nisshi $NISSHI_VERSION, $other engine on 127.0.0.1:$port"
other_state="$STATE_DIR/bench-broker"
mkdir -p "$other_state"
(
  EVENTLINE_BROKER_STORAGE=$other
  EVENTLINE_BROKER_DATABASE_URL="${DATABASE_URL%/*}/eventline_bench_log"
  KAFKA_BROKERS="127.0.0.1:$port"
  STATE_DIR=$other_state
  ensure_broker
)
trap 'kill "$(cat "$other_state/broker.pid")" 2>/dev/null || true' EXIT
KAFKA_BROKERS="127.0.0.1:$port" EVENTLINE_BROKER="nisshi $NISSHI_VERSION on this machine, $other storage" \
  EVENTLINE_FETCH_WAIT_MS="$(broker_fetch_wait_ms "$other")" bench "${args[@]}" --label "$other" --beside "$ROOT/target/bench/results-$EVENTLINE_BROKER_STORAGE.json"
