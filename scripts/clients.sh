#!/usr/bin/env bash
# make clients: generates a TypeScript client (openapi-typescript + openapi-fetch) and a Python
# client (openapi-python-client) of both APIs from docs/openapi/*.json, into target/clients/ (not
# part of the sources), and builds the programs that exercise them (clients/*/check.*).
source "$(dirname "$0")/common.sh"

OUT="${EVENTLINE_CLIENTS_DIR:-$ROOT/target/clients}"
ensure_node
ensure_python_tools

say "TypeScript clients -> $OUT/typescript"
mkdir -p "$OUT/typescript"
cp "$ROOT"/clients/typescript/{package.json,package-lock.json,tsconfig.json} "$OUT/typescript/"
rm -rf "$OUT/typescript/src" && cp -r "$ROOT/clients/typescript/src" "$OUT/typescript/src"
(
  cd "$OUT/typescript"
  # Reinstall only when the lock file changed.
  if ! cmp -s package-lock.json node_modules/.installed-lock 2>/dev/null; then
    npm ci --no-audit --no-fund --loglevel=error
    cp package-lock.json node_modules/.installed-lock
  fi
  for api in command query; do
    npx --no-install openapi-typescript "$ROOT/docs/openapi/$api.json" -o "src/generated/$api.ts" --silent
  done
  npx --no-install tsc -p .
)

say "Python clients -> $OUT/python"
for api in command query; do
  "$PY_VENV/bin/openapi-python-client" generate --path "$ROOT/docs/openapi/$api.json" \
    --config "$ROOT/clients/python/$api-client.yaml" --meta none \
    --output-path "$OUT/python/eventline_${api}_client" --overwrite >"$OUT/python-$api.log" 2>&1 ||
    die "openapi-python-client failed for $api: see $OUT/python-$api.log"
  # Every operation must be generated: the generator skips what it cannot parse, with a warning.
  if grep -q "will not be generated\\|Unable to parse" "$OUT/python-$api.log"; then
    cat "$OUT/python-$api.log" >&2
    die "openapi-python-client skipped parts of docs/openapi/$api.json"
  fi
done
# Syntax check of the Python program, without writing bytecode into the sources.
"$PY_VENV/bin/python" -c 'import sys; compile(open(sys.argv[1]).read(), sys.argv[1], "exec")' \
  "$ROOT/clients/python/check.py"

say "Clients ready in $OUT (make test runs clients/typescript/src/check.ts and clients/python/check.py against a live stack)"
