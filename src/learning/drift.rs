//! The drift check: after a retrain changed routing, compare, per pattern, the ratings of
//! requests routed by the policy version the retrain installed with those of requests routed by
//! the versions before it (within `DRIFT_BASELINE_DAYS`) — which policy routed a request, not
//! when its rating came in; a request's ratings count once (averaged). Once both sides have
//! `DRIFT_MIN_RATINGS`, a relative drop above `DRIFT_THRESHOLD` (10%) that is also significant
//! (one-sided Welch test, p below `DRIFT_SIGNIFICANCE`) raises an alert — a row in
//! `alerts` (once per run and pattern, however many processes check), a counter, the gauges
//! Prometheus alerts on, a Slack-style webhook (`ALERT_WEBHOOK_URL`) — and, with
//! `AUTO_ROLLBACK=true`, rolls that retrain back for that pattern only (a scoped rollback,
//! recorded as a `rollback` run; other patterns keep what the retrain learned).

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
    let Some((run_id, _)) = alerts::last_applied_retrain(pool).await? else {
        return Ok(Vec::new());
    };
    export_run(&run_id);
    let mut findings = Vec::new();
    for side in alerts::compare_by_policy(pool, &run_id, settings.baseline_days).await? {
        let (pattern, base_n, cur_n) = (side.pattern, side.before_n, side.after_n);
        let labels = [("pattern", pattern.clone())];
        metrics::gauge!(names::QUALITY_ROLLED_BACK, &labels)
            .set(f64::from(u8::from(side.rolled_back)));
        let (Some(base), Some(cur)) = (side.before_mean, side.after_mean) else {
            // Nothing to compare yet: no drop to report (a gauge left at an earlier value would
            // keep an alert firing).
            metrics::gauge!(names::QUALITY_DROP, &labels).set(0.0);
            metrics::gauge!(names::QUALITY_CURRENT_RATINGS, &labels).set(cur_n as f64);
            continue;
        };
        if side.rolled_back {
            // The retrain no longer routes this pattern: the drop was dealt with, and the
            // policy now serving is the one before it (the alert resolves, or never fires).
            metrics::gauge!(names::QUALITY_BASELINE, &labels).set(base);
            metrics::gauge!(names::QUALITY_CURRENT, &labels).set(base);
            metrics::gauge!(names::QUALITY_DROP, &labels).set(0.0);
            metrics::gauge!(names::QUALITY_CURRENT_RATINGS, &labels).set(cur_n as f64);
            continue;
        }
        let p_value = one_sided_p(
            (base, side.before_var.unwrap_or(0.0), base_n),
            (cur, side.after_var.unwrap_or(0.0), cur_n),
        );
        let drop = if base > 0.0 { (base - cur) / base } else { 0.0 };
        metrics::gauge!(names::QUALITY_BASELINE, &labels).set(base);
        metrics::gauge!(names::QUALITY_CURRENT, &labels).set(cur);
        metrics::gauge!(names::QUALITY_DROP, &labels).set(drop);
        metrics::gauge!(names::QUALITY_CURRENT_RATINGS, &labels).set(cur_n as f64);
        let enough =
            base_n >= i64::from(settings.min_ratings) && cur_n >= i64::from(settings.min_ratings);
        if !enough || drop <= settings.threshold || p_value >= settings.significance {
            continue;
        }
        let message = format!(
            "quality for {pattern} prompts dropped {:.1}% after retrain {run_id}: average rating \
             {base:.2} ({base_n} rated requests) under the previous policy, {cur:.2} ({cur_n}) \
             under the new one; p = {p_value:.4}",
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
                             "threshold": settings.threshold, "p_value": p_value,
                             "significance": settings.significance }),
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
                crate::store::learning::rollback(pool, &rollback_id, Some(&run_id), Some(&pattern))
                    .await?
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
                deliver(client, url, &text, (&pattern, &run_id, drop, rolled_back)).await
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

/// `optimizer_drift_run_info{run_id}` = 1 for the retrain the drift gauges judge (the alert's
/// runbook names it); the one judged before is set to 0.
fn export_run(run_id: &str) {
    static LAST: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);
    let Ok(mut last) = LAST.lock() else {
        return;
    };
    if last.as_deref() == Some(run_id) {
        return;
    }
    if let Some(old) = last.take() {
        metrics::gauge!(names::DRIFT_RUN, "run_id" => old).set(0.0);
    }
    metrics::gauge!(names::DRIFT_RUN, "run_id" => run_id.to_owned()).set(1.0);
    *last = Some(run_id.to_owned());
}

/// One-sided p-value of "the mean fell" from (mean, sample variance, n) before and after:
/// Welch's statistic against the normal distribution (both sides have at least
/// `DRIFT_MIN_RATINGS` ≥ 20 values when it matters, where the normal approximation holds).
/// `libm::erfc` rather than a statistics crate: the one function needed, without its dependency
/// tree.
pub fn one_sided_p(before: (f64, f64, i64), after: (f64, f64, i64)) -> f64 {
    let ((m1, v1, n1), (m2, v2, n2)) = (before, after);
    if n1 < 2 || n2 < 2 {
        return 1.0;
    }
    let se = (v1.max(0.0) / n1 as f64 + v2.max(0.0) / n2 as f64).sqrt();
    if se == 0.0 {
        return if m1 > m2 { 0.0 } else { 1.0 };
    }
    let z = (m1 - m2) / se;
    0.5 * libm::erfc(z / std::f64::consts::SQRT_2)
}

/// POSTs a body Slack-style receivers accept (`text`), with the details beside it.
async fn deliver(
    client: &reqwest::Client,
    url: &str,
    text: &str,
    (pattern, run_id, drop, rolled_back): (&str, &str, f64, bool),
) -> bool {
    let body = json!({
        "text": format!(":warning: AI Cost Optimizer: {text}"),
        "alert": { "kind": "quality_drop", "pattern": pattern, "run_id": run_id, "drop": drop,
                   "rolled_back": rolled_back },
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

#[cfg(test)]
mod tests {
    use super::one_sided_p;

    #[test]
    fn the_p_value_falls_with_the_drop_and_the_evidence() {
        // 4.0 → 3.4 with spread, 20 a side: clearly significant.
        let strong = one_sided_p((4.0, 0.25, 20), (3.4, 0.25, 20));
        assert!(strong < 0.001, "{strong}");
        // The same drop on noisy ratings: not.
        let noisy = one_sided_p((4.0, 4.0, 20), (3.6, 4.0, 20));
        assert!(noisy > 0.2, "{noisy}");
        // More evidence, same effect: smaller p.
        assert!(one_sided_p((4.0, 4.0, 200), (3.6, 4.0, 200)) < noisy);
        // A rise is never a significant drop; no spread decides by the means.
        assert!(one_sided_p((3.0, 0.5, 50), (3.5, 0.5, 50)) > 0.99);
        assert_eq!(one_sided_p((4.0, 0.0, 20), (3.0, 0.0, 20)), 0.0);
        assert_eq!(one_sided_p((4.0, 0.0, 1), (3.0, 0.0, 20)), 1.0);
        // Symmetry: z = 0 is p = 0.5.
        assert!((one_sided_p((4.0, 1.0, 30), (4.0, 1.0, 30)) - 0.5).abs() < 1e-12);
    }
}
