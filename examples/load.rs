//! A bounded load generator for `POST /complete` (loopback only). Sends `--requests` distinct
//! prompts with `--concurrency` clients, stops after `--max-secs` at the latest, and prints
//! throughput and latency percentiles. Used by `scripts/load_test.sh`; see docs/PERFORMANCE.md.
//!
//! cargo run --release --example load -- --url http://127.0.0.1:8000 --requests 5000 --concurrency 64

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a measuring tool")]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_owned())
}

#[tokio::main]
async fn main() {
    optimizer::providers::install_crypto();
    let url = arg("--url", "http://127.0.0.1:8000");
    assert!(
        url.starts_with("http://127.") || url.starts_with("http://localhost"),
        "loopback targets only"
    );
    let total: usize = arg("--requests", "2000").parse().unwrap();
    let concurrency: usize = arg("--concurrency", "64").parse().unwrap();
    let max = Duration::from_secs(arg("--max-secs", "120").parse().unwrap());
    let mode = arg("--mode", "sync");

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .unwrap();
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, next, url, mode) = (client.clone(), next.clone(), url.clone(), mode.clone());
        tasks.push(optimizer::tasks::spawn("load", async move {
            let mut latencies = Vec::new();
            let mut errors = 0usize;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total || started.elapsed() > max {
                    break;
                }
                let body = serde_json::json!({
                    "prompt": format!("Load test request {i}: what is the capital of country #{i}?"),
                    "async": mode == "async",
                });
                let t = Instant::now();
                match client.post(format!("{url}/complete")).json(&body).send().await {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        latencies.push(t.elapsed());
                    }
                    _ => errors += 1,
                }
            }
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.unwrap();
        latencies.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(0.0)
    };
    println!(
        "mode={mode} requests_ok={} errors={errors} concurrency={concurrency} elapsed_s={:.2} \
         throughput_rps={:.0} p50_ms={:.2} p90_ms={:.2} p99_ms={:.2} max_ms={:.2}",
        latencies.len(),
        elapsed.as_secs_f64(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        pct(0.50),
        pct(0.90),
        pct(0.99),
        pct(1.0),
    );
}
