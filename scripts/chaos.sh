#!/usr/bin/env bash
# make chaos [SHORT=1]: fault injection under load (tools/src/bin/eventline-chaos/) against
# release builds of the services. The run starts a PostgreSQL cluster, a Redis server and an Apache
# Kafka broker of its own on free ports and crashes, flushes and freezes those, so the machine's services
# and a running `make up` stack are not touched. Writes docs/reliability.md (full runs) and
# target/chaos/results.json; exits non-zero on any loss or double effect.
source "$(dirname "$0")/common.sh"

ensure_chaos_dependencies
build_services_and_tool eventline-chaos
args=()
[[ ${SHORT:-} == 1 ]] && args+=(--short)
say "Injecting faults${args:+ (short)}"
cd "$ROOT" && EVENTLINE_ROOT="$ROOT" "$CARGO_TARGET_DIR/release/eventline-chaos" "${args[@]}"
