#!/usr/bin/env bash
# The one launcher of Jaeger v2 for eventline: `make up` and the tests start theirs through it
# (docs/operations.md, "Tracing").
#
#   jaeger.sh install
#       Builds Jaeger (tools/jaeger/go.mod pins github.com/jaegertracing/jaeger/cmd/jaeger) from the
#       Go module proxy once into ~/.cache/eventline and prints the program's path. Built this way
#       Jaeger serves its APIs (OTLP in, the query API out) but not its web UI, whose assets are
#       not in the module; docker-compose runs the published image, UI included.
#
#   jaeger.sh run
#       Execs Jaeger with deploy/jaeger/local.yaml: in-memory storage, everything on loopback, on
#       Jaeger's standard ports unless JAEGER_OTLP_GRPC_PORT, JAEGER_OTLP_HTTP_PORT,
#       JAEGER_QUERY_PORT, JAEGER_QUERY_GRPC_PORT or JAEGER_HEALTH_PORT name others.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE_DIR="${EVENTLINE_CACHE_DIR:-$HOME/.cache/eventline}"
MODULE="$ROOT/tools/jaeger"
VERSION=$(awk '$1 == "github.com/jaegertracing/jaeger" { print $2; exit }' "$MODULE/go.mod")
BIN="$CACHE_DIR/jaeger-$VERSION/jaeger"

die() { printf 'jaeger.sh: %s\n' "$*" >&2; exit 1; }

# The Go toolchain of the machine (Debian's golang package is too old for Jaeger).
find_go() {
  command -v go 2>/dev/null || { [[ -x /usr/local/go/bin/go ]] && echo /usr/local/go/bin/go; } ||
    die "Go is needed to build Jaeger (go not found on PATH nor in /usr/local/go)"
}

# Built once per version of the module (go.sum is the stamp).
install() {
  local stamp="$BIN.sum" go started=$SECONDS
  if [[ ! -x $BIN ]] || ! cmp -s "$MODULE/go.sum" "$stamp"; then
    go=$(find_go)
    printf '\033[1m==> %s\033[0m\n' "Building Jaeger $VERSION from the Go module proxy into ${BIN%/*} (once)" >&2
    mkdir -p "${BIN%/*}"
    (cd "$MODULE" && "$go" build -trimpath -ldflags='-s -w' -o "$BIN.part" github.com/jaegertracing/jaeger/cmd/jaeger) ||
      die "could not build Jaeger"
    mv "$BIN.part" "$BIN"
    cp "$MODULE/go.sum" "$stamp"
    printf '\033[1m==> %s\033[0m\n' "Jaeger built in $((SECONDS - started)) s" >&2
  fi
  printf '%s\n' "$BIN"
}

run() {
  install >/dev/null
  exec "$BIN" --config "$ROOT/deploy/jaeger/local.yaml"
}

case ${1:-} in
  install) install ;;
  run) run ;;
  *) die "usage: jaeger.sh install | run" ;;
esac
