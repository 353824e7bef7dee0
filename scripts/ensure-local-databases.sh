#!/usr/bin/env bash
# Creates the shipped config's roles and databases (quotes / 1qazxsw2, states / password, ml_states) on a local
# PostgreSQL where the `postgres` superuser can log in (trust auth, as on dev machines and CI).
# Idempotent. Only needed for the Postgres quote store or a state store on that server
# (STATE_STORAGE_DB_HOST=127.0.0.1:5432): by default the state store is the embedded PostgreSQL in
# data/pg (state_storage.db_host: embedded), which `rof demo` starts itself. Without a reachable server
# it says so and exits 0.
set -uo pipefail
host=${PGHOST:-127.0.0.1}
port=${PGPORT:-5432}
if ! command -v psql >/dev/null 2>&1 || ! psql -h "$host" -p "$port" -U postgres -qAtc 'SELECT 1' >/dev/null 2>&1; then
  echo "note: no local PostgreSQL as user postgres at $host:$port; fine for the default embedded state store (data/pg)" >&2
  exit 0
fi
psql -h "$host" -p "$port" -U postgres -v ON_ERROR_STOP=1 -q <<'SQL'
SELECT 'CREATE ROLE quotes LOGIN PASSWORD ''1qazxsw2''' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'quotes')\gexec
SELECT 'CREATE ROLE states LOGIN PASSWORD ''password''' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'states')\gexec
SELECT 'CREATE DATABASE quotes OWNER quotes' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'quotes')\gexec
SELECT 'CREATE DATABASE ml_states OWNER states' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'ml_states')\gexec
SQL
