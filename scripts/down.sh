#!/usr/bin/env bash
# make down: stop what `make up` started, and nothing else.
source "$(dirname "$0")/common.sh"

stop_pid_file() {
  local file="$STATE_DIR/$1.pid" pid
  [[ -f $file ]] || return 0
  pid=$(cat "$file")
  if alive "$pid"; then
    say "Stopping $1 (pid $pid)"
    kill -TERM "$pid"
    for _ in $(seq 75); do alive "$pid" || break; sleep 0.2; done
    alive "$pid" && { warn "$1 did not stop in 15 s; killing it"; kill -KILL "$pid"; }
  fi
  rm -f "$file"
}

for name in command query projector broker jaeger; do stop_pid_file "$name"; done
if [[ -f $STATE_DIR/started-redis ]]; then stop_pid_file redis; rm -f "$STATE_DIR/started-redis"; fi
if [[ -f $STATE_DIR/started-postgres ]]; then
  say "Stopping PostgreSQL (make up started it)"
  as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main stop || true
  rm -f "$STATE_DIR/started-postgres"
fi
say "Down"
