#!/bin/sh
# Start the local PostgreSQL from Debian's packages and make a role and a
# database for kvmweb; print its DATABASE_URL on stdout (messages on stderr).
#
#   DATABASE_URL="$(scripts/start-postgres.sh)" make test
#
# Works without systemd: creates the cluster if there is none, starts it with
# pg_ctlcluster. The role may create databases, as the test runner needs.
# KVMWEB_PG_USER, KVMWEB_PG_PASSWORD, KVMWEB_PG_DB change the names (all "kvmweb").
set -eu

user=${KVMWEB_PG_USER:-kvmweb}
password=${KVMWEB_PG_PASSWORD:-kvmweb}
db=${KVMWEB_PG_DB:-kvmweb}

if [ "$(id -u)" -ne 0 ]; then
    echo "start-postgres: needs root (it starts the system's PostgreSQL)" >&2
    exit 1
fi
version=$(ls /usr/lib/postgresql 2>/dev/null | sort -n | tail -n 1)
if [ -z "$version" ]; then
    echo "start-postgres: PostgreSQL is not installed (scripts/install-system-deps.sh ci)" >&2
    exit 1
fi
if ! pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main" { found = 1 } END { exit !found }'; then
    echo "start-postgres: creating cluster $version/main" >&2
    pg_createcluster "$version" main >&2
fi
status=$(pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main" { print $4 }')
if [ "$status" != online ]; then
    echo "start-postgres: starting cluster $version/main" >&2
    pg_ctlcluster "$version" main start >&2
fi
port=$(pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main" { print $3 }')

psql_admin() {
    runuser -u postgres -- psql -p "$port" -v ON_ERROR_STOP=1 -qtA "$@"
}
i=0
until psql_admin -c 'select 1' >/dev/null 2>&1; do
    i=$((i + 1))
    [ "$i" -gt 100 ] && { echo "start-postgres: the server does not answer" >&2; exit 1; }
    sleep 0.1
done
if [ "$(psql_admin -c "select 1 from pg_roles where rolname = '$user'")" != 1 ]; then
    psql_admin -c "create role \"$user\" login createdb password '$password'"
fi
if [ "$(psql_admin -c "select 1 from pg_database where datname = '$db'")" != 1 ]; then
    psql_admin -c "create database \"$db\" owner \"$user\""
fi
echo "postgres://$user:$password@127.0.0.1:$port/$db"
