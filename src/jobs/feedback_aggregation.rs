//! The feedback_aggregation job: refreshes the running aggregate of the pattern × model a new
//! (or replaced) rating belongs to. Idempotent: it recomputes, so a re-run counts nothing twice.

use std::sync::Arc;

use apalis::prelude::{BoxDynError, Data, TaskBuilder};
use apalis_postgres::PgTask;
use serde::{Deserialize, Serialize};

use super::JobContext;
use crate::store::feedback;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedbackAggregation {
    pub feedback_id: i32,
}

impl FeedbackAggregation {
    pub fn task(feedback_id: i32) -> PgTask {
        let args = serde_json::to_vec(&Self { feedback_id }).unwrap_or_default();
        TaskBuilder::new(args).max_attempts(10).build()
    }
}

pub async fn handle(
    job: FeedbackAggregation,
    ctx: Data<Arc<JobContext>>,
) -> Result<(), BoxDynError> {
    let started = std::time::Instant::now();
    let result = feedback::aggregate(&ctx.pool, job.feedback_id).await;
    super::record_job("feedback_aggregation", started, result.is_ok());
    result?;
    Ok(())
}
