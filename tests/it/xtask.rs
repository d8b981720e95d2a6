//! A service's xtask: the `pymdeploy-xtask` crate it compiles (alone), the binary it
//! finds or installs once, a team's own steps in it, and the older form that links the
//! pymdeploy library in.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{TestService, pymdeploy_bin, repo_root, run, temp_dir};

/// `cargo xtask ARGS` in `svc` as a user without `PYMDEPLOY_BIN` runs it, pymdeploy's
/// binaries kept in `home` (`PYMDEPLOY_HOME`), no `pymdeploy` on `PATH` but cargo's own
/// directory.
fn xtask_as_user(svc: &TestService, home: &Path, args: &[&str]) -> crate::support::Run {
    let cargo = PathBuf::from(env!("CARGO"));
    let mut cmd = Command::new(&cargo);
    cmd.arg("xtask")
        .args(args)
        .current_dir(&svc.root)
        .env("PYMDEPLOY_HOME", home)
        .env("CARGO_TARGET_DIR", install_build_dir())
        .env(
            "PATH",
            format!("{}:/usr/bin:/bin", cargo.parent().unwrap().display()),
        )
        .env_remove("PYMDEPLOY_BIN");
    let mut r = run(cmd);
    // run() names the test binary; a user has none.
    r.stderr = r.stderr.replace(pymdeploy_bin(), "<bin>");
    r
}

#[test]
fn a_teams_command_step_runs_in_its_place_and_its_failure_stops_the_run() {
    let svc = TestService::new("own-step");
    svc.edit(
        "xtask/src/main.rs",
        ".step(Build)",
        ".step(pymdeploy_xtask::command(\"lint\", \"Check the sources\", \"echo \\\"linted $PYM_VERSION\\\" > lint.out; test -z \\\"$FAIL_LINT\\\"\"))\n        .step(Build)",
    );
    svc.commit("a lint step");
    let help = svc.xtask(&["--help"]).assert_ok().stdout.clone();
    let at = |name: &str| {
        help.find(&format!("\n  {name} "))
            .unwrap_or_else(|| panic!("no {name} in:\n{help}"))
    };
    assert!(
        at("test") < at("lint") && at("lint") < at("build"),
        "{help}"
    );
    assert!(help.contains("Check the sources"), "{help}");
    assert!(help.starts_with("This service's deploy pipeline"), "{help}");
    assert!(help.contains("Usage: cargo xtask"), "{help}");

    let version = svc.xtask_version();
    let plan = svc.xtask(&["lint", "--dry-run"]).assert_ok().stdout.clone();
    assert!(plan.contains("run `sh -c "), "{plan}");
    assert!(!svc.path("lint.out").exists(), "a dry run ran the step");
    svc.xtask(&["lint"]).assert_ok();
    assert_eq!(svc.read("lint.out"), format!("linted {version}\n"));

    // Its failure is the run's: the steps after it do not start.
    let r = svc.xtask_env(
        &["deploy", "--no-push", "--allow-dirty"],
        &[("FAIL_LINT", "1")],
    );
    r.assert_failed().assert_stderr_has("failed");
    assert!(
        r.stderr.contains("lint") && !r.stderr.contains("Building"),
        "{}",
        r.stderr
    );
}

#[test]
fn a_wrong_binary_is_refused_with_what_the_xtask_needs() {
    let svc = TestService::new_for("pinned", "gke");
    let fake = temp_dir("fake-bin").join("pymdeploy");
    std::fs::write(&fake, "#!/bin/sh\necho 'pymdeploy 0.0.9'\n").unwrap();
    let mut p = std::fs::metadata(&fake).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut p, 0o755);
    std::fs::set_permissions(&fake, p).unwrap();
    let r = svc.xtask_env(&["status"], &[("PYMDEPLOY_BIN", fake.to_str().unwrap())]);
    r.assert_failed()
        .assert_stderr_has("is pymdeploy 0.0.9 with []")
        .assert_stderr_has(&format!(
            "this xtask needs pymdeploy {} with gke",
            env!("CARGO_PKG_VERSION")
        ));
}

/// Where the install below compiles: a directory of this machine's cargo home kept
/// between runs, as a user's `~/.cargo/pymdeploy/build` is (the first run on a machine
/// compiles pymdeploy, the next ones only what changed). The bench measures it cold.
fn install_build_dir() -> PathBuf {
    cargo_home().join("pymdeploy/it-install-build")
}

fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cargo"))
}

#[test]
fn the_xtask_installs_its_binary_once_and_the_library_form_still_runs() {
    let v = env!("CARGO_PKG_VERSION");
    // The older form: the xtask links pymdeploy and runs a step written in Rust. It
    // compiles in the build directory the generated `xtask` alias shares between services.
    let old = TestService::new("linked");
    old.edit(
        "xtask/Cargo.toml",
        &format!(
            "pymdeploy-xtask = {{ version = \"={v}\", path = \"{}/shim\" }}",
            repo_root().display()
        ),
        &format!(
            "pymdeploy = {{ version = \"={v}\", path = \"{}\" }}",
            repo_root().display()
        ),
    );
    old.write(
        "xtask/src/main.rs",
        "fn main() -> std::process::ExitCode {\n    let pipeline = pymdeploy::Pipeline::standard().step_before(\"build\", pymdeploy::step(\"hello\", \"Say hello in Rust\", |ctx, _| {\n        std::fs::write(ctx.root.join(\"hello.out\"), \"from rust\")?;\n        Ok(\"said\".into())\n    }));\n    pymdeploy::xtask(pipeline)\n}\n",
    );
    let _ = std::fs::remove_file(old.path("xtask/Cargo.lock"));
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(["xtask", "hello", "--allow-dirty"])
        .current_dir(&old.root)
        .env_remove("PYMDEPLOY_BIN");
    let r = run(cmd);
    r.assert_ok().assert_stderr_has("said");
    assert_eq!(old.read("hello.out"), "from rust");

    // No binary anywhere: the first run installs this version, the next ones use it.
    let home = temp_dir("pymdeploy-home");
    // What an install stopped by Ctrl-C leaves (its process gone): cleared by the next.
    let stopped = home.join(format!("bin/.installing-{v}-docker-999999999"));
    std::fs::create_dir_all(stopped.join("bin")).unwrap();
    let svc = TestService::new("install");
    let first = xtask_as_user(&svc, &home, &["version"]);
    first
        .assert_ok()
        .assert_stderr_has(&format!("Installing pymdeploy {v} for this machine, once"))
        .assert_stderr_has(&format!("from {}", repo_root().display()));
    let key = format!("{v}-docker");
    let installed = home.join(format!("bin/{key}/bin/pymdeploy"));
    assert!(installed.is_file(), "{} is not there", installed.display());
    assert!(!stopped.exists(), "a stopped install's directory is left");
    let second = xtask_as_user(&svc, &home, &["version"]);
    second.assert_ok();
    assert!(!second.stderr.contains("Installing"), "{}", second.stderr);
    assert_eq!(first.stdout, second.stdout);
    let leftovers: Vec<_> = std::fs::read_dir(home.join("bin"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(leftovers, [key], "only the installed version is left");
}
