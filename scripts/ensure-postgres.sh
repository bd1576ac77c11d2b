#!/usr/bin/env bash
# Makes sure the local PostgreSQL the tests use is installed (client library for linking) and
# running. Idempotent; used by .ci/run, harmless to run by hand.
set -euo pipefail

need_apt=()
dpkg -s libpq-dev >/dev/null 2>&1 || need_apt+=(libpq-dev)
command -v pg_ctlcluster >/dev/null 2>&1 || need_apt+=(postgresql postgresql-contrib)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi

if ! pg_isready -h 127.0.0.1 -p 5432 -q; then
  echo "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
  for _ in $(seq 1 30); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 1; done
fi
pg_isready -h 127.0.0.1 -p 5432

# tests/db_errors.rs runs medbook against databases whose sessions report errors in German (as
# on a server whose initdb took a German system locale) and in Dutch, for which PostgreSQL has
# no translation (its messages stay English under a name that does not say so). The server can
# use a locale only if it existed when the server started: make them, and restart the server
# once if they came too late.
for locale in de_DE nl_NL; do
  if ! locale -a 2>/dev/null | grep -qix "$locale.utf8"; then
    if [ ! -f "/usr/share/i18n/locales/$locale" ]; then
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq locales
    fi
    echo "making the locale $locale.UTF-8"
    localedef -i "$locale" -f UTF-8 "$locale.UTF-8"
  fi
done
if ! psql -h 127.0.0.1 -U postgres -d postgres -Atq \
    -c "SET lc_messages = 'de_DE.UTF-8'" -c "SET lc_messages = 'nl_NL.UTF-8'" >/dev/null 2>&1; then
  echo "restarting PostgreSQL so that it can use the locales de_DE.UTF-8 and nl_NL.UTF-8"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main restart
  for _ in $(seq 1 30); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 1; done
  pg_isready -h 127.0.0.1 -p 5432
fi
