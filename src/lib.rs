//! pymdeploy: a microservice deploy pipeline in the cargo-xtask style.
//!
//! A service's `xtask/src/main.rs` builds a [`Pipeline`] from the standard steps (and its
//! own) and hands it to [`xtask`], so the pipeline is versioned with the service. The
//! `pymdeploy` binary adds `new` and `init` and runs the standard pipeline.
//!
//! See ARCHITECTURE.md for the map of modules.

pub mod cli;
pub mod config;
pub mod ctx;
pub mod error;
pub mod ops;
pub mod output;
pub mod pipeline;
pub mod scaffold;
pub mod steps;
pub mod targets;
pub mod version;

pub use cli::xtask;
pub use ctx::Ctx;
pub use output::StepProgress;
pub use pipeline::{Pipeline, Step, step};
pub use xshell;
