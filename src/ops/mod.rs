//! Side effects. Everything that touches the outside world (processes, git, the Docker
//! engine, HTTP) is a thin wrapper here; `steps/` decide, `ops/` act.

pub mod cmd;
pub mod context;
pub mod docker;
pub mod engine;
pub mod git;
pub mod http;
pub mod proxy;
pub mod registry;
pub mod state;
