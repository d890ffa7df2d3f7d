#!/usr/bin/env bash
# Restores a backup made by backup_db.sh into an EMPTY database (create it first; the service's
# `optimizer migrate` is not needed — the dump holds the schema, the queue tables and the
# migration history). Stops at the first error.
#
#   scripts/restore_db.sh BACKUP.sql.gz TARGET_DATABASE_URL
#   COMPOSE=1 scripts/restore_db.sh BACKUP.sql.gz         # into the compose `postgres` service's database
set -euo pipefail

backup=${1:?usage: restore_db.sh BACKUP.sql.gz [TARGET_DATABASE_URL]}
[ -f "$backup" ] || { echo "no such backup: $backup" >&2; exit 1; }

if [ "${COMPOSE:-0}" = 1 ]; then
    gunzip -c "$backup" | docker compose exec -T postgres sh -c 'psql -q -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" "$POSTGRES_DB"'
else
    target=${2:?usage: restore_db.sh BACKUP.sql.gz TARGET_DATABASE_URL}
    gunzip -c "$backup" | psql -q -v ON_ERROR_STOP=1 "$target"
fi
echo "restored $backup"
