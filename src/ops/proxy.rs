//! The live address of the docker target: a TCP proxy that the tool manages.
//!
//! It runs in a container of its own (`pym-<name>-proxy`, restarted by the engine, so it
//! outlives the xtask that started it), published on the live port. Its image holds the
//! very binary that deploys (the service's xtask, or `pymdeploy`), started with the hidden
//! `__proxy` command. It reads its upstream (`host:port` of the live container on the
//! service's network) from a state file on every new connection; `promote` and
//! `rollback` rewrite that file atomically through `docker exec … __proxy-route`. New
//! connections go to the new version at once while open ones finish on the old, which is
//! stopped only after a drain period: no request fails during the switch.

use std::path::Path;

use anyhow::{Context, Result};
use tokio::net::{TcpListener, TcpStream};

/// Where the proxy keeps its upstream, inside its container.
pub const STATE_FILE: &str = "/tmp/pym-upstream";
/// Where the proxy binary sits inside its image.
pub const BINARY: &str = "/usr/local/bin/pym-proxy";
/// The port the proxy listens on inside its container.
pub const PORT: u16 = 8080;

/// Serves forever: accepts on `listen`, forwards each connection to the upstream named in
/// `state` at the time it was accepted.
pub async fn serve(listen: &str, state: &Path) -> Result<()> {
    let listener = TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
    eprintln!("pym-proxy listening on {listen}, upstream from {}", state.display());
    loop {
        let (mut inbound, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("accept failed: {e}");
                continue;
            }
        };
        let upstream = match std::fs::read_to_string(state) {
            Ok(u) => u.trim().to_string(),
            Err(e) => {
                eprintln!("no upstream for {peer}: cannot read {}: {e}", state.display());
                continue;
            }
        };
        tokio::spawn(async move {
            match TcpStream::connect(&upstream).await {
                Ok(mut outbound) => {
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
                Err(e) => eprintln!("cannot reach upstream {upstream} for {peer}: {e}"),
            }
        });
    }
}

/// Writes the upstream atomically (write then rename), so a connection never reads half
/// of it.
pub fn set_route(state: &Path, upstream: &str) -> Result<()> {
    let tmp = state.with_extension("new");
    std::fs::write(&tmp, format!("{upstream}\n")).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, state).with_context(|| format!("cannot move {} to {}", tmp.display(), state.display()))
}
