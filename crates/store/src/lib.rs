//! Postgres access. Rule: no SQL outside this module tree; one submodule per table family.
//! Functions take a pool, a connection or a transaction, so callers decide the transaction.
//!
//! The crate owns the SQL and its row types and depends on no crate of ours but
//! `optimizer-types`; the application layers above turn rows into decisions.

pub mod alerts;
pub mod bootstrap;
pub mod db;
pub mod feedback;
pub mod hot;
pub mod import;
pub mod keys;
pub mod learning;
pub mod metrics;
pub mod predictor;
pub mod requests;
pub mod retention;
pub mod shadow;
pub mod weights;

pub use db::{Database, NotReady, PoolSettings};
pub use hot::{Hot, HotConn, connection_lost, describe};
