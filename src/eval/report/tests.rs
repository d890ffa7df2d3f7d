#![allow(clippy::unwrap_used, clippy::expect_used)]
use super::*;
use crate::dataset::Outcome;

fn outcome(correct: bool, cost: f64) -> Outcome {
    Outcome {
        correct: Some(correct),
        score: None,
        response: None,
        input_tokens: None,
        output_tokens: None,
        cost_usd: Some(cost),
    }
}

fn record(id: &str, cat: &str, cheap: bool, premium: bool) -> Record {
    Record {
        id: id.into(),
        prompt: format!("prompt {id}"),
        category: Some(cat.into()),
        outcomes: BTreeMap::from([
            ("cheap".to_owned(), outcome(cheap, 1.0)),
            ("premium".to_owned(), outcome(premium, 10.0)),
        ]),
    }
}

#[test]
fn baselines_oracle_and_random_are_computed_from_the_outcomes() {
    let prices = Prices {
        per_mtok: BTreeMap::from([
            ("cheap".to_owned(), (0.0, 0.0)),
            ("premium".to_owned(), (0.0, 0.0)),
        ]),
    };
    let recs = [
        record("1", "a", true, true),
        record("2", "a", true, true),
        record("3", "b", false, true),
        record("4", "b", false, false),
    ];
    let routed: Vec<Routed<'_>> = recs
        .iter()
        .map(|r| Routed {
            record: r,
            model: Some(
                if r.category() == "a" {
                    "cheap"
                } else {
                    "premium"
                }
                .into(),
            ),
        })
        .collect();
    let ctx = Context {
        dataset: "t".into(),
        records: 4,
        duplicates_dropped: 0,
        train_prompts: 0,
        bootstrap_prompts: 0,
        strategy: "balanced".into(),
        seed: 1,
        rounds: vec![],
    };
    let r = build(ctx, &prices, &routed, None);
    assert_eq!(r.best_single, "premium");
    assert_eq!(r.cheapest_single, "cheap");
    assert_eq!((r.policy.accuracy, r.policy.cost_usd), (0.75, 22.0));
    assert_eq!(r.policy.cost_vs_best, 22.0 / 40.0);
    assert_eq!(r.policy.accuracy_vs_best, 1.0);
    assert_eq!(r.singles[0].accuracy_vs_best, 0.5 / 0.75);
    // Oracle: cheap on 1, 2; premium on 3; on 4 nobody is right → the cheaper.
    assert_eq!((r.oracle.accuracy, r.oracle.cost_usd), (0.75, 13.0));
    assert_eq!((r.random.accuracy, r.random.cost_usd), (0.625, 22.0));
    // Mixing cheap (0.5, $4) and premium (0.75, $40) to spend $22: half each → 0.625.
    assert_eq!(r.versus_mix.best_share, 0.5);
    assert_eq!(r.versus_mix.mix_accuracy, 0.625);
    assert_eq!(r.versus_mix.lift, 0.125);
    assert_eq!(r.versus_mix.gap_recovered, 1.0);
    assert_eq!(r.categories.len(), 2);
    assert_eq!(r.categories[1].best_model, "premium");
    assert_eq!(r.policy_models["cheap"], 2);
    let text = render(&r);
    assert!(text.contains("premium (best)"), "{text}");
    assert!(svg(&r).contains("learned policy"));
}
