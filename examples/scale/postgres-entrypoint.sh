#!/bin/sh
# First start: a cluster in $PGDATA with the role and database keygate. Trust on the compose
# network only, which nothing outside the compose project reaches (no published port);
# put a password (KEYGATE_DATABASE=postgres://keygate:...@postgres/keygate) before exposing it.
set -eu
BIN=/usr/lib/postgresql/15/bin
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    "$BIN/initdb" -D "$PGDATA" -U postgres --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    echo "host all all samenet trust" >>"$PGDATA/pg_hba.conf"
    "$BIN/pg_ctl" -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
    psql -U postgres -q -c "CREATE ROLE keygate LOGIN" -c "CREATE DATABASE keygate OWNER keygate"
    "$BIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null
fi
exec "$BIN/postgres" -D "$PGDATA" -c listen_addresses='*'
