//! Keeps this process's routing engine on the current routing policy.

/// Keeps `engine`'s learned weights current: loads them at once, then again whenever a
/// `routing_policy` NOTIFY arrives or, failing that, when a periodic check finds a new policy
/// version. Survives database outages (it retries on the next tick). Ends on `shutdown`.
pub async fn run_reloader(
    engine: std::sync::Arc<crate::routing::RoutingEngine>,
    pool: sqlx::PgPool,
    interval: std::time::Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    use crate::store::weights as store;

    let mut listener = None;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut loaded = false;
    loop {
        if listener.is_none() {
            listener = store::listen(&pool).await.ok();
        }
        let reload_needed = if loaded {
            match store::policy_version(&pool).await {
                Ok(v) => v != engine.policy_version(),
                Err(_) => false,
            }
        } else {
            true
        };
        if reload_needed {
            match store::load(&pool).await {
                Ok(policy) => {
                    let version = policy.version;
                    let (predictor, shrinkage) =
                        super::per_prompt::to_predictor(engine.catalog(), &policy.predictor);
                    let weights = crate::routing::LearnedWeights::new(
                        engine.catalog(),
                        version,
                        policy.weights,
                    )
                    .with_predictor(predictor, shrinkage)
                    .with_calibration(
                        policy
                            .calibration
                            .and_then(|c| serde_json::from_value(c).ok()),
                    );
                    tracing::info!(
                        policy_version = version,
                        weights = weights.len(),
                        "routing weights loaded"
                    );
                    engine.set_weights(weights);
                    loaded = true;
                }
                Err(e) => tracing::debug!(error = %e, "routing weights not loaded; will retry"),
            }
        }
        let notified = async {
            match listener.as_mut() {
                Some(l) => l.recv().await.map(|_| ()),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
            result = notified => {
                if result.is_err() {
                    listener = None;
                }
            }
        }
    }
}
