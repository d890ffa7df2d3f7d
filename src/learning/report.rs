//! Terminal tables for `optimizer retrain` and `optimizer dashboard` (the seed's learning
//! dashboard).

use std::fmt::Write;

use sqlx::PgPool;

use super::RunReport;
use crate::store::{feedback, learning as store};

/// The change table of a run.
pub fn run_table(report: &RunReport) -> String {
    let mut out = String::new();
    let kind = match (report.dry_run, report.held) {
        (true, _) => "dry run",
        (false, true) => "held",
        (false, false) => "applied",
    };
    let _ = writeln!(
        out,
        "retrain {} ({kind}): {}",
        report.run_id, report.message
    );
    if let Some(o) = &report.off_policy {
        let side = |e: &super::off_policy::PolicyEstimate| match (e.quality, e.cost_usd) {
            (Some(q), Some(c)) => format!(
                "quality {q:.3}, cost ${c:.6}/request ({} matched, effective {:.1})",
                e.matched, e.effective_samples
            ),
            _ => "no logged decision matched".to_owned(),
        };
        let _ = writeln!(
            out,
            "off-policy estimate on {} logged rated requests — current: {}; candidate: {}",
            o.logged,
            side(&o.current),
            side(&o.candidate)
        );
    }
    if report.changes.is_empty() {
        return out;
    }
    let _ = writeln!(
        out,
        "{:<14} {:<14} {:<34} {:>18} {:>18}  routing change",
        "pattern", "provider", "model", "before", "after"
    );
    for c in &report.changes {
        let before = c.before.as_ref().map_or("—".to_owned(), |b| {
            format!(
                "{:.3} {}{}",
                b.quality,
                b.confidence,
                if b.demoted { "↓" } else { "" }
            )
        });
        let after = format!(
            "{:.3} {}{}",
            c.after.quality,
            c.after.confidence,
            if c.after.demoted { "↓" } else { "" }
        );
        let _ = writeln!(
            out,
            "{:<14} {:<14} {:<34} {:>18} {:>18}  {}",
            c.pattern, c.provider, c.model, before, after, c.routing_change
        );
    }
    if let Some(v) = report.policy_version {
        let _ = writeln!(out, "routing policy version is now {v}");
    }
    out
}

/// The learning dashboard: total feedback, average quality, confidence distribution, top models
/// per pattern, savings from learning-based routing.
pub async fn dashboard(pool: &PgPool) -> Result<String, sqlx::Error> {
    let mut out = String::new();
    let (ratings, avg) = feedback::totals(pool).await?;
    let _ = writeln!(out, "AI Cost Optimizer — learning dashboard\n");
    let _ = writeln!(out, "Total feedback:        {ratings}");
    let _ = writeln!(
        out,
        "Average quality:       {}",
        avg.map_or("—".to_owned(), |a| format!("{a:.2} / 5"))
    );
    let mut dist = std::collections::BTreeMap::new();
    for (level, demoted, n) in store::confidence_distribution(pool).await? {
        *dist
            .entry(if demoted { "demoted".to_owned() } else { level })
            .or_insert(0) += n;
    }
    let _ = writeln!(
        out,
        "Confidence:            high {}  medium {}  low {}  demoted {}",
        dist.get("high").unwrap_or(&0),
        dist.get("medium").unwrap_or(&0),
        dist.get("low").unwrap_or(&0),
        dist.get("demoted").unwrap_or(&0)
    );
    let (learned_n, learned_saving, all_saving) = feedback::learned_savings(pool).await?;
    let _ = writeln!(
        out,
        "Savings vs baseline:   ${all_saving:.4} in all; ${learned_saving:.4} on {learned_n} \
         requests routed by learned weights"
    );
    let shadow = crate::store::shadow::totals(pool, None, None).await?;
    let shadow_usd = shadow.shadow_cost_usd + shadow.judge_cost_usd;
    let _ = writeln!(
        out,
        "Shadow comparisons:    {} requests judged, {} scores; ${:.4} spent (shadow ${:.4}, \
         judge ${:.4}); savings net of it ${:.4}; {} pending",
        shadow.requests_judged,
        shadow.scores,
        shadow_usd,
        shadow.shadow_cost_usd,
        shadow.judge_cost_usd,
        all_saving - shadow_usd,
        shadow.pending
    );
    match store::last_run(pool).await? {
        Some(r) => {
            let _ = writeln!(
                out,
                "Last retrain:          {} ({}, {}, {} changes) at {}",
                r.run_id, r.trigger, r.status, r.changes_count, r.started_at
            );
        }
        None => {
            let _ = writeln!(out, "Last retrain:          never");
        }
    }
    let (_, by_model, by_pattern) = feedback::summary(pool).await?;
    let _ = writeln!(out, "\nTop models per pattern (by average rating):");
    let _ = writeln!(
        out,
        "{:<14} {:<40} {:>8} {:>8} {:>9}",
        "pattern", "model", "ratings", "avg", "correct"
    );
    let aggregates = store::aggregates(pool, None).await?;
    for p in &by_pattern {
        let pattern = p.pattern.as_deref().unwrap_or("");
        let best = aggregates
            .iter()
            .filter(|a| a.pattern == pattern)
            .max_by(|a, b| a.avg_quality.total_cmp(&b.avg_quality));
        if let Some(a) = best {
            let _ = writeln!(
                out,
                "{:<14} {:<40} {:>8} {:>8.2} {:>8.0}%",
                pattern,
                format!("{}/{}", a.provider, a.model),
                a.samples,
                a.avg_quality,
                a.correctness * 100.0
            );
        }
    }
    let _ = writeln!(out, "\nRatings per model:");
    for m in by_model {
        let _ = writeln!(
            out,
            "  {:<44} {:>6} ratings, avg {:.2}",
            format!(
                "{}/{}",
                m.provider.unwrap_or_default(),
                m.model.unwrap_or_default()
            ),
            m.ratings,
            m.avg_quality
        );
    }
    Ok(out)
}
