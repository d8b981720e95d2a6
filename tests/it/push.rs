//! `push` against a real registry, with each source of credentials.

use base64::Engine;

use crate::support::{Registry, TestService, need_engine, temp_dir};

#[test]
#[cfg_attr(
    pym_no_engine,
    ignore = "no Docker engine here: run .ci/setup (CI runs it)"
)]
fn push_finds_credentials_where_docker_keeps_them_and_fails_clearly_without() {
    need_engine();
    let reg = Registry::start();
    let svc = TestService::new("push");
    svc.edit(
        "pym-config.yaml",
        "# docker_repo: registry.example.com/team",
        &format!("docker_repo: {}/team", reg.host),
    )
    .commit("push to the test registry");
    svc.pym(&["build"]).assert_ok();
    let version = svc.pym(&["version"]).stdout.trim().to_string();
    let repo = format!("team/{}", svc.name);
    // The machine's own Docker config is never read: each case names its own.
    let empty = temp_dir("dockercfg-empty");
    let empty = empty.to_str().unwrap();

    let r = svc.pym_env(&["push"], &[("DOCKER_CONFIG", empty)]);
    r.assert_failed()
        .assert_stderr_has(&format!(
            "registry {} refused an anonymous push (no credentials found)",
            reg.host
        ))
        .assert_stderr_has("hint: check the password, or log in again with `docker login");

    let wrong = "not-the-password-4242";
    let r = svc.pym_env(
        &["push"],
        &[
            ("DOCKER_CONFIG", empty),
            ("PYM_REGISTRY_USER", &reg.user),
            ("PYM_REGISTRY_PASSWORD", wrong),
        ],
    );
    r.assert_failed().assert_stderr_has(&format!(
        "refused the credentials of `{}` from PYM_REGISTRY_USER and PYM_REGISTRY_PASSWORD",
        reg.user
    ));
    assert!(
        !r.stderr.contains(wrong) && !r.stdout.contains(wrong),
        "the password was printed:\n{}",
        r.stderr
    );
    assert_eq!(
        reg.manifest_status(&repo, &version),
        "404",
        "nothing reached the registry"
    );

    let r = svc.pym_env(
        &["push"],
        &[
            ("DOCKER_CONFIG", empty),
            ("PYM_REGISTRY_USER", &reg.user),
            ("PYM_REGISTRY_PASSWORD", &reg.password),
        ],
    );
    r.assert_ok().assert_stderr_has("layers pushed");
    r.assert_hides(&[&reg.password]);
    assert_eq!(reg.manifest_status(&repo, &version), "200");

    // Unchanged: says so.
    let r = svc.pym_env(
        &["push"],
        &[
            ("DOCKER_CONFIG", empty),
            ("PYM_REGISTRY_USER", &reg.user),
            ("PYM_REGISTRY_PASSWORD", &reg.password),
        ],
    );
    r.assert_ok().assert_stderr_has("unchanged: all");

    // `auths`, as `docker login` writes it.
    let cfg = temp_dir("dockercfg-auths");
    let auth =
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", reg.user, reg.password));
    std::fs::write(
        cfg.join("config.json"),
        format!(r#"{{"auths": {{"{}": {{"auth": "{auth}"}}}}}}"#, reg.host),
    )
    .unwrap();
    svc.pym_env(&["push"], &[("DOCKER_CONFIG", cfg.to_str().unwrap())])
        .assert_ok()
        .assert_stderr_has("unchanged");

    // A credential helper, named in `credHelpers` and found on PATH.
    let cfg = temp_dir("dockercfg-helper");
    let bin = cfg.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::write(
        cfg.join("config.json"),
        format!(
            r#"{{"credHelpers": {{"{}": "pymit"}}, "credsStore": "absent"}}"#,
            reg.host
        ),
    )
    .unwrap();
    let helper = bin.join("docker-credential-pymit");
    let script = format!(
        "#!/bin/sh\nread host\n[ \"$1\" = get ] && [ \"$host\" = \"{}\" ] || exit 1\necho '{{\"ServerURL\":\"{}\",\"Username\":\"{}\",\"Secret\":\"{}\"}}'\n",
        reg.host, reg.host, reg.user, reg.password
    );
    std::fs::write(&helper, script).unwrap();
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&helper)
        .status()
        .unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    svc.pym_env(
        &["push"],
        &[("DOCKER_CONFIG", cfg.to_str().unwrap()), ("PATH", &path)],
    )
    .assert_ok()
    .assert_stderr_has("unchanged");

    // Precedence, each source shadowing the next, shown by a wrong password in the one
    // that must lose: `credHelpers` over `auths`...
    let bad_auth =
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{wrong}", reg.user));
    let all = temp_dir("dockercfg-all");
    std::fs::write(all.join("config.json"), format!(r#"{{"credHelpers": {{"{h}": "pymit"}}, "auths": {{"{h}": {{"auth": "{bad_auth}"}}}}, "credsStore": "absent"}}"#, h = reg.host)).unwrap();
    svc.pym_env(
        &["push"],
        &[("DOCKER_CONFIG", all.to_str().unwrap()), ("PATH", &path)],
    )
    .assert_ok();
    // ...`auths` over `credsStore` (a right helper loses to a wrong `auths` entry)...
    std::fs::write(
        all.join("config.json"),
        format!(
            r#"{{"auths": {{"{h}": {{"auth": "{bad_auth}"}}}}, "credsStore": "pymit"}}"#,
            h = reg.host
        ),
    )
    .unwrap();
    let r = svc.pym_env(
        &["push"],
        &[("DOCKER_CONFIG", all.to_str().unwrap()), ("PATH", &path)],
    );
    r.assert_failed().assert_stderr_has("`auths` in");
    assert!(
        !r.stderr.contains(wrong),
        "the password was printed:\n{}",
        r.stderr
    );
    // ...and the environment over the whole Docker config.
    let r = svc.pym_env(
        &["push"],
        &[
            ("DOCKER_CONFIG", cfg.to_str().unwrap()),
            ("PATH", &path),
            ("PYM_REGISTRY_USER", &reg.user),
            ("PYM_REGISTRY_PASSWORD", wrong),
        ],
    );
    r.assert_failed()
        .assert_stderr_has("from PYM_REGISTRY_USER and PYM_REGISTRY_PASSWORD");
}

#[test]
#[cfg_attr(
    pym_no_engine,
    ignore = "no Docker engine here: run .ci/setup (CI runs it)"
)]
fn push_to_an_unreachable_registry_is_one_error_with_a_hint() {
    need_engine();
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let svc = TestService::new("pushdown");
    svc.edit(
        "pym-config.yaml",
        "# docker_repo: registry.example.com/team",
        &format!("docker_repo: 127.0.0.1:{port}/team"),
    )
    .commit("an absent registry");
    svc.pym(&["build"]).assert_ok();
    let empty = temp_dir("dockercfg-none");
    svc.pym_env(&["push"], &[("DOCKER_CONFIG", empty.to_str().unwrap())])
        .assert_failed()
        .assert_stderr_has(&format!("cannot reach registry 127.0.0.1:{port}"))
        .assert_stderr_has("hint: check that the registry runs");
}

#[test]
#[cfg_attr(
    pym_no_engine,
    ignore = "no Docker engine here: run .ci/setup (CI runs it)"
)]
fn a_deploy_resumed_where_its_image_is_not_builds_it_again_before_the_push() {
    need_engine();
    // A CI job re-run on a fresh runner: the journal comes back (the Actions cache), the
    // image built by the first attempt does not.
    let reg = Registry::start();
    let svc = TestService::new("resumepush");
    svc.edit(
        "pym-config.yaml",
        "# docker_repo: registry.example.com/team",
        &format!("docker_repo: {}/team", reg.host),
    )
    .commit("push to the test registry");
    let empty = temp_dir("dockercfg-resume");
    let empty = empty.to_str().unwrap();
    let to_push = [
        "deploy",
        "--no-test",
        "--skip",
        "accept-local",
        "--to",
        "push",
    ];
    let r = svc.pym_env(
        &to_push,
        &[
            ("DOCKER_CONFIG", empty),
            ("PYM_REGISTRY_USER", &reg.user),
            ("PYM_REGISTRY_PASSWORD", "not-the-password-4242"),
        ],
    );
    r.assert_failed()
        .assert_stderr_has("refused the credentials");
    let version = svc.pym(&["version"]).stdout.trim().to_string();
    let built = svc.images();
    assert!(!built.is_empty(), "the first attempt built nothing");
    for image in &built {
        crate::support::docker(&["rmi", "-f", image]);
    }
    let mut env = vec![("DOCKER_CONFIG", empty)];
    env.extend(reg.env());
    let r = svc.pym_env(&[&to_push[..], &["--resume"]].concat(), &env);
    r.assert_ok()
        .assert_stderr_has("Rebuilding")
        .assert_stderr_has("it is not in this engine");
    assert_eq!(
        reg.manifest_status(&format!("team/{}", svc.name), &version),
        "200",
        "the resumed push did not reach the registry:\n{}",
        r.stderr
    );
}
