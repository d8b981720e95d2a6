//! The local Docker engine, driven through the `docker` CLI.

use std::path::Path;
use std::process::{Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::process::Command;

/// `docker ARGS`: stdout, or the first lines of stderr as the error.
pub async fn docker(args: &[&str]) -> Result<String, String> {
    output(Command::new("docker").args(args)).await
}

/// Runs a `docker` command to its end: stdout, or the first lines of stderr as the error.
pub async fn output(cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .output()
        .await
        .map_err(|e| format!("cannot run docker: {e}"))?;
    answer(&out)
}

fn answer(out: &Output) -> Result<String, String> {
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr)
            .trim()
            .lines()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "))
    }
}

/// Pulls `image` with the credentials of the Docker `config.json` in the directory
/// `config` (`None`: the engine's defaults).
pub async fn pull(config: Option<&Path>, image: &str) -> Result<(), String> {
    let mut cmd = Command::new("docker");
    if let Some(dir) = config {
        cmd.arg("--config").arg(dir);
    }
    output(cmd.args(["pull", "--quiet", image]))
        .await
        .map(|_| ())
}

pub async fn remove(name: &str) {
    let _ = docker(&["rm", "-f", name]).await;
}

/// Removes every container labelled `label` (`KEY=VALUE`), blocking (a server that stops
/// has no runtime left).
pub fn remove_labelled(label: &str) {
    let out = std::process::Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("label={label}")])
        .output();
    if let Ok(o) = out {
        let ids: Vec<String> = String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .map(String::from)
            .collect();
        if !ids.is_empty() {
            let _ = std::process::Command::new("docker")
                .args(["rm", "-f"])
                .args(&ids)
                .output();
        }
    }
}

/// The `docker run` processes under way. The engine creates the container even when the
/// CLI is killed, so a server that stops waits for them before it removes its containers.
#[derive(Default)]
pub struct Launching(Mutex<Vec<u32>>);

impl Launching {
    /// Runs a `docker run` command, recorded while it runs: stdout, or the first lines of
    /// stderr as the error.
    pub async fn run(&self, cmd: &mut Command) -> Result<String, String> {
        let child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run docker: {e}"))?;
        let pid = child.id();
        self.pids().extend(pid);
        let out = child.wait_with_output().await;
        self.pids().retain(|p| Some(*p) != pid);
        answer(&out.map_err(|e| format!("cannot run docker: {e}"))?)
    }

    /// Waits (30 s at most) until the processes under way now have exited.
    pub fn wait(&self) {
        let pids = self.pids().clone();
        let deadline = Instant::now() + Duration::from_secs(30);
        let alive = |pid: &u32| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                s.rsplit_once(')')
                    .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
            })
        };
        while pids.iter().any(alive) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn pids(&self) -> MutexGuard<'_, Vec<u32>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}
