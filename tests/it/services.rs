//! Real services, not only the demo: README's commands as a newcomer types them, a
//! Python service from `new --lang python`, `init` in repositories pymdeploy did not
//! write, the service contract checked before push, and every mistake that needs no
//! engine refused before the first step.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{
    Registry, TestService, engine_here, need_engine, pymdeploy_bin, repo_root, run, temp_dir,
    version_on,
};

/// The commands of README's "Use" block, one per line, comments and the install line
/// left out (the install is the binary this test run built, put first on PATH).
fn readme_use_commands() -> Vec<String> {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let section = readme
        .split("\n## Use\n")
        .nth(1)
        .expect("README has a `## Use` section");
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("\n```").next())
        .expect("`## Use` opens with a sh block");
    block
        .lines()
        .map(|l| l.split(" #").next().unwrap().trim().to_string())
        .filter(|l| !l.is_empty() && !l.starts_with("cargo install"))
        .collect()
}

#[test]
#[cfg_attr(
    pym_no_engine,
    ignore = "no Docker engine here: run .ci/setup (CI runs it)"
)]
fn readme_use_commands_deploy_a_new_service_verbatim() {
    need_engine();
    let commands = readme_use_commands();
    assert!(
        commands.iter().any(|c| c.starts_with("pymdeploy new ")),
        "{commands:?}"
    );
    assert!(
        commands.iter().any(|c| c == "cargo xtask deploy"),
        "{commands:?}"
    );
    let dir = temp_dir("readme");
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(pymdeploy_bin(), bin.join("pymdeploy")).unwrap();
    // README's commands verbatim but for the service's name: `hello` becomes a name of
    // this run's own, so a `hello` already on this engine (the demo's, a user's) is
    // neither refused against nor touched. Removed, by its identity, at the end.
    let readme_name = commands
        .iter()
        .find_map(|c| c.strip_prefix("pymdeploy new "))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let name = format!("readme-{}", std::process::id());
    let commands: Vec<String> = commands
        .iter()
        .map(|c| match c.split_once(' ') {
            Some(("cd", d)) if d == readme_name => format!("cd {name}"),
            _ => c.replace(
                &format!("pymdeploy new {readme_name}"),
                &format!("pymdeploy new {name}"),
            ),
        })
        .collect();
    assert!(
        commands.contains(&format!("cd {name}")),
        "README's block no longer goes into the service it makes: {commands:?}"
    );
    let _svc = TestService {
        name: name.clone(),
        root: dir.join(&name),
    };
    let script = format!("set -euo pipefail\n{}\n", commands.join("\n"));
    let mut cmd = Command::new("bash");
    cmd.arg("-c").arg(&script).current_dir(&dir).env(
        "PATH",
        format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
    );
    let r = run(cmd);
    r.assert_ok();
    for step in [
        "test",
        "build",
        "accept-local",
        "push",
        "stage",
        "accept-staging",
        "promote",
        "accept-live",
    ] {
        assert!(
            r.stderr
                .lines()
                .any(|l| l.starts_with(&format!("  {step} ")) && l.contains(" ok ")),
            "{step} not ok in the summary:\n{}",
            r.stderr
        );
    }
    // The block ends by asking live for its version: the new service, live.
    assert!(
        r.stdout
            .contains(&format!("\"name\":\"{name}\",\"pym_env\":\"live\"")),
        "live did not answer as this service, live: {}",
        r.stdout
    );
    assert!(
        r.stderr.contains("Using the pymdeploy checkout at"),
        "{}",
        r.stderr
    );
}

#[test]
#[cfg_attr(
    pym_no_engine,
    ignore = "no Docker engine here: run .ci/setup (CI runs it)"
)]
fn a_new_python_service_goes_live_through_all_eight_steps() {
    need_engine();
    let reg = Registry::start();
    let svc = TestService::new_lang("python", "python");
    assert!(svc.path("server.py").is_file() && svc.path("testaccept/test_accept.py").is_file());
    assert!(
        !svc.read("pym-config.yaml").contains("rust_binary"),
        "a Python service compiles nothing on the host"
    );
    let (live, staging) = svc.for_docker_target(&reg);
    let r = svc.xtask_env(&["deploy"], &reg.env());
    r.assert_ok()
        // pytest's counts, read from its closing line: 4 unit tests, 2 acceptance tests.
        .assert_stderr_has("4 tests passed (python3 -m pytest -q test)")
        .assert_stderr_has("2 acceptance tests passed on 127.0.0.1:");
    let version = svc.pym(&["version"]).stdout.trim().to_string();
    let on_live = version_on(live).expect("live answers");
    assert_eq!(
        (on_live["version"].as_str(), on_live["pym_env"].as_str()),
        (Some(version.as_str()), Some("live"))
    );
    assert_eq!(
        version_on(staging).expect("staging answers")["pym_env"],
        "staging"
    );
    assert_eq!(
        reg.manifest_status(&format!("team/{}", svc.name), &version),
        "200",
        "the image is in the registry"
    );
}

#[test]
#[cfg_attr(
    pym_no_engine,
    ignore = "no Docker engine here: run .ci/setup (CI runs it)"
)]
fn init_fits_a_flask_service_it_did_not_write_and_deploys_it() {
    need_engine();
    let svc = TestService::from_fixture("flask-service", "flask");
    let before_gitignore = svc.read(".gitignore");
    let head = || {
        let out = Command::new("git")
            .args(["rev-parse", "HEAD"])
            .current_dir(&svc.root)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let head_before = head();
    let r = svc.pym(&["init", "--name", &svc.name]);
    r.assert_ok()
        .assert_stderr_has(
            "Detected Python service (requirements.txt, test/, testaccept/, Dockerfile, a /ping route)",
        )
        .assert_stderr_has("Appended /.pym, /xtask/target to .gitignore")
        .assert_stderr_has("init commits nothing");
    let config = svc.read("pym-config.yaml");
    for want in [
        "test_command: python3 -m pytest -q test\n",
        "accept_command: python3 -m pytest -q testaccept\n",
        "port: 5000\n",
    ] {
        assert!(config.contains(want), "{want:?} missing:\n{config}");
    }
    assert!(!config.contains("rust_binary:"), "{config}");
    assert!(
        svc.read(".gitignore").starts_with(&before_gitignore),
        "the user's lines stay first"
    );
    assert!(
        svc.path("xtask/Cargo.lock").is_file(),
        "the lock file is written, so the first deploy finds a clean tree"
    );
    // What the user must still decide is said, and nothing else is: this service has its
    // tests, its health path and its version path.
    assert!(
        r.stderr.contains("Decide docker_repo")
            && r.stderr
                .contains("Decide publish_ip, live_port, staging_port"),
        "{}",
        r.stderr
    );
    assert_eq!(
        r.stderr.matches("      Decide ").count(),
        2,
        "only the registry and the ports:\n{}",
        r.stderr
    );
    // Nothing is committed by init.
    let status = Command::new("git")
        .args(["status", "--porcelain"])
        .current_dir(&svc.root)
        .output()
        .unwrap();
    assert_eq!(head(), head_before, "init made a commit");
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("?? pym-config.yaml"),
        "init left its files for the user to commit: {}",
        String::from_utf8_lossy(&status.stdout)
    );

    // The user decides the ports, commits, and deploys twice: the second deploy must not
    // find a dirty tree (.pym/ is ignored).
    svc.commit("add the pymdeploy pipeline");
    let (live, _) = svc.on_free_ports();
    let r = svc.xtask(&["deploy"]);
    r.assert_ok()
        .assert_stderr_has("3 tests passed")
        .assert_stderr_has("3 acceptance tests passed on 127.0.0.1:");
    assert_eq!(version_on(live).expect("live answers")["pym_env"], "live");
    svc.xtask(&["deploy"]).assert_ok();
}

/// A Rust service with a Dockerfile of its own that compiles in a build stage.
fn axum_like_service() -> TestService {
    let dir = temp_dir("multistage");
    let name = format!("it-multistage-{}", std::process::id());
    let root = dir.join(&name);
    std::fs::create_dir_all(root.join("src")).unwrap();
    std::fs::create_dir_all(root.join(".cargo")).unwrap();
    std::fs::write(
        root.join("Cargo.toml"),
        format!("[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n"),
    )
    .unwrap();
    std::fs::write(
        root.join("src/main.rs"),
        "fn main() { println!(\"/health\"); }\n",
    )
    .unwrap();
    std::fs::write(root.join("Dockerfile"), "FROM rust:1.85 AS build\nWORKDIR /src\nCOPY . .\nRUN cargo build --release\n\nFROM debian:bookworm-slim\nCOPY --from=build /src/target/release/api /usr/local/bin/api\nEXPOSE 3000\nCMD [\"api\"]\n").unwrap();
    std::fs::write(
        root.join(".cargo/config.toml"),
        "# the team's settings\n[build]\nincremental = true\n\n[alias]\nt = \"test --all\"\n",
    )
    .unwrap();
    let svc = TestService { name, root };
    assert!(
        Command::new("git")
            .args(["init", "-q"])
            .current_dir(&svc.root)
            .status()
            .unwrap()
            .success()
    );
    svc.commit("an existing Rust service");
    svc
}

#[test]
#[cfg_attr(
    pym_no_engine,
    ignore = "no Docker engine here: run .ci/setup (CI runs it)"
)]
fn init_in_a_rust_service_with_a_multi_stage_dockerfile_compiles_nothing_on_the_host() {
    need_engine();
    let svc = axum_like_service();
    let r = svc.pym(&["init"]);
    r.assert_ok()
        .assert_stderr_has("Merged .cargo/config.toml (the `xtask` alias)")
        .assert_stderr_has("Wrote .gitignore")
        .assert_stderr_has("the Dockerfile builds the binary itself (2 stages)");
    let cargo_config = svc.read(".cargo/config.toml");
    assert!(
        cargo_config.starts_with("# the team's settings\n[build]\nincremental = true\n"),
        "{cargo_config}"
    );
    assert!(
        cargo_config.contains("t = \"test --all\"")
            && cargo_config.contains("xtask = \"run --config build.build-dir="),
        "{cargo_config}"
    );
    let config = svc.read("pym-config.yaml");
    assert!(
        config.contains("test_command: cargo test\n") && config.contains("port: 3000\n"),
        "{config}"
    );
    assert!(!config.contains("\nrust_binary:"), "{config}");
    assert_eq!(
        svc.read(".gitignore"),
        "# pymdeploy's build output\n/.pym\n/xtask/target\n"
    );

    // A second init refuses, lists what it would overwrite, and changes nothing.
    let snapshot = |svc: &TestService| {
        [
            "pym-config.yaml",
            ".cargo/config.toml",
            ".gitignore",
            "xtask/Cargo.toml",
        ]
        .map(|f| svc.read(f))
    };
    let before = snapshot(&svc);
    svc.pym(&["init"])
        .assert_failed()
        .assert_stderr_has("init would overwrite 4 file(s)")
        .assert_stderr_has(
            "pym-config.yaml, xtask/Cargo.toml, xtask/src/main.rs, pym-config.schema.json",
        );
    assert_eq!(snapshot(&svc), before);

    // Init read the service: its health route, no tests of a running server, no
    // /version route, and a build context without the build output.
    for want in [
        "health_path: /health\n",
        "accept_command: \"\"\n",
        "verify_version: false\n",
    ] {
        assert!(config.contains(want), "{want:?} missing:\n{config}");
    }
    assert!(
        svc.read(".dockerignore")
            .contains("\ntarget\nxtask/target\n.pym\n!.pym/dist\n")
    );

    // The engine has not got the build stage's base and cannot pull it: said before the
    // first step, by the dry run too, with the Dockerfile's line and the way out.
    svc.commit("add the pipeline");
    for args in [&["deploy", "--dry-run"][..], &["deploy"][..]] {
        let r = svc.pym(args);
        r.assert_failed()
            .assert_stderr_has("error: `build` cannot run, so nothing was started: the engine at ")
            .assert_stderr_has(" has not got these base images and cannot pull them:\n    Dockerfile:1: `rust:1.85`: ")
            .assert_stderr_has("hint: base the Dockerfile on an image the engine has (")
            .assert_stderr_has("a Rust service can compile on this machine instead: set `rust_binary`");
        assert!(
            !r.stderr.contains("bookworm-slim`:"),
            "a base the engine has is not listed: {}",
            r.stderr
        );
        assert!(
            !r.stderr.contains("==> test"),
            "a step started: {}",
            r.stderr
        );
    }
    assert!(svc.containers().is_empty() && svc.images().is_empty());

    // Asked to compile a binary the Dockerfile never copies, build refuses before cargo.
    svc.edit(
        "pym-config.yaml",
        "test_command: cargo test\n",
        "test_command: cargo test\nrust_binary: api\n",
    )
    .commit("compile on the host");
    let r = svc.pym(&["build"]);
    r.assert_failed()
        .assert_stderr_has("Dockerfile does not copy .pym/dist/api, the binary `rust_binary: api` compiles on the host (it has 2 stages: it builds the service itself)")
        .assert_stderr_has("hint: remove `rust_binary`");
    assert!(!r.stderr.contains("Compiling"), "cargo ran: {}", r.stderr);
    assert!(!svc.path(".pym/dist/api").exists());
}

#[test]
#[cfg_attr(
    pym_no_engine,
    ignore = "no Docker engine here: run .ci/setup (CI runs it)"
)]
fn a_service_without_a_version_path_fails_before_push_and_a_204_health_counts() {
    need_engine();
    let svc = TestService::new_lang("contract", "python");
    // Health answers 204 (healthy: any 2xx), and there is no /version.
    svc.edit(
        "server.py",
        "    return jsonify({})\n",
        "    return \"\", 204\n",
    )
    .edit(
        "server.py",
        "@app.get(\"/version\")",
        "@app.get(\"/about\")",
    )
    .commit("a service that misses part of the contract");
    let r = svc.pym(&["deploy", "--from", "build"]);
    r.assert_failed()
        .assert_stderr_has("healthy after")
        .assert_stderr_has("the service answers /version with 404")
        .assert_stderr_has(
            "hint: serve JSON {\"version\": $PYM_VERSION, \"pym_env\": $PYM_ENV} at /version",
        )
        .assert_stderr_has("step `accept-local` failed");
    assert!(
        r.stderr
            .lines()
            .any(|l| l.trim_start().starts_with("push") && l.contains("skipped")),
        "{}",
        r.stderr
    );
    // The 204 ended the health wait: well within health_timeout (60 s), whatever the
    // machine's load made of the build around it.
    let waited: f64 = r
        .stderr
        .split("healthy after ")
        .nth(1)
        .and_then(|rest| rest.split('s').next())
        .and_then(|n| n.parse().ok())
        .expect("the wait's length is said");
    assert!(
        waited < 30.0,
        "the health wait did not end at the 204: {waited}s"
    );
    assert!(
        svc.containers().is_empty(),
        "left behind: {:?}",
        svc.containers()
    );

    // Told to rely on health alone, with acceptance tests of its own that print no
    // counts, the same service passes accept-local: "acceptance tests passed", no "0".
    let text = svc.read("pym-config.yaml");
    let text = text.replace(
        "accept_command: python3 -m pytest -q testaccept\n",
        "accept_command: python3 -c \"print('checked by hand')\"\n",
    );
    svc.write("pym-config.yaml", &format!("{text}verify_version: false\n"))
        .commit("no version check");
    let r = svc.pym(&["deploy", "--from", "build", "--to", "accept-local"]);
    r.assert_ok()
        .assert_stderr_has("checked by hand")
        .assert_stderr_has(", acceptance tests passed)");
    assert!(
        svc.containers().is_empty(),
        "left behind: {:?}",
        svc.containers()
    );
}

/// A mistake made to a service: (what it is, how it is made, what the error says).
type Mistake<'a> = (&'a str, Box<dyn Fn(&TestService)>, &'a str);

#[test]
fn mistakes_that_need_no_engine_are_refused_before_the_first_step() {
    let svc = TestService::new("early");
    let config = svc.read("pym-config.yaml");
    let dockerfile = svc.read("Dockerfile");
    // A kubeconfig of this test's own, with one context that is not the one asked for.
    let kubeconfig = svc.path("kubeconfig.yaml");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: 'https://127.0.0.1:1'}\nusers:\n- name: u\n  user: {token: t}\ncontexts:\n- name: pym-it-somewhere\n  context: {cluster: c, user: u}\ncurrent-context: pym-it-somewhere\n",
    )
    .unwrap();
    let mut cases: Vec<Mistake> = Vec::new();
    #[cfg(feature = "aws-beanstalk")]
    cases.push((
        "a canary on a target that cannot split live's traffic",
        Box::new(|s| {
            s.edit("pym-config.yaml", "deploy_target: docker", "deploy_target: aws-beanstalk\ndocker_repo: registry.example.com/team\naws_region: eu-west-1");
            s.write("pym-config.live.yaml", "rollout: {strategy: canary}\n");
        }),
        "the aws-beanstalk target cannot split live's traffic",
    ));
    cases.push((
        "a Prometheus for a target that does not read one",
        Box::new(|s| {
            s.write(
                "pym-config.live.yaml",
                "rollout: {strategy: canary, prometheus_url: 'http://127.0.0.1:9090'}\n",
            );
        }),
        "`prometheus_url` is for the gke target, and `deploy_target` is docker",
    ));
    cases.push((
        "canary steps that do not rise",
        Box::new(|s| {
            s.write(
                "pym-config.live.yaml",
                "rollout: {strategy: canary, steps: [50, 20]}\n",
            );
        }),
        "pym-config.live.yaml:1: key `rollout`: `steps` [50, 20] does not rise",
    ));
    #[cfg(feature = "gke")]
    cases.push((
        "a cluster the kubeconfig lacks",
        Box::new(|s| {
            s.edit("pym-config.yaml", "deploy_target: docker", "deploy_target: kubernetes\ndocker_repo: registry.example.com/team\nk8s_context: pym-it-nowhere");
        }),
        "the kubeconfig has no context `pym-it-nowhere`",
    ));
    cases.extend::<Vec<Mistake>>(vec![
        (
            "an unset secret",
            Box::new(|s| {
                s.edit(
                    "pym-config.yaml",
                    "env_secrets: []",
                    "env_secrets: [PYM_IT_EARLY_UNSET]",
                );
            }),
            "env_secrets not set in the environment: PYM_IT_EARLY_UNSET",
        ),
        (
            "a bad key in the live overlay",
            Box::new(|s| {
                s.write("pym-config.live.yaml", "live_prot: 80\n");
            }),
            "pym-config.live.yaml:1:1: unknown key `live_prot`",
        ),
        (
            "an overlay nobody reads",
            Box::new(|s| {
                s.write("pym-config.prod.yaml", "port: 80\n");
            }),
            "`prod` is not an environment",
        ),
        (
            "one port for staging and live",
            Box::new(|s| {
                s.write("pym-config.staging.yaml", "staging_port: 8080\n");
            }),
            "`staging_port` and `live_port` are both 8080",
        ),
        (
            "a key of another target",
            Box::new(|s| {
                s.edit(
                    "pym-config.yaml",
                    "port: 8080",
                    "port: 8080\naws_region: eu-west-1",
                );
            }),
            "key `aws_region` is for the aws-beanstalk target",
        ),
        (
            "a cloud target without a registry",
            Box::new(|s| {
                s.edit(
                    "pym-config.yaml",
                    "deploy_target: docker",
                    "deploy_target: aws-beanstalk",
                );
            }),
            "the aws-beanstalk target needs `docker_repo`",
        ),
        (
            "a tab",
            Box::new(|s| {
                s.edit("pym-config.yaml", "env_secrets: []", "env_secrets:\n\t- A");
            }),
            "YAML forbids tabs for indentation",
        ),
        (
            "a binary the Dockerfile does not copy",
            Box::new(|s| {
                let name = s.name.clone();
                s.edit(
                    "Dockerfile",
                    &format!("COPY .pym/dist/{name} /usr/local/bin/{name}"),
                    "COPY src/ /src/",
                );
            }),
            "does not copy .pym/dist/",
        ),
    ]);
    let env = [("KUBECONFIG", kubeconfig.to_str().unwrap())];
    for (what, break_it, message) in cases {
        svc.write("pym-config.yaml", &config)
            .write("Dockerfile", &dockerfile);
        for overlay in [
            "pym-config.live.yaml",
            "pym-config.prod.yaml",
            "pym-config.staging.yaml",
        ] {
            let _ = std::fs::remove_file(svc.path(overlay));
        }
        break_it(&svc);
        let started = Instant::now();
        let r = svc.pym_env(&["deploy", "--allow-dirty"], &env);
        let took = started.elapsed();
        r.assert_failed().assert_stderr_has(message);
        assert!(
            !r.stderr.contains("==> test"),
            "{what}: a step started:\n{}",
            r.stderr
        );
        assert!(took < Duration::from_secs(10), "{what}: took {took:?}");
        if engine_here() {
            assert!(
                svc.images().is_empty() && svc.containers().is_empty(),
                "{what}: something was built or started"
            );
        }
        // The dry run refuses too: it would print a plan that cannot run.
        if !message.contains("YAML") {
            svc.pym_env(&["deploy", "--allow-dirty", "--dry-run"], &env)
                .assert_failed()
                .assert_stderr_has(message);
        }
    }
}
