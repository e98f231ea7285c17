#!/usr/bin/env bash
# make chaos [SHORT=1]: fault injection under load (tools/src/bin/eventline-chaos.rs) against
# release builds of the services, on a topic and database per scenario and ports 28081/28083.
# It restarts the local PostgreSQL and Redis and freezes the local broker: run it on a development
# machine, not next to anything that matters. Writes docs/reliability.md (full runs) and
# target/chaos/results.json; exits non-zero on any loss or double effect.
source "$(dirname "$0")/common.sh"

ensure_dependencies
build_services_and_tool eventline-chaos
args=()
[[ ${SHORT:-} == 1 ]] && args+=(--short)
say "Injecting faults${args:+ (short)}"
cd "$ROOT" && EVENTLINE_ROOT="$ROOT" "$CARGO_TARGET_DIR/release/eventline-chaos" "${args[@]}"
