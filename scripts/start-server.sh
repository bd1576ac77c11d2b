#!/usr/bin/env bash
# Starts target/debug/medbook (or $MEDBOOK_BIN) on a free port against DATABASE_URL and prints
# its base URL once it listens. Its pid goes to $1, its log to $2; it listens on $3 if given
# (default: a free port on 127.0.0.1).
#   usage: DATABASE_URL=... scripts/start-server.sh PIDFILE LOGFILE [LISTEN]
set -euo pipefail
pidfile=$1 logfile=$2 listen=${3:-127.0.0.1:0}
bin=${MEDBOOK_BIN:-target/debug/medbook}
MEDBOOK_LISTEN=$listen "$bin" >"$logfile" 2>&1 &
echo $! >"$pidfile"
for _ in $(seq 1 100); do
  if addr=$(grep -o 'listening on http://[0-9.:]*' "$logfile" | head -n1); then
    echo "${addr#listening on }"
    exit 0
  fi
  kill -0 "$(cat "$pidfile")" 2>/dev/null || { cat "$logfile" >&2; exit 1; }
  sleep 0.1
done
echo "medbook did not start listening" >&2
cat "$logfile" >&2
exit 1
