//! Running the real binaries from tests: start one, wait for an HTTP status, stop it with
//! SIGTERM.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process, killed when dropped.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `binary` with `args` and `env` (output discarded).
pub fn start(binary: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Running {
    let mut cmd = Command::new(binary);
    cmd.args(args)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    Running(cmd.spawn().unwrap())
}

/// Starts `binary` as [`start`] does, its stdout and stderr written to `log`.
pub fn start_logged(
    binary: &std::path::Path,
    args: &[&str],
    env: &[(&str, &str)],
    log: &std::path::Path,
) -> Running {
    let file = std::fs::File::create(log).unwrap();
    let mut cmd = Command::new(binary);
    cmd.args(args)
        .env_remove("RUST_LOG")
        .stdout(Stdio::from(file.try_clone().unwrap()))
        .stderr(Stdio::from(file));
    for (k, v) in env {
        cmd.env(k, v);
    }
    Running(cmd.spawn().unwrap())
}

/// Polls `url` until it answers `want` (30 s at most).
pub async fn wait_for_status(url: &str, want: u16) {
    optimizer::providers::install_crypto();
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(resp) = client.get(url).send().await
            && resp.status().as_u16() == want
        {
            return;
        }
        assert!(Instant::now() < deadline, "{url} never answered {want}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends SIGTERM and waits (15 s at most) for the exit.
pub fn sigterm_and_wait(mut running: Running) -> std::process::ExitStatus {
    let pid = running.0.id().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = running.0.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}
