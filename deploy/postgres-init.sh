#!/bin/sh
# Least-privilege PostgreSQL roles for the compose stack's event sink.
#
# docker-compose.yml mounts this into the postgres image's /docker-entrypoint-initdb.d/,
# which runs it once, as the superuser POSTGRES_USER, when the data directory is first
# initialised: it applies deploy/postgres-roles.sql to POSTGRES_DB and gives the login
# roles their passwords, so the worker writes as coordinator_worker (INSERT and SELECT
# only) and operators read as coordinator_reader, never as the superuser.
#
# It may be sourced (the image sources initdb scripts that are not executable): it sets
# no shell options and never exits. Outside the image (tests, a manual setup), psql
# reaches the server through the usual PG* variables.
: "${POSTGRES_WORKER_PASSWORD:?set it in .env}"
: "${POSTGRES_READER_PASSWORD:?set it in .env}"
psql -v ON_ERROR_STOP=1 --no-psqlrc --username "${POSTGRES_USER:-postgres}" \
    --dbname "${POSTGRES_DB:-postgres}" \
    --file "${COORDINATOR_ROLES_SQL:-/etc/coordinator/postgres-roles.sql}" \
&& psql -v ON_ERROR_STOP=1 --no-psqlrc --quiet --username "${POSTGRES_USER:-postgres}" \
    --dbname "${POSTGRES_DB:-postgres}" \
    -v worker="$POSTGRES_WORKER_PASSWORD" -v reader="$POSTGRES_READER_PASSWORD" <<'SQL'
ALTER ROLE coordinator_worker PASSWORD :'worker';
ALTER ROLE coordinator_reader PASSWORD :'reader';
SQL
