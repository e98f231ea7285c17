#!/usr/bin/env bash
# make up: install and start what is missing (PostgreSQL, Redis, Apache Kafka), migrate, build
# the three services (release) and run them in the background. Safe to run again: only what is not
# running is started.
source "$(dirname "$0")/common.sh"

BIN="$CARGO_TARGET_DIR/release"
SERVICES=(projector command query)
declare -A PORT=([command]=8081 [query]=8082 [projector]=8083)
declare -A ADDR_VAR=([command]=EVENTLINE_COMMAND_ADDR [query]=EVENTLINE_QUERY_ADDR [projector]=EVENTLINE_PROJECTOR_ADDR)

addr_of() { local var=${ADDR_VAR[$1]}; echo "${!var:-127.0.0.1:${PORT[$1]}}"; }
pid_of() { cat "$STATE_DIR/$1.pid" 2>/dev/null || true; }
running() { alive "$(pid_of "$1")"; }

stop_service() {
  local pid; pid=$(pid_of "$1")
  if alive "$pid"; then
    kill -TERM "$pid"
    for _ in $(seq 50); do alive "$pid" || break; sleep 0.2; done
    alive "$pid" && kill -KILL "$pid"
  fi
  rm -f "$STATE_DIR/$1.pid"
}

# The local stack is for local use: without EVENTLINE_API_TOKENS or an identity provider
# (EVENTLINE_JWKS_URL) the command and query APIs let everyone in (each logs a warning saying so).
# Set either to require tokens.
if [[ -z ${EVENTLINE_API_TOKENS:-} && -z ${EVENTLINE_JWKS_URL:-} ]]; then
  export EVENTLINE_ALLOW_UNAUTHENTICATED="${EVENTLINE_ALLOW_UNAUTHENTICATED:-true}"
fi

# The operator console (/console on the projector's admin port, loopback only): a local operator
# token, made once and kept in the state directory, unless EVENTLINE_CONSOLE_TOKENS names others.
CONSOLE_TOKEN_FILE="$STATE_DIR/console-token"
if [[ -z ${EVENTLINE_CONSOLE_TOKENS:-} ]]; then
  mkdir -p "$STATE_DIR"
  [[ -s $CONSOLE_TOKEN_FILE ]] || (umask 077 && head -c 24 /dev/urandom | base64 | tr -d '/+=\n' >"$CONSOLE_TOKEN_FILE")
  export EVENTLINE_CONSOLE_TOKENS="local:operator:$(cat "$CONSOLE_TOKEN_FILE")"
  console_token="the token in $CONSOLE_TOKEN_FILE"
else
  console_token="a token of EVENTLINE_CONSOLE_TOKENS"
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
# Jaeger builds while the rest is installed, started and built.
if jaeger_enabled && ! port_open 127.0.0.1 16686; then build_jaeger_in_background; fi
ensure_postgres
ensure_redis
ensure_broker

say "Building the services (release)"
cargo build --release --locked --quiet -p eventline-command -p eventline-projector -p eventline-query

# Traces go to the local Jaeger unless the environment names another OTLP endpoint.
if jaeger_enabled; then
  ensure_jaeger
  export OTEL_EXPORTER_OTLP_ENDPOINT="${OTEL_EXPORTER_OTLP_ENDPOINT:-http://127.0.0.1:4317}"
fi

"$BIN/eventline-projector" migrate >>"$STATE_DIR/projector.log" 2>&1 || die "migration failed; see $STATE_DIR/projector.log"
# The read models record the identity of the log they were built from (cluster and topic id). If
# the broker now serves another log (its data directory removed, the topic recreated), they are
# reset to match it; otherwise nothing is touched, and `make down && make up` keeps everything.
read -r bhost _ < <(host_port "$KAFKA_BROKERS" 9092)
if is_local "$bhost"; then
  if ! "$BIN/eventline-projector" log-identity --check >>"$STATE_DIR/projector.log" 2>&1; then
    warn "The broker serves another log than the read models were built from: resetting the read models in $(echo "$DATABASE_URL" | sed -E 's#//[^@]*@#//#') to match it"
    for name in "${SERVICES[@]}"; do stop_service "$name"; done
    "$BIN/eventline-projector" reset --yes >>"$STATE_DIR/projector.log" 2>&1 || die "reset failed; see $STATE_DIR/projector.log"
  fi
fi

for name in "${SERVICES[@]}"; do start_service "$name"; done
for name in "${SERVICES[@]}"; do wait_ready "$name"; done

cat <<INFO

eventline is up (state, logs and pids in $STATE_DIR)
  command API     http://$(addr_of command)       POST /users /orders /orders/{id}/payments /inventory/{sku}/adjustments /commands/batch (reference: /docs)
  query API       http://$(addr_of query)       GET /users/{id} /users/{id}/orders /orders/{id} /inventory/{sku} (reference: /docs)
  projector admin http://$(addr_of projector)       /projections /readyz /metrics
  console         http://$(addr_of projector)/console   (sign in with $console_token)
  operator        make projector ARGS="status"   (also: dlq list, rebuild, rollback, verify; ARGS=--help)
  Kafka           $KAFKA_BROKERS (topic ${EVENTLINE_TOPIC:-eventline.events}; Apache Kafka $KAFKA_VERSION, log in $KAFKA_DATA_DIR)
  PostgreSQL      $(echo "$DATABASE_URL" | sed -E 's#//[^@]*@#//#')
  Redis           $REDIS_URL
INFO
if jaeger_enabled; then
  cat <<INFO
  Jaeger          $JAEGER_QUERY/api/v3/traces/<trace id>   (each response's traceresponse header names its trace; no web UI: see docs/operations.md)
INFO
elif [[ -n ${OTEL_EXPORTER_OTLP_ENDPOINT:-} ]]; then
  echo "  Traces          exported to $OTEL_EXPORTER_OTLP_ENDPOINT"
fi
echo "Stop with: make down"
