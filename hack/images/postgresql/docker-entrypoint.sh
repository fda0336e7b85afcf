#!/bin/bash
# Entrypoint of the local PostgreSQL image (see Dockerfile): initialise an empty PGDATA like the
# official image does (POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB, initdb.d scripts), then
# exec the server listening on every address.
set -euo pipefail

: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"
: "${PGDATA:=/var/lib/postgresql/data}"
export PGDATA

if [[ "${1:-postgres}" != postgres ]]; then
    exec "$@"
fi
[[ $# -gt 0 ]] && shift

if [[ ! -s "$PGDATA/PG_VERSION" ]]; then
    if [[ -z "${POSTGRES_PASSWORD:-}" ]]; then
        echo "docker-entrypoint: POSTGRES_PASSWORD is required" >&2
        exit 1
    fi
    mkdir -p "$PGDATA"
    chmod 700 "$PGDATA"
    pwfile=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
    initdb --username="$POSTGRES_USER" --pwfile="$pwfile" --encoding=UTF8 --locale=C.UTF-8 \
        --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    rm -f "$pwfile"
    echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
    pg_ctl --wait --silent -o "-c listen_addresses='' -c unix_socket_directories=/var/run/postgresql" start
    psql=(psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --host /var/run/postgresql)
    if [[ "$POSTGRES_DB" != postgres ]]; then
        "${psql[@]}" --dbname postgres --set db="$POSTGRES_DB" <<<'CREATE DATABASE :"db";' >/dev/null
    fi
    for f in /docker-entrypoint-initdb.d/*; do
        case "$f" in
            *.sql) echo "docker-entrypoint: running $f"; "${psql[@]}" --dbname "$POSTGRES_DB" -f "$f" ;;
            *.sh)
                echo "docker-entrypoint: sourcing $f"
                # shellcheck source=/dev/null
                . "$f"
                ;;
            *) ;;
        esac
    done
    pg_ctl --wait --silent -m fast stop
    echo "docker-entrypoint: database initialised in $PGDATA"
fi

exec postgres -c listen_addresses='*' "$@"
