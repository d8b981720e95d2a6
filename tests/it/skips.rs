//! A test that cannot run here is counted as ignored, with its reason, never as passed;
//! with `CI` set it fails. Shown on a probe crate that uses this repository's own
//! build.rs and the attribute every engine test carries, with no engine reachable; and
//! every test here that needs the engine is checked to carry that attribute.

use std::path::Path;
use std::process::Command;

use crate::support::{repo_root, temp_dir};

const ATTRIBUTE: &str =
    "#[cfg_attr(pym_no_engine, ignore = \"no Docker engine here: run .ci/setup (CI runs it)\")]";

/// `cargo test` on the probe with no engine reachable; CI set or not.
fn probe(dir: &Path, ci: bool) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(["test", "--offline", "--test", "it"])
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", dir.join("target"))
        .env(
            "DOCKER_HOST",
            format!("unix://{}", dir.join("no-engine.sock").display()),
        )
        .env_remove("DOCKER_CONTEXT")
        .env_remove("CI")
        .env_remove("RUSTFLAGS");
    if ci {
        cmd.env("CI", "true");
    }
    let out = cmd.output().expect("cargo runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn without_an_engine_engine_tests_are_counted_as_ignored_and_fail_in_ci() {
    let dir = temp_dir("skip-probe");
    std::fs::create_dir_all(dir.join("tests/it")).unwrap();
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(dir.join("src/lib.rs"), "").unwrap();
    std::fs::write(
        dir.join("Cargo.toml"),
        format!(
            "[package]\nname = \"pym-skip-probe\"\nversion = \"0.0.0\"\nedition = \"2024\"\nbuild = \"{}\"\n\n[workspace]\n",
            repo_root().join("build.rs").display()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("tests/it/main.rs"),
        format!(
            "#[test]\n{ATTRIBUTE}\nfn needs_the_engine() {{\n    assert!(std::process::Command::new(\"docker\").arg(\"info\").output().is_ok_and(|o| o.status.success()), \"no Docker engine answers\");\n}}\n"
        ),
    )
    .unwrap();
    let (ok, out) = probe(&dir, false);
    assert!(ok, "{out}");
    assert!(
        out.contains(
            "test needs_the_engine ... ignored, no Docker engine here: run .ci/setup (CI runs it)"
        ),
        "{out}"
    );
    assert!(
        out.contains("test result: ok. 0 passed; 0 failed; 1 ignored;"),
        "{out}"
    );
    let (ok, out) = probe(&dir, true);
    assert!(!ok, "with CI set, a missing engine passed:\n{out}");
    assert!(
        out.contains("test needs_the_engine ... FAILED")
            && out.contains("test result: FAILED. 0 passed; 1 failed; 0 ignored;"),
        "{out}"
    );
}

#[test]
fn every_test_that_needs_the_engine_says_so() {
    let dir = repo_root().join("tests/it");
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        // This file speaks of the attribute; it has no engine test.
        if path.extension().is_none_or(|e| e != "rs") || path.ends_with("skips.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        // Each test function: its attributes, then its body up to the next test.
        for chunk in text.split("#[test]").skip(1) {
            let body = chunk.split("\n}\n").next().unwrap_or(chunk);
            let name = body
                .split("fn ")
                .nth(1)
                .and_then(|r| r.split('(').next())
                .unwrap_or("?");
            let head = body.split("fn ").next().unwrap_or("");
            if body.contains("need_engine()") && !head.contains("pym_no_engine") {
                missing.push(format!("{}: {name}", path.display()));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "these call need_engine() without `{ATTRIBUTE}`, so without an engine they would fail instead of being ignored:\n{}",
        missing.join("\n")
    );
}
