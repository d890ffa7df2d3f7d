//! `POST /recommendation` through the real router, and learned weights reaching the engine
//! through Postgres NOTIFY.

use std::time::{Duration, Instant};

use crate::common::{TestApp, error_body};
use optimizer::providers::ProviderId;
use optimizer::routing::{Confidence, LearnedWeight, Pattern};
use serde_json::{Value, json};

const CODE_PROMPT: &str = "Write a Python function that parses an ISO-8601 date string and \
                           returns a datetime. It must handle time zones.";

async fn recommend(app: &TestApp, body: Value) -> (u16, Value) {
    let resp = app.post_json("/recommendation", &body).await;
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

#[tokio::test]
async fn recommends_a_model_with_cost_and_baseline() {
    let app = TestApp::spawn().await;
    let (status, body) = recommend(&app, json!({ "prompt": CODE_PROMPT })).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["pattern"], "code");
    assert!(body["complexity_score"].as_f64().unwrap() > 0.0);
    assert!(["low", "medium", "high"].contains(&body["complexity_tier"].as_str().unwrap()));
    assert_eq!(body["strategy"], "balanced");

    let rec = &body["recommended"];
    // No keys configured: everything runs on the simulated provider.
    assert_eq!(rec["provider"], "simulated");
    assert_eq!(rec["confidence"], "prior");
    assert!(rec["reason"].as_str().unwrap().contains("code"), "{rec}");
    let cost = rec["est_cost_usd"].as_f64().unwrap();
    assert!(cost > 0.0);

    assert_eq!(body["baseline"]["model"], "sim-premium");
    let baseline = body["baseline"]["est_cost_usd"].as_f64().unwrap();
    let savings = body["est_savings_usd"].as_f64().unwrap();
    assert!((baseline - cost - savings).abs() < 1e-8, "{body}");

    let alternatives = body["alternatives"].as_array().unwrap();
    assert_eq!(alternatives.len(), 2, "the other simulated models: {body}");
    assert!(alternatives.iter().all(|a| a["provider"] == "simulated"));

    // The quality strategy takes the premium model; nothing saved against itself.
    let (_, body) = recommend(
        &app,
        json!({ "prompt": CODE_PROMPT, "strategy": "quality" }),
    )
    .await;
    assert_eq!(body["recommended"]["model"], "sim-premium");
    assert_eq!(body["est_savings_usd"].as_f64().unwrap(), 0.0);
}

#[tokio::test]
async fn bad_input_gets_a_422_naming_the_field() {
    let app = TestApp::spawn().await;
    let cases = [
        (json!({ "prompt": " \n\t " }), "prompt"),
        (json!({}), "prompt"),
        (json!({ "prompt": 42 }), "prompt"),
        (json!({ "prompt": "hi", "strategy": "fastest" }), "fastest"),
        (json!({ "prompt": "hi", "min_quality": 1.5 }), "min_quality"),
        (json!({ "prompt": "hi", "max_cost": -1 }), "max_cost"),
        (json!({ "prompt": "hi", "max_cost": 1e-12 }), "max_cost"),
        (
            json!({ "prompt": "hi", "allowed_providers": ["acme"] }),
            "acme",
        ),
        (json!({ "prompt": "hi", "temprature": 0.2 }), "temprature"),
    ];
    for (body, named) in cases {
        let resp = app.post_json("/recommendation", &body).await;
        assert_eq!(resp.status(), 422, "{body}");
        let (_, message) = error_body(resp).await;
        assert!(message.contains(named), "{body} → {message}");
    }
    // Only the simulated provider is configured: restricting to another leaves no route.
    let (status, body) = recommend(
        &app,
        json!({ "prompt": "hi", "allowed_providers": ["anthropic"] }),
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(body["error"]["code"], "no_route");
}

#[tokio::test]
async fn a_one_megabyte_prompt_is_analyzed() {
    let app = TestApp::spawn().await;
    let prompt = format!(
        "Summarize this:\n{}",
        "Le chat dort sur le canapé. ".repeat(36_000)
    );
    assert!(prompt.len() > 1_000_000);
    let (status, body) = recommend(&app, json!({ "prompt": prompt })).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["pattern"], "summarization");
    assert!(body["est_tokens"]["input"].as_u64().unwrap() > 200_000);
}

#[tokio::test]
async fn learned_weights_reach_the_engine_through_notify() {
    let app = TestApp::spawn().await;
    let (_, before) = recommend(&app, json!({ "prompt": CODE_PROMPT })).await;
    assert_ne!(before["recommended"]["model"], "sim-lite", "{before}");

    // The trainer proves the cheapest model good enough for code, with HIGH confidence.
    let pool = app.test_db.pool().await;
    let version = optimizer::store::weights::upsert_and_bump(
        &pool,
        &LearnedWeight {
            pattern: Pattern::Code,
            provider: ProviderId::Simulated,
            model: "sim-lite".into(),
            quality: 0.97,
            confidence: Confidence::High,
            samples: 40,
            demoted: false,
            avg_complexity: None,
        },
    )
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.engine.policy_version() != version {
        assert!(Instant::now() < deadline, "weights never reloaded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let (_, after) = recommend(&app, json!({ "prompt": CODE_PROMPT })).await;
    assert_eq!(after["recommended"]["model"], "sim-lite", "{after}");
    assert_eq!(after["recommended"]["confidence"], "high");
    assert_eq!(after["policy_version"], version);
    assert!(
        after["est_savings_usd"].as_f64().unwrap() > before["est_savings_usd"].as_f64().unwrap()
    );
}
