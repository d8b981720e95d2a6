//! The pipeline's steps, one module each. A step decides what to do and calls `ops/` to
//! do it; it never prints directly, only through its `StepProgress`.

pub mod accept;
pub mod build;
pub mod deploy;
pub mod push;
pub mod test;
