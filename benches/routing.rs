//! Analyze + route, the per-request decision, for prompts of 200 B, 2 KB and 20 KB.
//! Run: `cargo bench --bench routing`. Figures: docs/PERFORMANCE.md.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark set-up")]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use optimizer::config::Settings;
use optimizer::routing::predictor::ModelFit;
use optimizer::routing::{
    Catalog, Confidence, LearnedWeight, LearnedWeights, Pattern, Predictor, QueryPatternAnalyzer,
    RouteRequest, RoutingEngine,
};

/// Mixed prose, code and numbers, cut to `len` bytes on a character boundary.
fn prompt(len: usize) -> String {
    let unit = "Refactor the following function so that it runs in O(n) and handles empty input. \
                First explain the bug, then show the fixed code step by step.\n```python\n\
                def total(xs):\n    return sum([x * 2 for x in xs]) / len(xs)\n```\n\
                The average of 3 + 4 should be 3.5, and résumé parsing must not break.\n";
    let mut s = unit.repeat(len / unit.len() + 1);
    let mut cut = len;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    s.truncate(cut);
    s
}

fn bench(c: &mut Criterion) {
    // The default catalog with every hosted provider enabled: the largest candidate set.
    let settings = Settings::from_lookup(|var| {
        Ok(match var {
            "ANTHROPIC_API_KEY" | "GOOGLE_API_KEY" | "OPENROUTER_API_KEY" => Some("k".into()),
            "OPENAI_COMPAT_BASE_URL" => Some("http://localhost:11434/v1".into()),
            _ => None,
        })
    })
    .unwrap();
    let engine = RoutingEngine::new(
        Arc::new(Catalog::embedded().unwrap()),
        &settings.enabled_providers,
        &settings.routing,
    )
    .unwrap();
    let analyzer = QueryPatternAnalyzer::new();
    let mut rng = fastrand::Rng::with_seed(42);

    let mut group = c.benchmark_group("analyze_and_route");
    for (name, len) in [("200B", 200), ("2KB", 2048), ("20KB", 20 * 1024)] {
        let text = prompt(len);
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                let analysis = analyzer.analyze(black_box(&text));
                engine
                    .route(&analysis, &RouteRequest::default(), &mut rng)
                    .unwrap()
            })
        });
    }
    group.finish();

    // The learned case: every pattern × model measured (HIGH) and a per-prompt predictor for
    // every model with a weight on every feature — the most work a decision can need.
    let catalog = Catalog::embedded().unwrap();
    let weights: Vec<LearnedWeight> = Pattern::ALL
        .into_iter()
        .flat_map(|pattern| {
            catalog.models().iter().map(move |m| LearnedWeight {
                pattern,
                provider: m.provider,
                model: m.model.clone(),
                quality: 0.8,
                confidence: Confidence::High,
                samples: 100,
                demoted: false,
                avg_complexity: None,
            })
        })
        .collect();
    let dim = optimizer::routing::features::FEATURE_DIM as u32;
    let fits: Vec<(usize, ModelFit)> = (0..catalog.models().len())
        .map(|i| {
            let fit = ModelFit {
                samples: 1000,
                weights: (0..dim).map(|j| (j, 0.001 * (j % 7) as f32)).collect(),
            };
            (i, fit)
        })
        .collect();
    let learned = LearnedWeights::new(&catalog, 1, weights)
        .with_predictor(Predictor::new(catalog.models().len(), &fits), 10.0);
    engine.set_weights(learned);
    let text = prompt(2048);
    c.bench_function("analyze_and_route_learned/2KB", |b| {
        b.iter(|| {
            let analysis = analyzer.analyze(black_box(&text));
            engine
                .route(&analysis, &RouteRequest::default(), &mut rng)
                .unwrap()
        })
    });

    c.bench_function("analyze_only/2KB", |b| {
        b.iter(|| analyzer.analyze(black_box(&text)))
    });
    let analysis = analyzer.analyze(&text);
    c.bench_function("route_only", |b| {
        b.iter(|| {
            engine
                .route(black_box(&analysis), &RouteRequest::default(), &mut rng)
                .unwrap()
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
