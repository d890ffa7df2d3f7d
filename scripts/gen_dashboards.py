#!/usr/bin/env python3
"""Writes grafana/dashboards/*.json (Quality, Cost, Operations). Re-run after editing:
python3 scripts/gen_dashboards.py. tests/api/dashboards.rs checks every metric they query exists."""
import json
import os

DS = {"type": "prometheus", "uid": "prometheus"}


def panel(pid, title, exprs, x, y, w=12, h=8, unit=None, kind="timeseries", legend=None):
    targets = []
    for i, e in enumerate(exprs):
        expr, fmt = e if isinstance(e, tuple) else (e, legend)
        t = {"datasource": DS, "expr": expr, "refId": chr(65 + i)}
        if fmt:
            t["legendFormat"] = fmt
        targets.append(t)
    p = {
        "id": pid,
        "type": kind,
        "title": title,
        "datasource": DS,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "targets": targets,
        "fieldConfig": {"defaults": {}, "overrides": []},
        "options": {},
    }
    if unit:
        p["fieldConfig"]["defaults"]["unit"] = unit
    return p


def dashboard(uid, title, panels, annotations=None):
    return {
        "uid": uid,
        "title": title,
        "tags": ["ai-cost-optimizer"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "1m",
        "time": {"from": "now-7d", "to": "now"},
        "templating": {"list": []},
        "annotations": {"list": annotations or []},
        "panels": panels,
    }


retrain_annotation = {
    "name": "Retrains",
    "datasource": DS,
    "enable": True,
    "iconColor": "orange",
    "expr": "changes(optimizer_routing_policy_version[5m]) > 0",
    "titleFormat": "Routing policy changed (retrain or rollback)",
}

quality = dashboard(
    "optimizer-quality",
    "AI Cost Optimizer — Quality",
    [
        panel(1, "Average rating by pattern (1d)", [("optimizer:quality_avg:1d", "{{pattern}}")], 0, 0),
        panel(2, "Correctness by pattern (1d)", [("optimizer:correctness:1d", "{{pattern}}")], 12, 0, unit="percentunit"),
        panel(3, "Average rating by model (6h)", [(
            "sum by (model) (increase(optimizer_feedback_quality_sum[6h])) / sum by (model) (increase(optimizer_feedback_total[6h]))",
            "{{model}}")], 0, 8),
        panel(4, "Feedback volume", [("sum by (pattern) (rate(optimizer_feedback_total[1h])) * 3600", "{{pattern}}")], 12, 8, unit="short"),
        panel(5, "Quality drop since last retrain", [("optimizer_quality_drop_ratio", "{{pattern}}")], 0, 16, unit="percentunit"),
        panel(6, "Rating: before vs since last retrain", [
            ("optimizer_quality_baseline_score", "before {{pattern}}"),
            ("optimizer_quality_since_retrain_score", "since {{pattern}}"),
        ], 12, 16),
        panel(7, "Retrains and changes", [
            ("sum by (result) (increase(optimizer_retrain_runs_total[1d]))", "runs {{result}}"),
            ("sum(increase(optimizer_retrain_changes_total[1d]))", "changes"),
            ("sum(increase(optimizer_rollbacks_total[1d]))", "rollbacks"),
            ("sum(increase(optimizer_alerts_total[1d]))", "alerts"),
        ], 0, 24, w=24),
    ],
    [retrain_annotation],
)

cost = dashboard(
    "optimizer-cost",
    "AI Cost Optimizer — Cost",
    [
        panel(1, "Spend vs always-premium baseline (USD/h)", [
            ("optimizer:cost_usd:rate1h * 3600", "spend"),
            ("optimizer:baseline_cost_usd:rate1h * 3600", "baseline"),
        ], 0, 0, unit="currencyUSD"),
        panel(2, "Savings", [("optimizer:savings_ratio:1h", "savings")], 12, 0, unit="percentunit"),
        panel(3, "Spend by model (USD/h)", [("sum by (model) (rate(optimizer_completion_cost_usd_sum[1h])) * 3600", "{{model}}")], 0, 8, unit="currencyUSD"),
        panel(4, "Spend by pattern (USD/h)", [("sum by (pattern) (rate(optimizer_completion_cost_usd_sum[1h])) * 3600", "{{pattern}}")], 12, 8, unit="currencyUSD"),
        panel(5, "Cache hit rate", [(
            "sum(rate(optimizer_cache_requests_total{result=\"hit\"}[1h])) / sum(rate(optimizer_cache_requests_total[1h]))",
            "hit rate")], 0, 16, unit="percentunit"),
        panel(6, "Exploration share", [(
            "sum(rate(optimizer_explorations_total[1h])) / sum(rate(optimizer_completions_total[1h]))",
            "explored")], 12, 16, unit="percentunit"),
        panel(7, "Tokens by model (per hour)", [("sum by (model, direction) (rate(optimizer_tokens_total[1h])) * 3600", "{{model}} {{direction}}")], 0, 24, w=24, unit="short"),
        panel(8, "Spend by API key (USD/h)", [("sum by (key_id) (increase(optimizer_key_spend_usd[1h]))", "{{key_id}}")], 0, 32, unit="currencyUSD"),
        panel(9, "Refusals by API key (per hour)", [("sum by (key_id, outcome) (increase(optimizer_key_requests_total{outcome!=\"accepted\"}[1h]))", "{{key_id}} {{outcome}}")], 12, 32, unit="short"),
        panel(10, "Shadow comparisons: spend (USD/h)", [("sum by (kind) (rate(optimizer_shadow_call_cost_usd_sum[1h])) * 3600", "{{kind}}")], 0, 40, unit="currencyUSD"),
        panel(11, "Shadow comparisons: judge calls (per hour)", [("sum by (result) (rate(optimizer_shadow_scores_total[1h])) * 3600", "{{result}}")], 12, 40, unit="short"),
    ],
)

operations = dashboard(
    "optimizer-operations",
    "AI Cost Optimizer — Operations",
    [
        panel(1, "Requests by route and status", [("sum by (route, status) (rate(optimizer_http_requests_total[5m]))", "{{route}} {{status}}")], 0, 0, unit="reqps"),
        panel(2, "Completions by status", [("sum by (status) (rate(optimizer_completions_total[5m]))", "{{status}}")], 12, 0, unit="reqps"),
        panel(3, "HTTP latency p50 / p99", [
            ("histogram_quantile(0.5, sum by (le, route) (rate(optimizer_http_request_duration_seconds_bucket[5m])))", "p50 {{route}}"),
            ("histogram_quantile(0.99, sum by (le, route) (rate(optimizer_http_request_duration_seconds_bucket[5m])))", "p99 {{route}}"),
        ], 0, 8, unit="s"),
        panel(4, "Gateway overhead p50 / p99", [
            ("histogram_quantile(0.5, sum by (le) (rate(optimizer_gateway_overhead_seconds_bucket[5m])))", "p50"),
            ("histogram_quantile(0.99, sum by (le) (rate(optimizer_gateway_overhead_seconds_bucket[5m])))", "p99"),
        ], 12, 8, unit="s"),
        panel(5, "Provider latency p50 by provider", [(
            "histogram_quantile(0.5, sum by (le, provider) (rate(optimizer_provider_latency_seconds_bucket[5m])))",
            "{{provider}}")], 0, 16, unit="s"),
        panel(6, "Provider errors by kind", [("sum by (provider, kind) (rate(optimizer_provider_errors_total[5m]))", "{{provider}} {{kind}}")], 12, 16, unit="reqps"),
        panel(7, "Fallbacks", [("sum by (provider, model) (rate(optimizer_fallbacks_total[5m]))", "{{provider}}/{{model}}")], 0, 24, unit="reqps"),
        panel(8, "Queue depth", [("max by (queue, state) (optimizer_queue_jobs)", "{{queue}} {{state}}")], 12, 24, unit="short"),
        panel(9, "Job duration p99 and failures", [
            ("histogram_quantile(0.99, sum by (le, job) (rate(optimizer_job_duration_seconds_bucket[5m])))", "p99 {{job}}"),
            ("sum by (job) (rate(optimizer_job_failures_total[5m]))", "failures {{job}}"),
        ], 0, 32, w=24),
        panel(10, "Routing policy version", [("max(optimizer_routing_policy_version)", "version")], 0, 40, w=8, kind="stat"),
        panel(11, "Last successful retrain", [("max(optimizer_last_successful_retrain_timestamp_seconds) * 1000", "last")], 8, 40, w=8, kind="stat", unit="dateTimeFromNow"),
    ],
)

here = os.path.dirname(os.path.abspath(__file__))
out = os.path.join(here, "..", "grafana", "dashboards")
for name, d in [("quality", quality), ("cost", cost), ("operations", operations)]:
    with open(os.path.join(out, f"{name}.json"), "w") as f:
        json.dump(d, f, indent=2)
        f.write("\n")
