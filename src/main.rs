//! The `pymdeploy` binary: flags are parsed and dispatched in `cli`.

/// mimalloc: the live proxy and the edge run this binary, and their per-request path
/// allocates (see Cargo.toml).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    pymdeploy::cli::pymdeploy()
}
