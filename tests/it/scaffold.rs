//! `new` and `init` on real directories and git repositories.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use crate::support::{pymdeploy_bin, run, temp_dir};

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Every file under `dir` (but .git) with its contents.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.file_name().unwrap() == ".git" {
                continue;
            }
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.insert(
                    p.strip_prefix(root).unwrap().display().to_string(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

#[test]
fn new_writes_a_committed_clean_service() {
    let dir = temp_dir("new").join("svc");
    let mut cmd = Command::new(pymdeploy_bin());
    cmd.args(["new", "hello-world", "--path"])
        .arg(&dir)
        .arg("--pymdeploy-path")
        .arg(crate::support::repo_root());
    let r = run(cmd);
    r.assert_ok();
    assert_eq!(
        r.stdout.trim(),
        dir.display().to_string(),
        "the path is the data on stdout"
    );
    let files: Vec<String> = snapshot(&dir).into_keys().collect();
    for want in [
        ".cargo/config.toml",
        ".dockerignore",
        "Cargo.lock",
        "Cargo.toml",
        "Dockerfile",
        "pym-config.yaml",
        "src/main.rs",
        "testaccept/tests/accept.rs",
        "xtask/Cargo.lock",
        "xtask/src/main.rs",
    ] {
        assert!(
            files.contains(&want.to_string()),
            "{want} missing from {files:?}"
        );
    }
    assert_eq!(git(&dir, &["rev-list", "--count", "HEAD"]), "1");
    assert_eq!(
        git(&dir, &["status", "--porcelain"]),
        "",
        "the tree is clean after `new`"
    );
    let config = std::fs::read_to_string(dir.join("pym-config.yaml")).unwrap();
    assert!(
        config.contains("name: hello-world\ndeploy_target: docker\n"),
        "{config}"
    );
    let xtask = std::fs::read_to_string(dir.join("xtask/Cargo.toml")).unwrap();
    assert!(
        xtask.contains(&format!(
            "pymdeploy-xtask = {{ version = \"={}\", path = ",
            env!("CARGO_PKG_VERSION")
        )),
        "{xtask}"
    );
}

#[test]
fn a_binary_from_crates_io_pins_the_published_version_and_enables_the_target_feature() {
    use pymdeploy::scaffold::{Lang, Options, Source, render_all};
    let opts = Options {
        name: "svc".into(),
        target: pymdeploy::config::TargetKind::Docker,
        lang: Lang::Rust,
        source: Source::Registry,
    };
    let files = render_all(&opts);
    let xtask = &files
        .iter()
        .find(|(p, _)| p == "xtask/Cargo.toml")
        .unwrap()
        .1;
    assert!(
        xtask.contains(&format!(
            "pymdeploy-xtask = \"={}\"",
            env!("CARGO_PKG_VERSION")
        )),
        "{xtask}"
    );
    let opts = Options {
        target: pymdeploy::config::TargetKind::AwsBeanstalk,
        ..opts
    };
    let files = render_all(&opts);
    let xtask = &files
        .iter()
        .find(|(p, _)| p == "xtask/Cargo.toml")
        .unwrap()
        .1;
    assert!(
        xtask.contains("features = [\"aws-beanstalk\"]"),
        "a cloud target enables its SDK feature: {xtask}"
    );
    // What new writes follows the target: the README and the config speak of AWS.
    let readme = &files.iter().find(|(p, _)| p == "README.md").unwrap().1;
    assert!(
        readme.contains("## The aws-beanstalk target")
            && readme.contains("AWS_ENDPOINT_URL")
            && readme.contains("docker_bucket"),
        "{readme}"
    );
    assert!(!readme.contains("## The docker target"), "{readme}");
    let config = &files
        .iter()
        .find(|(p, _)| p == "pym-config.yaml")
        .unwrap()
        .1;
    assert!(
        config.contains("# aws_region: us-east-1") && !config.contains("# live_port"),
        "{config}"
    );
}

#[test]
fn new_python_writes_a_flask_service_and_no_cargo_manifest() {
    use pymdeploy::scaffold::{Lang, Options, Source, render_all};
    let opts = Options {
        name: "inventory".into(),
        target: pymdeploy::config::TargetKind::Docker,
        lang: Lang::Python,
        source: Source::Registry,
    };
    let files: BTreeMap<String, String> = render_all(&opts).into_iter().collect();
    let names: Vec<&str> = files.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            ".cargo/config.toml",
            ".dockerignore",
            ".gitignore",
            "Dockerfile",
            "README.md",
            "pym-config.schema.json",
            "pym-config.yaml",
            "requirements.txt",
            "server.py",
            "test/test_server.py",
            "testaccept/test_accept.py",
            "xtask/Cargo.toml",
            "xtask/src/main.rs"
        ]
    );
    assert!(files["server.py"].contains("\"name\": \"inventory\""));
    assert!(
        files["Dockerfile"].contains("ARG PYM_BASE=python:3.11-slim")
            && files["Dockerfile"].contains("gunicorn")
    );
    assert!(files["pym-config.yaml"].contains("docker_base: python:3.11-slim\ntest_command: python3 -m pytest -q test\naccept_command: python3 -m pytest -q testaccept\n"));
    assert!(
        files["pym-config.yaml"]
            .starts_with("# yaml-language-server: $schema=pym-config.schema.json\n")
    );
    let schema: serde_json::Value = serde_json::from_str(&files["pym-config.schema.json"]).unwrap();
    assert_eq!(
        schema,
        pymdeploy::config::json_schema(),
        "the schema written is the one `config --schema` prints"
    );
}

#[test]
fn new_leaves_nothing_behind_when_the_lock_file_cannot_be_made() {
    let dir = temp_dir("nolock").join("svc");
    let mut cmd = Command::new(pymdeploy_bin());
    // A git source nobody can reach: cargo cannot resolve the xtask's dependencies.
    cmd.args(["new", "svc", "--path"])
        .arg(&dir)
        .args(["--pymdeploy-git", "file:///nonexistent/pymdeploy.git"]);
    let r = run(cmd);
    r.assert_failed()
        .assert_stderr_has("cannot resolve the dependencies of xtask/Cargo.toml");
    assert!(!r.stderr.contains("Next"), "{}", r.stderr);
    assert!(!dir.exists(), "new left {} behind", dir.display());
}

#[test]
fn new_refuses_a_non_empty_directory_and_writes_nothing() {
    let dir = temp_dir("nonempty");
    std::fs::write(dir.join("notes.txt"), "mine").unwrap();
    let mut cmd = Command::new(pymdeploy_bin());
    cmd.args(["new", "hello", "--path"]).arg(&dir);
    run(cmd)
        .assert_failed()
        .assert_stderr_has("exists and is not empty")
        .assert_stderr_has(
            "hint: choose another --path, or use `pymdeploy init` inside an existing repository",
        );
    assert_eq!(
        snapshot(&dir).into_keys().collect::<Vec<_>>(),
        ["notes.txt"]
    );
}

#[test]
fn new_refuses_a_bad_name() {
    let dir = temp_dir("badname");
    let mut cmd = Command::new(pymdeploy_bin());
    cmd.args(["new", "Hello_World", "--path"])
        .arg(dir.join("x"));
    run(cmd)
        .assert_failed()
        .assert_stderr_has("`Hello_World` cannot be a service name");
    assert!(!dir.join("x").exists());
}

#[test]
fn init_adds_the_pipeline_and_overwrites_nothing() {
    let dir = temp_dir("init");
    std::fs::create_dir_all(dir.join("app")).unwrap();
    std::fs::write(dir.join("app/server.py"), "print('hi')\n").unwrap();
    std::fs::write(dir.join("README.md"), "# mine\n").unwrap();
    std::fs::write(dir.join(".gitignore"), "*.pyc").unwrap();
    git(&dir, &["init", "-q"]);
    let before = snapshot(&dir);

    let mut cmd = Command::new(pymdeploy_bin());
    cmd.args(["init", "--name", "legacy"]).current_dir(&dir);
    let r = run(cmd);
    r.assert_ok()
        .assert_stderr_has("Detected Dockerfile only service")
        .assert_stderr_has("Decide test_command")
        .assert_stderr_has("Decide Dockerfile: there is none");
    let after = snapshot(&dir);
    for (path, content) in &before {
        if path != ".gitignore" {
            assert_eq!(after.get(path), Some(content), "{path} changed");
        }
    }
    assert_eq!(
        std::str::from_utf8(&after[".gitignore"]).unwrap(),
        "*.pyc\n# pymdeploy's build output\n/.pym\n/xtask/target\n"
    );
    // The build context leaves out what no image needs (the host-built binaries kept).
    assert_eq!(
        std::str::from_utf8(&after[".dockerignore"]).unwrap(),
        "# not part of the image: pymdeploy's and cargo's output, git\n.git\ntarget\nxtask/target\n.pym\n!.pym/dist\n"
    );
    // No tests of a running server and no /version route: none and no version check, each
    // said, rather than a default that fails at the first deploy.
    let config = std::str::from_utf8(&after["pym-config.yaml"]).unwrap();
    assert!(
        config.contains("\naccept_command: \"\"\n") && config.contains("\nverify_version: false\n"),
        "{config}"
    );
    assert!(
        r.stderr
            .contains("Decide accept_command: no testaccept/, so none for now")
            && r.stderr.contains("Decide verify_version: false for now"),
        "{}",
        r.stderr
    );
    let added: Vec<&str> = after
        .keys()
        .filter(|k| !before.contains_key(*k))
        .map(String::as_str)
        .collect();
    assert_eq!(
        added,
        [
            ".cargo/config.toml",
            ".dockerignore",
            "pym-config.schema.json",
            "pym-config.yaml",
            "xtask/Cargo.lock",
            "xtask/Cargo.toml",
            "xtask/src/main.rs"
        ]
    );

    // A second init finds the files and refuses, listing them, changing nothing.
    std::fs::write(
        dir.join("pym-config.yaml"),
        "name: legacy\ndeploy_target: docker\n# edited\n",
    )
    .unwrap();
    let edited = snapshot(&dir);
    let mut cmd = Command::new(pymdeploy_bin());
    cmd.args(["init", "--name", "legacy"]).current_dir(&dir);
    run(cmd)
        .assert_failed()
        .assert_stderr_has("init would overwrite 4 file(s)")
        .assert_stderr_has(
            "pym-config.yaml, xtask/Cargo.toml, xtask/src/main.rs, pym-config.schema.json",
        )
        .assert_stderr_has("--force");
    assert_eq!(snapshot(&dir), edited);

    let mut cmd = Command::new(pymdeploy_bin());
    cmd.args(["init", "--name", "legacy", "--force"])
        .current_dir(&dir);
    run(cmd).assert_ok();
    assert!(
        !std::fs::read_to_string(dir.join("pym-config.yaml"))
            .unwrap()
            .contains("# edited")
    );
    assert_eq!(
        std::fs::read_to_string(dir.join(".gitignore"))
            .unwrap()
            .matches("/.pym")
            .count(),
        1,
        "appended once"
    );
}

#[test]
fn a_dirty_tree_is_refused_unless_allowed() {
    let dir = temp_dir("dirty").join("svc");
    let mut cmd = Command::new(pymdeploy_bin());
    cmd.args(["new", "dirty", "--path"])
        .arg(&dir)
        .arg("--pymdeploy-path")
        .arg(crate::support::repo_root());
    run(cmd).assert_ok();
    let mut cmd = Command::new(pymdeploy_bin());
    cmd.arg("version").current_dir(&dir);
    let clean = run(cmd);
    let version = clean.assert_ok().stdout.trim().to_string();
    let sha = git(&dir, &["rev-parse", "HEAD"]);
    let re_ok = version.len() == "YYMMDD-HHMM-1-abcdef".len()
        && version.ends_with(&format!("-1-{}", &sha[..6]));
    assert!(re_ok, "{version}");

    std::fs::write(dir.join("scratch.txt"), "x").unwrap();
    let mut cmd = Command::new(pymdeploy_bin());
    cmd.arg("build").current_dir(&dir);
    run(cmd)
        .assert_failed()
        .assert_stderr_has("uncommitted changes: scratch.txt")
        .assert_stderr_has("--allow-dirty");
    let mut cmd = Command::new(pymdeploy_bin());
    cmd.args(["version", "--allow-dirty"]).current_dir(&dir);
    let dirty = run(cmd);
    assert_eq!(dirty.assert_ok().stdout.trim(), format!("{version}-dirty"));
}
