#!/usr/bin/env bash
# make test: bring up the dependencies as `make up` does (PostgreSQL, Redis, the broker), then run
# every unit, integration and end-to-end test against them. Each test uses its own database and
# topic, so a running `make up` stack is neither needed nor disturbed.
source "$(dirname "$0")/common.sh"

ensure_build_tools
# The tracing test reads its spans back from a Jaeger of its own (started by scripts/jaeger.sh),
# built here while the rest is installed; so is promtool, which checks the alerting rules.
build_jaeger_in_background
(ensure_promtool >/dev/null) 2>"$STATE_DIR/promtool-install.log" &
promtool_install=$!
ensure_postgres
ensure_redis
ensure_broker
# The HTML API reference and the operator console are checked in a real headless browser (the
# console is driven over WebDriver, through chromedriver).
command -v chromium >/dev/null || apt_install chromium
command -v chromedriver >/dev/null || apt_install chromium-driver
export CHROMIUM="${CHROMIUM:-$(command -v chromium)}" CHROMEDRIVER="${CHROMEDRIVER:-$(command -v chromedriver)}"
# docker-compose.yml is validated by a real Compose parser (no Docker engine needed for that).
command -v docker-compose >/dev/null || apt_install docker-compose
# Some tests run a Kafka broker of their own (through scripts/kafka.sh), to stop it under load.
ensure_kafka
# The generated clients are exercised, and schemathesis run, against the services.
bash "$ROOT/scripts/clients.sh"
export EVENTLINE_CLIENTS_DIR="${EVENTLINE_CLIENTS_DIR:-$ROOT/target/clients}" EVENTLINE_PYTHON_VENV="$PY_VENV"
# The event log's contract (docs/asyncapi.yaml) is validated by the AsyncAPI CLI.
ensure_asyncapi_cli
# The Kubernetes manifests are rendered with kubectl kustomize and validated offline.
ensure_kubectl
wait_for_jaeger_build
wait "$promtool_install" || { cat "$STATE_DIR/promtool-install.log" >&2; die "could not install promtool"; }

# The alerting rules: valid, and their unit tests (series in, alerts out) pass.
promtool=$(ensure_promtool)
say "Checking the alerting rules (promtool)"
"$promtool" check rules "$ROOT/deploy/prometheus/alerts.yml"
(cd "$ROOT/deploy/prometheus" && "$promtool" test rules alerts.test.yml)

# Brokers an interrupted earlier run left behind (a test's or the chaos run's own Kafka).
pkill -f 'kafka\.Kafka .*/eventline-(test-kafka|secure|sandbox)-' 2>/dev/null || true

# Databases of earlier runs (each test creates its own).
if command -v psql >/dev/null; then
  server="${DATABASE_URL%/*}/postgres"
  psql -qAt "$server" -c "SELECT datname FROM pg_database WHERE datname LIKE 'eventline\_test\_%'" 2>/dev/null |
    while read -r db; do psql -q "$server" -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1 || true; done
fi

# Topics of earlier runs (each test creates its own).
delete_stale_topics 'eventline\.test\..*'

# Redis keys of earlier runs' test topics (dead-letter streams have no expiry).
if command -v redis-cli >/dev/null; then
  read -r rhost rport < <(host_port "$REDIS_URL" 6379)
  redis-cli -h "$rhost" -p "$rport" --scan --pattern 'eventline:dlq:eventline.test.*' 2>/dev/null |
    xargs -r redis-cli -h "$rhost" -p "$rport" DEL >/dev/null 2>&1 || true
fi

# The router tests' databases (`#[sqlx::test]`) are made from the one DATABASE_URL names.
ensure_database "$DATABASE_URL"

say "Running the tests"
cargo test --workspace --locked "$@"

# The short chaos run: faults under load against dependencies of its own (see scripts/chaos.sh),
# with the debug builds the tests just made.
if [[ $# -eq 0 ]]; then
  ensure_chaos_dependencies
  say "Injecting faults under load (short chaos run)"
  build_services_and_tool_in eventline-chaos
  EVENTLINE_ROOT="$ROOT" "$CARGO_TARGET_DIR/debug/eventline-chaos" --short
fi
