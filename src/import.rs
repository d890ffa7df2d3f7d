//! `optimizer import-sqlite PATH`: bring the earlier Python version's SQLite data
//! (`requests`, `routing_metrics`, `response_cache`) into Postgres.
//!
//! We do not have that schema, so columns are **mapped by name**, with the aliases below; every
//! other column is reported as skipped. Rows are inserted with `ON CONFLICT DO NOTHING` on their
//! keys, so importing twice adds nothing. `--dry-run` runs the same import inside a transaction
//! and rolls it back: exact counts, nothing written.
//!
//! | table | column we fill | accepted source names | if missing |
//! |---|---|---|---|
//! | requests | request_id | request_id, id | row skipped |
//! | | created_at | created_at, timestamp | now |
//! | | status | status (`failed`/`error` → failed, anything else → succeeded) | succeeded, or failed when `error` is set |
//! | | prompt (per STORE_PROMPTS), system, response, error | prompt; system, system_prompt; response, completion, output; error | empty |
//! | | provider, model, user_id, session_id | provider, selected_provider; model, selected_model; user_id; session_id | empty |
//! | routing_metrics | request_id | request_id, id | row skipped |
//! | | timestamp | timestamp, created_at | now |
//! | | prompt_pattern, complexity_score, strategy | prompt_pattern, pattern; complexity_score, complexity; strategy | `other`, 0, `imported` |
//! | | selected_provider, selected_model | selected_provider, provider; selected_model, model | `unknown` |
//! | | reason, confidence, input_tokens, output_tokens | reason; confidence; input_tokens, prompt_tokens; output_tokens, completion_tokens | empty |
//! | | cost_usd, baseline_cost_usd, latency_ms | cost_usd, cost, estimated_cost; baseline_cost_usd, baseline_cost; latency_ms, latency | empty |
//! | | cache_hit, fallback_count, status | cache_hit, cached; fallback_count; status | false, 0, succeeded |
//! | response_cache | cache_key | cache_key, key, prompt_hash, hash | row skipped |
//! | | response | response, completion | row skipped |
//! | | provider, model, input/output tokens, cost_usd | as above | `unknown`, 0 |
//! | | created_at, expires_at, hit_count | created_at, timestamp; expires_at; hit_count, hits | now, none, 0 |
//!
//! A routing_metrics row whose request is not in `requests` gets a minimal finished request
//! (so ratings can reference it); the report counts those. Times may be ISO-8601 text
//! (`2025-11-08 12:00:00`, `2025-11-08T12:00:00Z`) or Unix seconds/milliseconds.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use rusqlite::types::Value as Sql;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use crate::config::StorePrompts;
use crate::store::import as store;
use crate::types::RequestStatus;

/// What happened to one table.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TableReport {
    pub found: bool,
    pub rows: u64,
    pub inserted: u64,
    pub already_present: u64,
    /// Rows skipped, by reason.
    pub skipped: BTreeMap<String, u64>,
    /// Our column ← the source column that filled it.
    pub mapped: BTreeMap<String, String>,
    /// Source columns nothing of ours matches.
    pub unmapped_columns: Vec<String>,
}

/// The whole import.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ImportReport {
    pub dry_run: bool,
    pub tables: BTreeMap<String, TableReport>,
    /// Minimal requests created for routing_metrics rows without one.
    pub stub_requests: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read SQLite database {path}: {source}")]
    Sqlite {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error(transparent)]
    Postgres(#[from] sqlx::Error),
}

type Row = HashMap<String, Sql>;

const BATCH: i64 = 1000;

/// Imports `path` into `pool`. `progress` is called every 1,000 rows with (table, rows so far).
pub async fn import_sqlite(
    path: &Path,
    pool: &PgPool,
    store_prompts: StorePrompts,
    dry_run: bool,
    progress: &dyn Fn(&str, u64),
) -> Result<ImportReport, ImportError> {
    let sqlite_err = |source| ImportError::Sqlite {
        path: path.display().to_string(),
        source,
    };
    let db = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sqlite_err)?;
    let mut report = ImportReport {
        dry_run,
        ..Default::default()
    };
    let mut tx = pool.begin().await?;
    for table in ["requests", "routing_metrics", "response_cache"] {
        let mut t = TableReport::default();
        let columns = columns(&db, table).map_err(sqlite_err)?;
        if columns.is_empty() {
            report.tables.insert(table.to_owned(), t);
            continue;
        }
        t.found = true;
        let spec = spec(table);
        for (target, aliases) in spec {
            if let Some(source) = aliases.iter().find(|a| columns.contains(&a.to_string())) {
                t.mapped.insert((*target).to_owned(), (*source).to_owned());
            }
        }
        t.unmapped_columns = columns
            .iter()
            .filter(|c| {
                !spec
                    .iter()
                    .any(|(_, aliases)| aliases.contains(&c.as_str()))
            })
            .cloned()
            .collect();
        let mut after: i64 = i64::MIN;
        loop {
            let rows = batch(&db, table, after).map_err(sqlite_err)?;
            let Some(last) = rows.last().map(|(rowid, _)| *rowid) else {
                break;
            };
            after = last;
            for (_, row) in rows {
                t.rows += 1;
                let get = |target: &str| {
                    t.mapped
                        .get(target)
                        .and_then(|source| row.get(source))
                        .filter(|v| !matches!(v, Sql::Null))
                };
                let outcome = match table {
                    "requests" => import_request(&mut tx, &get, store_prompts).await?,
                    "routing_metrics" => {
                        let (outcome, stub) = import_metrics(&mut tx, &get).await?;
                        report.stub_requests += u64::from(stub);
                        outcome
                    }
                    _ => import_cache(&mut tx, &get).await?,
                };
                match outcome {
                    Outcome::Inserted => t.inserted += 1,
                    Outcome::Present => t.already_present += 1,
                    Outcome::Skipped(why) => *t.skipped.entry(why.to_owned()).or_default() += 1,
                }
                if t.rows % 1000 == 0 {
                    progress(table, t.rows);
                }
            }
        }
        progress(table, t.rows);
        report.tables.insert(table.to_owned(), t);
    }
    if dry_run {
        tx.rollback().await?;
    } else {
        tx.commit().await?;
    }
    Ok(report)
}

enum Outcome {
    Inserted,
    Present,
    Skipped(&'static str),
}

fn spec(table: &str) -> &'static [(&'static str, &'static [&'static str])] {
    match table {
        "requests" => &[
            ("request_id", &["request_id", "id"]),
            ("created_at", &["created_at", "timestamp"]),
            ("status", &["status"]),
            ("prompt", &["prompt"]),
            ("system", &["system", "system_prompt"]),
            ("response", &["response", "completion", "output"]),
            ("error", &["error"]),
            ("provider", &["provider", "selected_provider"]),
            ("model", &["model", "selected_model"]),
            ("user_id", &["user_id"]),
            ("session_id", &["session_id"]),
        ],
        "routing_metrics" => &[
            ("request_id", &["request_id", "id"]),
            ("timestamp", &["timestamp", "created_at"]),
            ("prompt_pattern", &["prompt_pattern", "pattern"]),
            ("complexity_score", &["complexity_score", "complexity"]),
            ("strategy", &["strategy"]),
            ("selected_provider", &["selected_provider", "provider"]),
            ("selected_model", &["selected_model", "model"]),
            ("reason", &["reason"]),
            ("confidence", &["confidence"]),
            ("input_tokens", &["input_tokens", "prompt_tokens"]),
            ("output_tokens", &["output_tokens", "completion_tokens"]),
            ("cost_usd", &["cost_usd", "cost", "estimated_cost"]),
            ("baseline_cost_usd", &["baseline_cost_usd", "baseline_cost"]),
            ("latency_ms", &["latency_ms", "latency"]),
            ("cache_hit", &["cache_hit", "cached"]),
            ("fallback_count", &["fallback_count"]),
            ("status", &["status"]),
        ],
        _ => &[
            ("cache_key", &["cache_key", "key", "prompt_hash", "hash"]),
            ("response", &["response", "completion"]),
            ("provider", &["provider"]),
            ("model", &["model"]),
            ("input_tokens", &["input_tokens", "prompt_tokens"]),
            ("output_tokens", &["output_tokens", "completion_tokens"]),
            ("cost_usd", &["cost_usd", "cost"]),
            ("created_at", &["created_at", "timestamp"]),
            ("expires_at", &["expires_at"]),
            ("hit_count", &["hit_count", "hits"]),
        ],
    }
}

fn columns(db: &rusqlite::Connection, table: &str) -> rusqlite::Result<Vec<String>> {
    let mut stmt = db.prepare("SELECT name FROM pragma_table_info(?1)")?;
    let names = stmt
        .query_map([table], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(names)
}

fn batch(db: &rusqlite::Connection, table: &str, after: i64) -> rusqlite::Result<Vec<(i64, Row)>> {
    // `table` is one of three literals; identifiers cannot be bound.
    let mut stmt = db.prepare(&format!(
        "SELECT rowid AS __rowid, * FROM \"{table}\" WHERE rowid > ?1 ORDER BY rowid LIMIT {BATCH}"
    ))?;
    let names: Vec<String> = stmt
        .column_names()
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    let rows = stmt.query_map([after], |r| {
        let rowid: i64 = r.get(0)?;
        let mut row = Row::new();
        for (i, name) in names.iter().enumerate().skip(1) {
            row.insert(name.clone(), r.get::<_, Sql>(i)?);
        }
        Ok((rowid, row))
    })?;
    rows.collect()
}

fn text(v: Option<&Sql>) -> Option<String> {
    match v? {
        Sql::Text(s) => Some(s.clone()),
        Sql::Integer(i) => Some(i.to_string()),
        Sql::Real(f) => Some(f.to_string()),
        Sql::Blob(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Sql::Null => None,
    }
}

fn float(v: Option<&Sql>) -> Option<f64> {
    match v? {
        Sql::Integer(i) => Some(*i as f64),
        Sql::Real(f) => Some(*f),
        Sql::Text(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn int(v: Option<&Sql>) -> Option<i64> {
    float(v).map(|f| f as i64)
}

fn boolean(v: Option<&Sql>) -> Option<bool> {
    match v? {
        Sql::Integer(i) => Some(*i != 0),
        Sql::Real(f) => Some(*f != 0.0),
        Sql::Text(s) => match s.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "t" | "yes" => Some(true),
            "0" | "false" | "f" | "no" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// ISO-8601-ish text or Unix seconds/milliseconds.
pub fn time(v: Option<&Sql>) -> Option<DateTime<Utc>> {
    match v? {
        Sql::Integer(_) | Sql::Real(_) => {
            let f = float(v)?;
            let secs = if f > 1e12 { f / 1000.0 } else { f };
            Utc.timestamp_opt(secs.trunc() as i64, ((secs.fract()) * 1e9) as u32)
                .single()
        }
        Sql::Text(s) => {
            let s = s.trim();
            if let Ok(t) = DateTime::parse_from_rfc3339(s) {
                return Some(t.with_timezone(&Utc));
            }
            [
                "%Y-%m-%d %H:%M:%S%.f",
                "%Y-%m-%dT%H:%M:%S%.f",
                "%Y-%m-%d %H:%M:%S",
            ]
            .iter()
            .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
            .map(|n| n.and_utc())
        }
        _ => None,
    }
}

/// The Python version's status words (its own vocabulary, not ours) mapped onto ours.
fn status_of(v: Option<&Sql>, has_error: bool) -> RequestStatus {
    let failed = RequestStatus::Failed.as_str();
    match text(v).map(|s| s.to_ascii_lowercase()).as_deref() {
        Some(s) if s == failed || s == "error" || s == "failure" => RequestStatus::Failed,
        Some(_) => RequestStatus::Succeeded,
        None if has_error => RequestStatus::Failed,
        None => RequestStatus::Succeeded,
    }
}

async fn import_request<'a>(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    get: &dyn Fn(&str) -> Option<&'a Sql>,
    store_prompts: StorePrompts,
) -> Result<Outcome, sqlx::Error> {
    let Some(request_id) = text(get("request_id")).filter(|s| !s.trim().is_empty()) else {
        return Ok(Outcome::Skipped("no request_id"));
    };
    let prompt = text(get("prompt"));
    let error = text(get("error"));
    let row = store::ImportedRequest {
        request_id,
        created_at: time(get("created_at")).unwrap_or_else(Utc::now),
        status: status_of(get("status"), error.is_some()),
        prompt_hash: prompt
            .as_ref()
            .map(|p| hex::encode(Sha256::digest(p.as_bytes()))),
        prompt_chars: prompt.as_ref().map_or(0, |p| p.chars().count() as i32),
        prompt: prompt.filter(|_| store_prompts == StorePrompts::Full),
        system: text(get("system")),
        response: text(get("response")),
        error,
        provider: text(get("provider")),
        model: text(get("model")),
        user_id: text(get("user_id")),
        session_id: text(get("session_id")),
    };
    Ok(if store::insert_request(tx, &row).await? {
        Outcome::Inserted
    } else {
        Outcome::Present
    })
}

async fn import_metrics<'a>(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    get: &dyn Fn(&str) -> Option<&'a Sql>,
) -> Result<(Outcome, bool), sqlx::Error> {
    let Some(request_id) = text(get("request_id")).filter(|s| !s.trim().is_empty()) else {
        return Ok((Outcome::Skipped("no request_id"), false));
    };
    let status = status_of(get("status"), false);
    let row = store::ImportedMetrics {
        timestamp: time(get("timestamp")).unwrap_or_else(Utc::now),
        prompt_pattern: text(get("prompt_pattern")).unwrap_or_else(|| "other".into()),
        complexity_score: float(get("complexity_score"))
            .unwrap_or(0.0)
            .clamp(0.0, 1.0) as f32,
        strategy: text(get("strategy")).unwrap_or_else(|| "imported".into()),
        selected_provider: text(get("selected_provider")).unwrap_or_else(|| "unknown".into()),
        selected_model: text(get("selected_model")).unwrap_or_else(|| "unknown".into()),
        reason: text(get("reason")),
        confidence: text(get("confidence")),
        input_tokens: int(get("input_tokens")).map(|v| v.clamp(0, i64::from(i32::MAX)) as i32),
        output_tokens: int(get("output_tokens")).map(|v| v.clamp(0, i64::from(i32::MAX)) as i32),
        cost_usd: float(get("cost_usd")).filter(|c| *c >= 0.0),
        baseline_cost_usd: float(get("baseline_cost_usd")).filter(|c| *c >= 0.0),
        latency_ms: float(get("latency_ms")).filter(|c| *c >= 0.0),
        cache_hit: boolean(get("cache_hit")).unwrap_or(false),
        fallback_count: int(get("fallback_count")).unwrap_or(0).clamp(0, 1000) as i32,
        status,
        request_id,
    };
    let stub = store::ensure_request(tx, &row).await?;
    let outcome = if store::insert_metrics(tx, &row).await? {
        Outcome::Inserted
    } else {
        Outcome::Present
    };
    Ok((outcome, stub))
}

async fn import_cache<'a>(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    get: &dyn Fn(&str) -> Option<&'a Sql>,
) -> Result<Outcome, sqlx::Error> {
    let Some(cache_key) = text(get("cache_key")).filter(|s| !s.trim().is_empty()) else {
        return Ok(Outcome::Skipped("no cache key"));
    };
    let Some(response) = text(get("response")) else {
        return Ok(Outcome::Skipped("no response"));
    };
    let row = store::ImportedCache {
        cache_key,
        response,
        provider: text(get("provider")).unwrap_or_else(|| "unknown".into()),
        model: text(get("model")).unwrap_or_else(|| "unknown".into()),
        input_tokens: int(get("input_tokens"))
            .unwrap_or(0)
            .clamp(0, i64::from(i32::MAX)) as i32,
        output_tokens: int(get("output_tokens"))
            .unwrap_or(0)
            .clamp(0, i64::from(i32::MAX)) as i32,
        cost_usd: float(get("cost_usd")).unwrap_or(0.0).max(0.0),
        created_at: time(get("created_at")).unwrap_or_else(Utc::now),
        expires_at: time(get("expires_at")),
        hit_count: int(get("hit_count")).unwrap_or(0).max(0),
    };
    Ok(if store::insert_cache(tx, &row).await? {
        Outcome::Inserted
    } else {
        Outcome::Present
    })
}

/// The report as a readable table.
pub fn render(report: &ImportReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "SQLite import{}:",
        if report.dry_run {
            " (dry run: nothing written)"
        } else {
            ""
        }
    );
    for (table, t) in &report.tables {
        if !t.found {
            let _ = writeln!(out, "  {table}: not in the SQLite file");
            continue;
        }
        let _ = writeln!(
            out,
            "  {table}: {} rows, {} {}, {} already present",
            t.rows,
            t.inserted,
            if report.dry_run {
                "would be inserted"
            } else {
                "inserted"
            },
            t.already_present
        );
        for (why, n) in &t.skipped {
            let _ = writeln!(out, "    skipped {n}: {why}");
        }
        if !t.unmapped_columns.is_empty() {
            let _ = writeln!(
                out,
                "    columns not imported (no matching column): {}",
                t.unmapped_columns.join(", ")
            );
        }
    }
    if report.stub_requests > 0 {
        let _ = writeln!(
            out,
            "  {} requests created for routing_metrics rows that had none",
            report.stub_requests
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_in_every_shape() {
        let t = |v: Sql| time(Some(&v)).map(|d| d.to_rfc3339());
        let want = Some("2025-11-08T12:00:00+00:00".to_owned());
        assert_eq!(t(Sql::Text("2025-11-08 12:00:00".into())), want);
        assert_eq!(t(Sql::Text("2025-11-08T12:00:00Z".into())), want);
        assert_eq!(t(Sql::Integer(1_762_603_200)), want);
        assert_eq!(t(Sql::Integer(1_762_603_200_000)), want);
        assert_eq!(t(Sql::Text("yesterday".into())), None);
    }
}
