//! Connections kept between the statements of the hot path (a request's insert, its claim, its
//! finish, the notifications), so that they do not go back to the pool after each one.
//!
//! sqlx's pool pings every connection it takes back: one more round trip to PostgreSQL per
//! statement, and the connection is unavailable until the answer arrives. It cannot be turned
//! off (sqlx 0.9). At 50 connections in `serve` those pings cost about a sixth of PostgreSQL's
//! CPU per request and as much throughput (docs/PERFORMANCE.md item 15).
//!
//! [`Hot`] keeps up to half as many connections as the pool, opened beside the pool's (borrowed
//! from it, they starved everything else: its listeners hold pool connections for good), in a
//! stack (deadpool), most recently used first:
//! - a connection used within the last second is handed out as it is; one idle for longer is
//!   pinged first (what the pool does on acquire, see `Database::connect_lazy`);
//! - when all of them are busy, a statement takes a connection from the pool as before, so the
//!   hot path never waits for one of its own;
//! - a connection unused for a minute is closed;
//! - a connection whose statement failed other than by a database error (network, protocol),
//!   or whose statement was cancelled, is closed instead of being handed out again.

use std::sync::{Arc, Once};
use std::time::Duration;

use deadpool::managed::{self, Metrics, Object, PoolError, RecycleError, RecycleResult, Timeouts};
use sqlx::pool::PoolConnection;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, PgPool, Postgres};

/// `e` in plain words for a log line or an operator: the server's own message for a database
/// error (sqlx's text repeats it and adds the line of PostgreSQL's C source), else sqlx's.
pub fn describe(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(d) => d.message().to_owned(),
        other => other.to_string(),
    }
}

/// Whether `e` says the connection to the server is gone (network, TLS, protocol, or the
/// server ending it: SQLSTATE class 08, or 57P01–57P03 at a shutdown or restart) — the
/// statement's outcome is unknown to us, and the next one may well succeed.
pub fn connection_lost(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(d) => d
            .code()
            .is_some_and(|c| c.starts_with("08") || matches!(&*c, "57P01" | "57P02" | "57P03")),
        _ => false,
    }
}

/// A connection idle for longer than this is pinged before use (kept or pooled: see
/// `Database::connect_lazy`).
pub(crate) const PING_AFTER_IDLE: Duration = Duration::from_secs(1);
/// A kept connection unused for longer than this is closed.
const CLOSE_AFTER_IDLE: Duration = Duration::from_secs(60);

/// A kept connection.
#[derive(Debug)]
struct Kept {
    conn: PgConnection,
    /// Its last statement did not end cleanly: close it instead of reusing it.
    doubt: bool,
}

/// Opens the stack's connections with the pool's settings.
#[derive(Debug)]
struct Opener {
    options: PgConnectOptions,
    /// How long opening one may take: the pool's acquire timeout.
    timeout: Duration,
}

impl managed::Manager for Opener {
    type Type = Kept;
    type Error = sqlx::Error;

    async fn create(&self) -> Result<Kept, sqlx::Error> {
        let conn = tokio::time::timeout(self.timeout, PgConnection::connect_with(&self.options))
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)??;
        Ok(Kept { conn, doubt: false })
    }

    async fn recycle(&self, kept: &mut Kept, metrics: &Metrics) -> RecycleResult<sqlx::Error> {
        if kept.doubt {
            // Dropped (closed) here.
            return Err(RecycleError::message(
                "its last statement did not end cleanly",
            ));
        }
        if metrics.last_used() > PING_AFTER_IDLE {
            kept.conn.ping().await.map_err(RecycleError::Backend)?;
        }
        Ok(())
    }
}

/// The hot path's connections (see the module's documentation). Clones share them.
#[derive(Clone)]
pub struct Hot {
    pool: PgPool,
    kept: managed::Pool<Opener>,
    reaper: Arc<Once>,
}

impl std::fmt::Debug for Hot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hot")
            .field("kept", &self.kept.status())
            .finish()
    }
}

impl Hot {
    /// Keeps up to half as many connections as `pool` (at least one), opened as it opens its.
    pub fn new(pool: PgPool) -> Self {
        let size = (pool.options().get_max_connections() as usize / 2).max(1);
        let opener = Opener {
            options: (*pool.connect_options()).clone(),
            timeout: pool.options().get_acquire_timeout(),
        };
        let kept = managed::Pool::builder(opener)
            .max_size(size)
            .queue_mode(managed::QueueMode::Lifo)
            .build();
        Self {
            pool,
            // Only fails when timeouts are configured without a runtime; none are.
            #[allow(clippy::expect_used)]
            kept: kept.expect("a pool without timeouts"),
            reaper: Arc::new(Once::new()),
        }
    }

    /// The pool: for everything else, and for the hot path while its own connections are busy.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// A connection for one statement: a kept one when one is free, otherwise one from the pool.
    /// Hand it back with [`HotConn::done`].
    pub async fn conn(&self) -> Result<HotConn, sqlx::Error> {
        self.reaper.call_once(|| self.spawn_reaper());
        let now = Timeouts {
            wait: Some(Duration::ZERO),
            ..Timeouts::new()
        };
        match self.kept.timeout_get(&now).await {
            Ok(kept) => Ok(HotConn {
                held: Held::Kept(kept),
                clean: false,
            }),
            Err(PoolError::Backend(e)) => Err(e),
            // All kept connections are busy (or the stack is closed): one from the pool.
            Err(_) => Ok(HotConn {
                held: Held::Plain(self.pool.acquire().await?),
                clean: false,
            }),
        }
    }

    /// Runs one statement, `f`, on a [`Hot::conn`] connection and hands it back.
    pub async fn run<T>(
        &self,
        f: impl AsyncFnOnce(&mut PgConnection) -> Result<T, sqlx::Error>,
    ) -> Result<T, sqlx::Error> {
        let mut conn = self.conn().await?;
        let result = f(&mut conn).await;
        conn.done(&result);
        result
    }

    /// Closes the kept connections and keeps no more (those in use close when handed back).
    pub async fn close(&self) {
        let idle = self.kept.retain(|_, _| false).removed;
        self.kept.close();
        close_all(idle).await;
    }

    /// Every few seconds, closes the connections unused for [`CLOSE_AFTER_IDLE`]; ends with the
    /// last clone of this `Hot`.
    fn spawn_reaper(&self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let kept = self.kept.weak();
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(CLOSE_AFTER_IDLE / 10).await;
                let Some(kept) = kept.upgrade() else { return };
                let unused = kept
                    .retain(|k, metrics| !k.doubt && metrics.last_used() <= CLOSE_AFTER_IDLE)
                    .removed;
                drop(kept);
                close_all(unused).await;
            }
        });
    }
}

/// Says goodbye to the server on each connection (dropped, it would log an unexpected EOF).
async fn close_all(connections: Vec<Kept>) {
    for kept in connections {
        // Closing is a courtesy: a connection that cannot say goodbye is gone anyway.
        let _ = kept.conn.close().await;
    }
}

/// A connection of [`Hot::conn`]; use it as a `&mut PgConnection` (`&mut *conn`).
pub struct HotConn {
    held: Held,
    /// Set by `done`: the statement ended with the connection in a known state.
    clean: bool,
}

enum Held {
    Kept(Object<Opener>),
    Plain(PoolConnection<Postgres>),
}

impl HotConn {
    /// Hands the connection back after its statement ended with `result`: kept for the next
    /// statement, unless the statement lost the connection or broke the protocol (then it is
    /// closed; one from the pool goes back to the pool, which checks it). Dropped without this
    /// (a cancelled statement), likewise.
    pub fn done<T>(mut self, result: &Result<T, sqlx::Error>) {
        self.clean = match result {
            Ok(_) => true,
            Err(e) => !connection_lost(e),
        };
    }
}

impl std::ops::Deref for HotConn {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        match &self.held {
            Held::Kept(kept) => &kept.conn,
            Held::Plain(conn) => conn,
        }
    }
}

impl std::ops::DerefMut for HotConn {
    fn deref_mut(&mut self) -> &mut PgConnection {
        match &mut self.held {
            Held::Kept(kept) => &mut kept.conn,
            Held::Plain(conn) => conn,
        }
    }
}

impl Drop for HotConn {
    fn drop(&mut self) {
        // A plain connection goes back to the pool as always; a kept one in doubt is marked,
        // and the stack closes it instead of handing it out again.
        if let (false, Held::Kept(kept)) = (self.clean, &mut self.held) {
            kept.doubt = true;
        }
    }
}
