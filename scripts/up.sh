#!/usr/bin/env bash
# make up: install and start what is missing (PostgreSQL, Redis, the Tansu broker), migrate, build
# the three services (release) and run them in the background. Safe to run again: only what is not
# running is started.
source "$(dirname "$0")/common.sh"

BIN="$CARGO_TARGET_DIR/release"
SERVICES=(projector command query)
declare -A PORT=([command]=8081 [query]=8082 [projector]=8083)
declare -A ADDR_VAR=([command]=EVENTLINE_COMMAND_ADDR [query]=EVENTLINE_QUERY_ADDR [projector]=EVENTLINE_PROJECTOR_ADDR)

addr_of() { local var=${ADDR_VAR[$1]}; echo "${!var:-127.0.0.1:${PORT[$1]}}"; }
pid_of() { cat "$STATE_DIR/$1.pid" 2>/dev/null || true; }
running() { local pid; pid=$(pid_of "$1"); [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; }

stop_service() {
  local pid; pid=$(pid_of "$1")
  if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
  fi
  rm -f "$STATE_DIR/$1.pid"
}

# The local stack is for local use: without EVENTLINE_API_TOKENS it accepts commands without a token
# (the command service logs a warning saying so). Set EVENTLINE_API_TOKENS to require one.
if [[ -z ${EVENTLINE_API_TOKENS:-} ]]; then
  export EVENTLINE_ALLOW_UNAUTHENTICATED="${EVENTLINE_ALLOW_UNAUTHENTICATED:-true}"
fi

start_service() {
  local name=$1
  if running "$name"; then return; fi
  say "Starting eventline-$name on $(addr_of "$name")"
  nohup "$BIN/eventline-$name" >>"$STATE_DIR/$name.log" 2>&1 &
  echo $! >"$STATE_DIR/$name.pid"
}

wait_ready() {
  local name=$1 url="http://$(addr_of "$1")/readyz" deadline=$((SECONDS + 90))
  until curl -fsS -o /dev/null "$url" 2>/dev/null; do
    running "$name" || { tail -n 5 "$STATE_DIR/$name.log" >&2; die "eventline-$name exited; see $STATE_DIR/$name.log"; }
    ((SECONDS < deadline)) || die "eventline-$name not ready after 90 s ($url); see $STATE_DIR/$name.log"
    sleep 0.3
  done
}

ensure_build_tools
ensure_postgres
ensure_redis
ensure_broker

say "Building the services (release)"
cargo build --release --locked --quiet -p eventline-command -p eventline-projector -p eventline-query

# Whether the read models hold positions the local broker's log does not have: a partition with
# applied offsets but no message at all (on Tansu a partition with any message reports a high
# watermark of at least 1). Then the log they came from is gone, whoever restarted the broker.
read_models_outlive_the_log() {
  read -r host _ < <(host_port "$KAFKA_BROKERS" 9092)
  is_local "$host" || return 1
  "$BIN/eventline-projector" status --json 2>/dev/null | awk '
    /"highWatermark": [0-9]+/ { hw = $2 + 0; known = 1 }
    /"highWatermark": null/   { known = 0 }
    /"nextOffset": [0-9]+/    { if (known && hw == 0 && $2 + 0 > 0) gone = 1 }
    END { exit gone ? 0 : 1 }'
}

"$BIN/eventline-projector" migrate >>"$STATE_DIR/projector.log" 2>&1 || die "migration failed; see $STATE_DIR/projector.log"
if [[ -f $CACHE_DIR/broker-log-is-new || -f $STATE_DIR/broker-log-is-new ]] || read_models_outlive_the_log; then
  # The log the read models were built from is gone with the old broker: a read model must be a
  # function of the log it came from, so start everything afresh against the new, empty log.
  warn "A new broker was started with an empty log: resetting the read models in $(echo "$DATABASE_URL" | sed -E 's#//[^@]*@#//#') to match it"
  for name in "${SERVICES[@]}"; do stop_service "$name"; done
  "$BIN/eventline-projector" reset --yes >>"$STATE_DIR/projector.log" 2>&1 || die "reset failed; see $STATE_DIR/projector.log"
  rm -f "$CACHE_DIR/broker-log-is-new" "$STATE_DIR/broker-log-is-new"
fi

for name in "${SERVICES[@]}"; do start_service "$name"; done
for name in "${SERVICES[@]}"; do wait_ready "$name"; done

cat <<INFO

eventline is up (state, logs and pids in $STATE_DIR)
  command API     http://$(addr_of command)       POST /users /orders /orders/{id}/payments /inventory/{sku}/adjustments /commands/batch (reference: /docs)
  query API       http://$(addr_of query)       GET /users/{id} /users/{id}/orders /orders/{id} /inventory/{sku} (reference: /docs)
  projector admin http://$(addr_of projector)       /projections /readyz /metrics
  Kafka           $KAFKA_BROKERS (topic ${EVENTLINE_TOPIC:-eventline.events})
  PostgreSQL      $(echo "$DATABASE_URL" | sed -E 's#//[^@]*@#//#')
  Redis           $REDIS_URL
Stop with: make down
INFO
