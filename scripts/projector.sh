#!/usr/bin/env bash
# make projector ARGS="<command>": the projector's operator commands (status, dlq, rebuild,
# rollback, verify, log-identity) against the stack `make up` runs, with its environment and the
# binary it built: nothing is compiled here.
source "$(dirname "$0")/common.sh"

BIN="$CARGO_TARGET_DIR/release/eventline-projector"
[[ -x $BIN ]] || die "$BIN is not built yet: run \`make up\` first"
exec "$BIN" "$@"
