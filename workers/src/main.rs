//! `optimizer-worker`: the worker process. Any number may run at once, on any machines.
//! It is thin on purpose: the process is `optimizer::worker` (also `optimizer worker`), and
//! what it runs is defined in `optimizer::jobs`.

use std::process::ExitCode;

use clap::Parser;
use optimizer::worker::WorkerArgs;

#[derive(Parser)]
#[command(
    version,
    about = "AI Cost Optimizer worker: consumes the Postgres-backed job queues"
)]
struct Cli {
    #[command(flatten)]
    args: WorkerArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    optimizer::worker::main(Cli::parse().args).await
}
