//! Side effects. Everything that touches the outside world (processes, git, the Docker
//! engine, HTTP) is a thin wrapper here; `steps/` decide, `ops/` act.

use std::sync::atomic::{AtomicBool, Ordering};

pub mod cmd;
pub mod context;
pub mod docker;
pub mod edge;
pub mod engine;
pub mod gcp;
pub mod git;
pub mod http;
pub mod oidc;
pub mod proxy;
pub mod registry;
pub mod service;
pub mod state;

/// Set once by the signal handler a `Ctx` installs; read by `cmd`, which stops its child
/// processes when it is set.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// True once the process got SIGINT (Ctrl-C) or SIGTERM.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Marks the process interrupted (its signal handler's doing).
pub fn set_interrupted() {
    INTERRUPTED.store(true, Ordering::SeqCst);
}
