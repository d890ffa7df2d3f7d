//! Who is calling: API keys (Postgres, stored as SHA-256 hashes), the per-process cache that
//! authenticates them, and the bootstrap of `API_KEYS` into the table.
//!
//! A key's secret is `aco_` + 64 hex digits (256 bits from the OS's random source); only its
//! hash and a visible prefix are stored. Every replica looks keys up in the shared table through
//! a cache whose entries live [`KEY_CACHE_TTL`]: a revoked, rotated or expired key is refused by
//! every replica within that time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use crate::providers::ProviderId;
use crate::routing::{Catalog, Strategy};
use crate::store::keys::{self, KeyPolicy, KeyRow};

/// How long a replica trusts what it read about a key (and whether any key exists).
pub const KEY_CACHE_TTL: Duration = Duration::from_millis(500);
/// Cached lookups kept at most (a flood of invented keys must not grow memory).
const MAX_CACHED: usize = 10_000;
/// Characters of the secret shown as its prefix.
const PREFIX_CHARS: usize = 12;

/// An authenticated API key.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKey {
    pub key_id: String,
    pub name: String,
    pub policy: KeyPolicy,
}

impl From<KeyRow> for ApiKey {
    fn from(row: KeyRow) -> Self {
        Self {
            key_id: row.key_id,
            name: row.name,
            policy: row.policy,
        }
    }
}

impl ApiKey {
    /// The providers the key may use (None: any). Unknown names match nothing.
    pub fn allowed_providers(&self) -> Option<Vec<ProviderId>> {
        self.policy
            .allowed_providers
            .as_ref()
            .map(|names| names.iter().filter_map(|n| ProviderId::parse(n)).collect())
    }

    /// The catalog models the key may use (None: any): entries are `provider/model` or a
    /// model id (any provider's).
    pub fn allowed_models(&self, catalog: &Catalog) -> Option<Vec<usize>> {
        let names = self.policy.allowed_models.as_ref()?;
        Some(
            catalog
                .models()
                .iter()
                .enumerate()
                .filter(|(_, m)| {
                    names
                        .iter()
                        .any(|n| *n == m.model || *n == format!("{}/{}", m.provider, m.model))
                })
                .map(|(i, _)| i)
                .collect(),
        )
    }

    /// The strategy a request of this key gets when it names none.
    pub fn default_strategy(&self) -> Option<Strategy> {
        self.policy
            .default_strategy
            .as_deref()
            .and_then(Strategy::parse)
    }
}

/// Who sent a request.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Caller {
    /// No key exists at all: the service is open, and everyone sees everything (as before keys).
    #[default]
    Open,
    /// The admin token: sees everything.
    Admin,
    /// An API key: sees only its own requests, ratings, metrics, idempotency keys and cache.
    Key(Arc<ApiKey>),
}

impl Caller {
    /// The key's id, for ownership (None: open or admin).
    pub fn key_id(&self) -> Option<&str> {
        match self {
            Caller::Key(k) => Some(&k.key_id),
            Caller::Open | Caller::Admin => None,
        }
    }

    pub fn key(&self) -> Option<&ApiKey> {
        match self {
            Caller::Key(k) => Some(k),
            Caller::Open | Caller::Admin => None,
        }
    }
}

/// A freshly made secret: shown to the admin once, then only its hash is kept.
pub struct NewSecret {
    pub secret: SecretString,
    pub prefix: String,
    pub hash: [u8; 32],
}

/// A new random secret.
pub fn new_secret() -> Result<NewSecret, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    let secret = format!("aco_{}", hex::encode(bytes));
    Ok(NewSecret {
        prefix: prefix(&secret),
        hash: hash(&secret),
        secret: SecretString::from(secret),
    })
}

/// The SHA-256 of a presented secret.
pub fn hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// The visible start of a secret.
pub fn prefix(secret: &str) -> String {
    secret.chars().take(PREFIX_CHARS).collect()
}

/// A new key id: `key_` + a ULID.
pub fn new_key_id() -> String {
    format!("key_{}", ulid::Ulid::generate())
}

/// Writes the `API_KEYS` keys into the table (their ids are the configured ids).
pub async fn bootstrap(
    pool: &PgPool,
    api_keys: &[(String, SecretString)],
) -> Result<(), sqlx::Error> {
    for (id, secret) in api_keys {
        let secret = secret.expose_secret();
        keys::upsert_bootstrap(pool, id, &prefix(secret), &hash(secret)).await?;
    }
    Ok(())
}

/// Why a key could not be created or rotated.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("no random source for a key secret: {0}")]
    Random(getrandom::Error),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Creates a key; returns it with its secret (to show once).
pub async fn create_key(
    pool: &PgPool,
    name: &str,
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
    policy: &KeyPolicy,
) -> Result<(KeyRow, SecretString), KeyError> {
    let secret = new_secret().map_err(KeyError::Random)?;
    let key_id = new_key_id();
    let row = keys::create(
        pool,
        &keys::NewKey {
            key_id: &key_id,
            name,
            prefix: &secret.prefix,
            secret_hash: &secret.hash,
            expires_at,
            policy,
        },
    )
    .await?;
    Ok((row, secret.secret))
}

/// Gives a live key a new secret (returned, to show once). None: no such live key.
pub async fn rotate_key(
    pool: &PgPool,
    key_id: &str,
) -> Result<Option<(KeyRow, SecretString)>, KeyError> {
    let secret = new_secret().map_err(KeyError::Random)?;
    Ok(keys::rotate(pool, key_id, &secret.prefix, &secret.hash)
        .await?
        .map(|row| (row, secret.secret)))
}

type Lookup = (Instant, Option<Arc<ApiKey>>);

/// The per-process view of the key table, refreshed every [`KEY_CACHE_TTL`].
pub struct KeyRing {
    pool: PgPool,
    /// `API_KEYS`, written into the table before the first lookup.
    bootstrap: Vec<(String, SecretString)>,
    bootstrapped: AtomicBool,
    by_hash: Mutex<HashMap<[u8; 32], Lookup>>,
    any_created: Mutex<Option<(Instant, bool)>>,
}

impl KeyRing {
    pub fn new(pool: PgPool, bootstrap: Vec<(String, SecretString)>) -> Self {
        Self {
            pool,
            bootstrap,
            bootstrapped: AtomicBool::new(false),
            by_hash: Mutex::default(),
            any_created: Mutex::default(),
        }
    }

    /// Writes `API_KEYS` into the table once (before any lookup can miss them).
    async fn ensure_bootstrapped(&self) -> Result<(), sqlx::Error> {
        if self.bootstrap.is_empty() || self.bootstrapped.load(Ordering::Acquire) {
            return Ok(());
        }
        bootstrap(&self.pool, &self.bootstrap).await?;
        self.bootstrapped.store(true, Ordering::Release);
        Ok(())
    }

    /// The live key with this secret (None: unknown, revoked or expired).
    pub async fn authenticate(&self, secret: &str) -> Result<Option<Arc<ApiKey>>, sqlx::Error> {
        self.ensure_bootstrapped().await?;
        let hash = hash(secret);
        if let Ok(cache) = self.by_hash.lock()
            && let Some((at, key)) = cache.get(&hash)
            && at.elapsed() < KEY_CACHE_TTL
        {
            return Ok(key.clone());
        }
        let key = keys::authenticate(&self.pool, &hash)
            .await?
            .map(|row| Arc::new(ApiKey::from(row)));
        if let Ok(mut cache) = self.by_hash.lock() {
            if cache.len() >= MAX_CACHED {
                cache.retain(|_, (at, _)| at.elapsed() < KEY_CACHE_TTL);
                if cache.len() >= MAX_CACHED {
                    cache.clear();
                }
            }
            cache.insert(hash, (Instant::now(), key.clone()));
        }
        Ok(key)
    }

    /// Forgets everything cached: this process's admin API changed a key (other replicas see
    /// the change when their entries expire).
    pub fn invalidate(&self) {
        if let Ok(mut cache) = self.by_hash.lock() {
            cache.clear();
        }
        if let Ok(mut any) = self.any_created.lock() {
            *any = None;
        }
    }

    /// Whether any key was ever created (then every client route needs a live one; before, the
    /// service is open — a fresh install — whatever key a client sends).
    pub async fn any_created(&self) -> Result<bool, sqlx::Error> {
        // Configured keys always count, even before they reach the table.
        if !self.bootstrap.is_empty() {
            return Ok(true);
        }
        if let Ok(cached) = self.any_created.lock()
            && let Some((at, any)) = *cached
            && at.elapsed() < KEY_CACHE_TTL
        {
            return Ok(any);
        }
        let any = keys::any_created(&self.pool).await?;
        if let Ok(mut cached) = self.any_created.lock() {
            *cached = Some((Instant::now(), any));
        }
        Ok(any)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_random_and_only_their_hash_identifies_them() {
        let a = new_secret().unwrap();
        let b = new_secret().unwrap();
        assert_ne!(a.secret.expose_secret(), b.secret.expose_secret());
        assert!(a.secret.expose_secret().starts_with("aco_"));
        assert_eq!(a.secret.expose_secret().len(), 4 + 64);
        assert_eq!(a.hash, hash(a.secret.expose_secret()));
        assert_ne!(a.hash, b.hash);
        assert!(a.secret.expose_secret().starts_with(&a.prefix));
        assert_eq!(a.prefix.len(), PREFIX_CHARS);
    }
}
