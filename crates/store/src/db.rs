//! The connection pool, database creation, migrations and the readiness check.

use apalis_postgres::PostgresStorage;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Connection, PgConnection};

use crate::hot::{Hot, PING_AFTER_IDLE};

/// The application's own migrations (history in `public._sqlx_migrations`). The queue's tables
/// come from apalis-postgres, whose history lives apart in `apalis._sqlx_migrations`.
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations");

/// Why the database cannot serve yet. The text is safe to return to a caller.
#[derive(Debug, thiserror::Error)]
pub enum NotReady {
    #[error("database unreachable")]
    Unreachable(#[source] sqlx::Error),
    #[error("database schema not migrated: {0}")]
    NotMigrated(String),
}

/// Errors of setting the database up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("cannot create database {database:?}: {source}")]
    Create {
        database: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot connect to migrate: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("queue migrations failed: {0}")]
    QueueMigrations(#[source] apalis_postgres::Error),
    #[error("migrations failed: {0}")]
    Migrations(#[source] sqlx::migrate::MigrateError),
}

/// The store's section of the configuration: where the database is and how big the pool.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub options: PgConnectOptions,
    pub max_connections: u32,
    /// How long a query waits for a connection.
    pub acquire_timeout: std::time::Duration,
    /// Longest a statement may run before Postgres cancels it (None: no limit). Migrations run
    /// on a connection of their own without it.
    pub statement_timeout: Option<std::time::Duration>,
}

/// A pool plus what it needs to set itself up.
#[derive(Clone, Debug)]
pub struct Database {
    pub pool: PgPool,
    /// The hot path's connections, kept beside `pool`'s (see [`Hot`]).
    pub hot: Hot,
    options: PgConnectOptions,
}

impl Database {
    /// A lazy pool: nothing connects until first use, so a process can start (and answer
    /// `/health`) while Postgres is still coming up.
    pub fn connect_lazy(settings: &PoolSettings) -> Self {
        let options = settings
            .options
            .clone()
            .application_name("ai-cost-optimizer");
        let limited = match settings.statement_timeout {
            Some(t) => options
                .clone()
                .options([("statement_timeout", t.as_millis().to_string())]),
            None => options.clone(),
        };
        // sqlx pings every connection it hands out by default: one more round trip per
        // statement. A connection used within the last second is live as far as a ping could
        // tell; one idle for longer (e.g. across a server restart) is still checked first.
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(settings.acquire_timeout)
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for > PING_AFTER_IDLE {
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            })
            .connect_lazy_with(limited);
        Self {
            hot: Hot::new(pool.clone()),
            pool,
            options,
        }
    }

    /// Closes the hot path's kept connections, then the pool: waits for every connection it
    /// handed out to come back, and closes them all.
    pub async fn close(&self) {
        self.hot.close().await;
        self.pool.close().await;
    }

    /// Creates the configured database when it does not exist. Connects to the server's
    /// `postgres` database to do so; a concurrent creator winning the race is fine.
    pub async fn create_if_missing(&self) -> Result<bool, SetupError> {
        let Some(name) = self.options.get_database().map(str::to_owned) else {
            return Ok(false);
        };
        let create_err = |source| SetupError::Create {
            database: name.clone(),
            source,
        };
        let mut admin = PgConnection::connect_with(&self.options.clone().database("postgres"))
            .await
            .map_err(create_err)?;
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                .bind(&name)
                .fetch_one(&mut admin)
                .await
                .map_err(create_err)?;
        if exists {
            return Ok(false);
        }
        let sql = format!("CREATE DATABASE {}", quote_ident(&name));
        let created = match sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut admin)
            .await
        {
            Ok(_) => true,
            // 42P04 duplicate_database: another process created it meanwhile.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => false,
            Err(e) => return Err(create_err(e)),
        };
        let _ = admin.close().await;
        if created {
            tracing::info!(database = %name, "created database");
        }
        Ok(created)
    }

    /// Drops the configured database (closing this pool and any other session on it first).
    /// For scratch databases (`optimizer eval`); never called on the service's own database.
    pub async fn drop_database(&self) -> Result<(), sqlx::Error> {
        let Some(name) = self.options.get_database().map(str::to_owned) else {
            return Ok(());
        };
        self.close().await;
        let mut admin =
            PgConnection::connect_with(&self.options.clone().database("postgres")).await?;
        let sql = format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            quote_ident(&name)
        );
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut admin)
            .await?;
        let _ = admin.close().await;
        Ok(())
    }

    /// Applies the queue's and the application's migrations. Both take an advisory lock, so
    /// several processes starting at once are safe; re-running is a no-op.
    ///
    /// They run on a pool of their own, without the statement timeout: a migration may
    /// legitimately take long, and so may waiting for another process's migration lock.
    pub async fn migrate(&self) -> Result<(), SetupError> {
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .connect_with(self.options.clone())
            .await
            .map_err(SetupError::Connect)?;
        let result = async {
            PostgresStorage::setup(&pool)
                .await
                .map_err(SetupError::QueueMigrations)?;
            MIGRATOR.run(&pool).await.map_err(SetupError::Migrations)
        }
        .await;
        pool.close().await;
        result
    }

    /// `create_if_missing` then `migrate`.
    pub async fn setup(&self) -> Result<(), SetupError> {
        self.create_if_missing().await?;
        self.migrate().await
    }

    /// Ready means: reachable, and both migration histories at the version this binary ships.
    /// One round trip.
    pub async fn check_ready(&self) -> Result<(), NotReady> {
        let app_latest = latest_version(&MIGRATOR);
        let queue_latest = latest_version(&PostgresStorage::migrations());
        let (app, queue): (Option<i64>, Option<i64>) = sqlx::query_as(
            "SELECT (SELECT max(version) FROM public._sqlx_migrations WHERE success),
                    (SELECT max(version) FROM apalis._sqlx_migrations WHERE success)",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(|e| classify(e, app_latest))?;
        check_version("application", app, app_latest)?;
        check_version("queue", queue, queue_latest)?;
        Ok(())
    }
}

fn latest_version(migrator: &Migrator) -> i64 {
    migrator.iter().map(|m| m.version).max().unwrap_or_default()
}

fn check_version(which: &str, have: Option<i64>, want: i64) -> Result<(), NotReady> {
    match have {
        Some(v) if v >= want => Ok(()),
        Some(v) => Err(NotReady::NotMigrated(format!(
            "{which} migrations at {v}, this build needs {want}"
        ))),
        None => Err(NotReady::NotMigrated(format!(
            "{which} migrations have not run"
        ))),
    }
}

/// A missing migrations table or schema surfaces as 42P01 undefined_table or 3F000
/// invalid_schema_name: the database is up but not migrated.
fn classify(e: sqlx::Error, want: i64) -> NotReady {
    match &e {
        sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("42P01" | "3F000")) => {
            NotReady::NotMigrated(format!("migrations have not run (need {want})"))
        }
        _ => NotReady::Unreachable(e),
    }
}

/// Quotes an SQL identifier (database names come from configuration).
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("optimizer"), "\"optimizer\"");
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
    }

    #[test]
    fn embedded_migrations_are_present() {
        assert!(latest_version(&MIGRATOR) > 0);
        assert!(latest_version(&PostgresStorage::migrations()) > 0);
    }
}
