#!/usr/bin/env bash
# Backs up the optimizer database: pg_dump | gzip into BACKUP_DIR/optimizer_YYYYmmdd_HHMMSS.sql.gz,
# then deletes backups older than RETENTION_DAYS (30). Written to a temporary name and renamed,
# so a failed dump never looks like a backup.
#
#   scripts/backup_db.sh [BACKUP_DIR]                 # dumps $DATABASE_URL (pg_dump on this host)
#   COMPOSE=1 scripts/backup_db.sh [BACKUP_DIR]       # dumps the compose `postgres` service
#
# Daily at 03:00 (crontab -e):
#   0 3 * * * cd /opt/ai-cost-optimizer && COMPOSE=1 scripts/backup_db.sh /var/backups/optimizer >> /var/log/optimizer-backup.log 2>&1
set -euo pipefail
cd "$(dirname "$0")/.."

BACKUP_DIR=${1:-${BACKUP_DIR:-./backups}}
RETENTION_DAYS=${RETENTION_DAYS:-30}
mkdir -p "$BACKUP_DIR"
stamp=$(date -u +%Y%m%d_%H%M%S)
out="$BACKUP_DIR/optimizer_${stamp}.sql.gz"
tmp="$out.partial"
trap 'rm -f "$tmp"' EXIT

if [ "${COMPOSE:-0}" = 1 ]; then
    # Credentials come from the container's own environment (POSTGRES_USER/POSTGRES_DB).
    docker compose exec -T postgres sh -c 'pg_dump --no-owner --no-privileges -U "$POSTGRES_USER" "$POSTGRES_DB"' \
        | gzip -9 > "$tmp"
else
    : "${DATABASE_URL:?set DATABASE_URL (or COMPOSE=1 to dump the compose postgres service)}"
    pg_dump --no-owner --no-privileges "$DATABASE_URL" | gzip -9 > "$tmp"
fi
mv "$tmp" "$out"
echo "backup written: $out ($(du -h "$out" | cut -f1))"

find "$BACKUP_DIR" -name 'optimizer_*.sql.gz' -type f -mtime +"$RETENTION_DAYS" -print -delete \
    | sed 's/^/deleted (older than '"$RETENTION_DAYS"' days): /'
