//! The drift check: after a retrain changed routing, compare each pattern's average rating
//! since the retrain with its baseline just before it. Once both sides have
//! `DRIFT_MIN_RATINGS`, a relative drop above `DRIFT_THRESHOLD` (10%) raises an alert — a row in
//! `alerts` (once per run and pattern, however many processes check), a counter, the gauges
//! Prometheus alerts on, a Slack-style webhook (`ALERT_WEBHOOK_URL`) — and, with
//! `AUTO_ROLLBACK=true`, rolls that retrain back (recorded as a `rollback` run).

use std::time::Duration;

use serde::Serialize;
use serde_json::json;
use sqlx::PgPool;

use crate::config::DriftSettings;
use crate::store::alerts::{self, NewAlert};
use crate::telemetry::names;

/// A pattern whose quality dropped past the threshold.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub alert_id: i64,
    pub run_id: String,
    pub pattern: String,
    pub baseline: f64,
    pub current: f64,
    pub drop: f64,
    pub rolled_back: bool,
    pub webhook_delivered: bool,
}

/// One check; returns the alerts it raised.
pub async fn check(
    pool: &PgPool,
    settings: &DriftSettings,
    http: Option<&reqwest::Client>,
) -> Result<Vec<Finding>, sqlx::Error> {
    let Some((run_id, finished_at)) = alerts::last_applied_retrain(pool).await? else {
        return Ok(Vec::new());
    };
    let mut findings = Vec::new();
    for (pattern, base, base_n, cur, cur_n) in
        alerts::compare(pool, finished_at, settings.baseline_days).await?
    {
        let (Some(base), Some(cur)) = (base, cur) else {
            continue;
        };
        let drop = if base > 0.0 { (base - cur) / base } else { 0.0 };
        let labels = [("pattern", pattern.clone())];
        metrics::gauge!(names::QUALITY_BASELINE, &labels).set(base);
        metrics::gauge!(names::QUALITY_CURRENT, &labels).set(cur);
        metrics::gauge!(names::QUALITY_DROP, &labels).set(drop);
        metrics::gauge!(names::QUALITY_CURRENT_RATINGS, &labels).set(cur_n as f64);
        let enough =
            base_n >= i64::from(settings.min_ratings) && cur_n >= i64::from(settings.min_ratings);
        if !enough || drop <= settings.threshold {
            continue;
        }
        let message = format!(
            "quality for {pattern} prompts dropped {:.1}% after retrain {run_id}: average rating \
             {base:.2} ({base_n} ratings) before, {cur:.2} ({cur_n} ratings) since",
            drop * 100.0
        );
        let dedupe_key = format!("quality_drop:{run_id}:{pattern}");
        let alert = NewAlert {
            kind: "quality_drop",
            severity: "critical",
            pattern: Some(&pattern),
            run_id: Some(&run_id),
            message: &message,
            baseline: Some(base),
            observed: Some(cur),
            details: json!({ "drop": drop, "baseline_ratings": base_n, "current_ratings": cur_n,
                             "threshold": settings.threshold }),
            dedupe_key: &dedupe_key,
        };
        let Some(alert_id) = alerts::raise(pool, &alert).await? else {
            continue; // already raised (by this or another process)
        };
        tracing::warn!(%run_id, %pattern, drop, "{message}");
        metrics::counter!(names::ALERTS, "kind" => "quality_drop").increment(1);

        let mut rolled_back = false;
        if settings.auto_rollback {
            let rollback_id = super::new_run_id();
            if let Some(rb) =
                crate::store::learning::rollback(pool, &rollback_id, Some(&run_id)).await?
            {
                rolled_back = true;
                metrics::counter!(names::ROLLBACKS, "trigger" => "automatic").increment(1);
                metrics::gauge!(names::POLICY_VERSION).set(rb.policy_version as f64);
                alerts::annotate(pool, alert_id, json!({ "rollback": rb }), false).await?;
                tracing::warn!(%run_id, rollback = %rollback_id, "retrain rolled back automatically");
            }
        }
        let webhook_delivered = match (http, &settings.webhook_url) {
            (Some(client), Some(url)) => {
                let text = if rolled_back {
                    format!("{message}. The retrain was rolled back automatically.")
                } else {
                    message.clone()
                };
                deliver(client, url, &text, &pattern, &run_id, drop).await
            }
            _ => false,
        };
        if webhook_delivered {
            alerts::annotate(pool, alert_id, json!({}), true).await?;
        }
        findings.push(Finding {
            alert_id,
            run_id: run_id.clone(),
            pattern,
            baseline: base,
            current: cur,
            drop,
            rolled_back,
            webhook_delivered,
        });
    }
    Ok(findings)
}

/// POSTs a body Slack-style receivers accept (`text`), with the details beside it.
async fn deliver(
    client: &reqwest::Client,
    url: &str,
    text: &str,
    pattern: &str,
    run_id: &str,
    drop: f64,
) -> bool {
    let body = json!({
        "text": format!(":warning: AI Cost Optimizer: {text}"),
        "alert": { "kind": "quality_drop", "pattern": pattern, "run_id": run_id, "drop": drop },
    });
    match client.post(url).json(&body).send().await {
        Ok(r) if r.status().is_success() => true,
        Ok(r) => {
            tracing::warn!(
                status = r.status().as_u16(),
                "alert webhook refused the alert"
            );
            false
        }
        Err(e) => {
            tracing::warn!(error = %e, "alert webhook unreachable");
            false
        }
    }
}

/// Checks every `DRIFT_CHECK_SECS` until `shutdown`.
pub async fn run(
    pool: PgPool,
    settings: DriftSettings,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let http = crate::providers::http_client(Duration::from_secs(10)).ok();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(settings.interval) => {}
        }
        if let Err(e) = check(&pool, &settings, http.as_ref()).await {
            tracing::debug!(error = %e, "drift check failed; will retry");
        }
    }
}
