#!/usr/bin/env bash
# Walks one user through a running stack (make up): POST /users, then GET /users/{id} until the
# projection has it. Fails loudly if any step does not show what it should.
source "$(dirname "$0")/common.sh"

COMMAND="http://${EVENTLINE_COMMAND_ADDR:-127.0.0.1:8081}"
QUERY="http://${EVENTLINE_QUERY_ADDR:-127.0.0.1:8082}"

started_ms=$(date +%s%3N)
response=$(curl -fsS -D "$STATE_DIR/smoke.headers" -H 'content-type: application/json' \
  -d '{"email":"smoke@example.com","firstName":"Smoke","lastName":"Test"}' "$COMMAND/users")
user_id=$(sed -E 's/.*"userId":"([^"]+)".*/\1/' <<<"$response")
grep -qi '^consistency-token:' "$STATE_DIR/smoke.headers" || die "no Consistency-Token header in $response"
say "Accepted user $user_id: $response"

# The issue's bar is "within a second"; the hard limit here only guards against hanging.
deadline=$((SECONDS + 10))
until body=$(curl -fsS "$QUERY/users/$user_id" 2>/dev/null); do
  ((SECONDS < deadline)) || die "user $user_id not readable after 10 s"
  sleep 0.1
done
grep -q '"email":"smoke@example.com"' <<<"$body" || die "unexpected user: $body"
say "Read back after $(($(date +%s%3N) - started_ms)) ms: $body"
