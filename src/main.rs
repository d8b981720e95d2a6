//! The `pymdeploy` binary: flags are parsed and dispatched in `cli`.

fn main() -> std::process::ExitCode {
    pymdeploy::cli::pymdeploy()
}
