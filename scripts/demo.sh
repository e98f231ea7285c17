#!/usr/bin/env bash
# make demo: builds the demo tool and runs it against the running stack (make up, or docker
# compose: same ports). See tools/src/bin/eventline-demo.rs for the steps.
source "$(dirname "$0")/common.sh"

cargo build --release --locked --quiet -p eventline-tools --bin eventline-demo
exec "${CARGO_TARGET_DIR}/release/eventline-demo"
