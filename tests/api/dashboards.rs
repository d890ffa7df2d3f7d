//! Every Grafana dashboard parses, and every metric its queries name is one the service exports
//! (or a recording rule defined in prometheus/rules).

use std::collections::BTreeSet;

use optimizer::telemetry::names;

fn metric_names(expr: &str) -> Vec<String> {
    let bytes = expr.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(pos) = expr[i..].find("optimizer") {
        let start = i + pos;
        let mut end = start;
        while end < bytes.len()
            && (bytes[end].is_ascii_alphanumeric() || matches!(bytes[end], b'_' | b':'))
        {
            end += 1;
        }
        let name = &expr[start..end];
        if name.starts_with("optimizer_") || name.starts_with("optimizer:") {
            out.push(name.to_owned());
        }
        i = end.max(start + 1);
    }
    out
}

fn recording_rules() -> BTreeSet<String> {
    let rules = std::fs::read_to_string("prometheus/rules/optimizer.rules.yml").unwrap();
    rules
        .lines()
        .filter_map(|l| {
            l.trim()
                .strip_prefix("- record:")
                .or_else(|| l.trim().strip_prefix("record:"))
        })
        .map(|r| r.trim().to_owned())
        .collect()
}

fn exported(name: &str, rules: &BTreeSet<String>) -> bool {
    if rules.contains(name) {
        return true;
    }
    let base = ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .unwrap_or(name);
    names::ALL.contains(&name) || names::ALL.contains(&base)
}

#[test]
fn dashboards_query_only_exported_metrics() {
    let rules = recording_rules();
    assert!(rules.contains("optimizer:quality_avg:1d"), "{rules:?}");
    let mut seen = 0;
    for name in ["quality", "cost", "operations"] {
        let path = format!("grafana/dashboards/{name}.json");
        let text = std::fs::read_to_string(&path).unwrap();
        let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert!(
            dashboard["uid"].is_string() && dashboard["title"].is_string(),
            "{path}"
        );
        let panels = dashboard["panels"].as_array().unwrap();
        assert!(panels.len() >= 5, "{path}");
        let mut exprs: Vec<String> = panels
            .iter()
            .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
            .filter_map(|t| t["expr"].as_str().map(str::to_owned))
            .collect();
        exprs.extend(
            dashboard["annotations"]["list"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a["expr"].as_str().map(str::to_owned)),
        );
        for expr in exprs {
            let metrics = metric_names(&expr);
            assert!(!metrics.is_empty(), "{path}: no metric in {expr}");
            for m in metrics {
                assert!(exported(&m, &rules), "{path}: {m} is not exported ({expr})");
                seen += 1;
            }
        }
    }
    assert!(seen > 30);
    // The alert rules use only exported metrics too.
    let rules_text = std::fs::read_to_string("prometheus/rules/optimizer.rules.yml").unwrap();
    for line in rules_text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
    {
        if line.contains("runbook") || line.contains("summary") || line.contains("description") {
            continue;
        }
        for m in metric_names(line) {
            assert!(exported(&m, &rules), "rules: {m} is not exported");
        }
    }
}
