//! pymdeploy: a microservice deploy pipeline in the cargo-xtask style.
//!
//! A service's `xtask/src/main.rs` builds a [`Pipeline`] from the standard steps (and its
//! own) and hands it to [`xtask`], so the pipeline is versioned with the service. The
//! `pymdeploy` binary adds `new` and `init` and runs the standard pipeline.
//!
//! See ARCHITECTURE.md for the map of modules.

pub mod ci;
pub mod cli;
pub mod config;
pub mod ctx;
pub mod error;
pub mod ops;
pub mod output;
pub mod pipeline;
pub mod report;
pub mod scaffold;
pub mod steps;
pub mod targets;
pub mod version;

pub use cli::xtask;
pub use ctx::Ctx;
pub use output::StepProgress;
pub use pipeline::{Pipeline, Reach, Step, step};
pub use xshell;

/// The layers, lowest first: a module uses only those before it, so the graph has no
/// cycle and nothing runs up (a target never reaches into a step, ops never into the
/// context). ARCHITECTURE.md draws the same order.
#[cfg(test)]
const LAYERS: &[&str] = &[
    "error", "version", "output", "report", "config", "ops", "ctx", "targets", "pipeline", "steps",
    "scaffold", "ci", "cli",
];

#[cfg(test)]
mod layering {
    use std::path::Path;

    /// (module, file, module it uses) for every `crate::` path outside comments.
    fn uses(dir: &Path, module: Option<&str>, out: &mut Vec<(String, String, String)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let stem = path.file_stem().unwrap().to_string_lossy().to_string();
            if path.is_dir() {
                uses(&path, Some(module.unwrap_or(&stem)), out);
                continue;
            }
            let module = module.map(str::to_string).unwrap_or(stem);
            if module == "lib" || module == "main" {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
                for (i, _) in line.match_indices("crate::") {
                    let used: String = line[i + 7..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    out.push((module.clone(), path.display().to_string(), used));
                }
            }
        }
    }

    #[test]
    fn modules_use_only_the_layers_below_them() {
        let mut all = Vec::new();
        uses(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            None,
            &mut all,
        );
        let rank = |m: &str| {
            super::LAYERS
                .iter()
                .position(|l| *l == m)
                .unwrap_or_else(|| panic!("module {m} is in no layer of lib.rs's LAYERS"))
        };
        let upward: Vec<String> = all
            .iter()
            .filter(|(m, _, used)| rank(used) > rank(m))
            .map(|(m, file, used)| format!("{file}: {m} uses {used}"))
            .collect();
        assert!(
            upward.is_empty(),
            "imports running up the layers:\n{}",
            upward.join("\n")
        );
        assert!(
            all.iter()
                .any(|(m, _, used)| m == "steps" && used == "targets"),
            "the scan found nothing: it reads no source"
        );
    }
}
