//! The docker target on a remote engine: `DOCKER_HOST=ssh://...` through a real OpenSSH
//! server (on a loopback port, in front of this machine's engine), as a team deploying
//! from a laptop or CI to one server does; and Docker contexts.

use crate::support::*;

#[test]
fn deploy_and_rollback_over_ssh_and_clear_errors_for_a_wrong_key_or_host() {
    if !docker_available() {
        return;
    }
    let sshd = Sshd::start();
    let reg = Registry::start();
    let svc = TestService::new_lang("ssh", "python");
    let (live, _) = svc.for_docker_target(&reg);
    let host = sshd.docker_host();
    let ssh = sshd.ssh_command("client_key");
    let [user, password] = reg.env();
    let pym = |args: &[&str], docker_host: &str, ssh_command: &str| {
        svc.pym_env(args, &[user, password, ("DOCKER_HOST", docker_host), ("PYM_SSH_COMMAND", ssh_command)])
    };

    // A wrong key and an unreachable host: one clear error each, before the first step
    // (the unit tests do not run), and nothing left on the engine.
    let stranger = sshd.ssh_command("stranger_key");
    let run = pym(&["deploy"], &host, &stranger);
    run.assert_failed().assert_stderr_has("no Docker engine reachable at ssh://root@127.0.0.1").assert_stderr_has("Permission denied");
    assert!(!run.stderr.contains("passed"), "the unit tests ran before the engine was found unreachable:\n{}", run.stderr);
    let nowhere = format!("ssh://root@127.0.0.1:{}", free_port());
    pym(&["deploy"], &nowhere, &ssh)
        .assert_failed()
        .assert_stderr_has("Connection refused")
        .assert_stderr_has("hint:");
    assert!(svc.containers().is_empty(), "{:?}", svc.containers());

    // The whole pipeline through ssh: every engine call goes through the server.
    let before = sshd.logins();
    pym(&["deploy"], &host, &ssh).assert_ok();
    assert!(sshd.logins() > before, "the deploy never logged in over ssh:\n{}", sshd.log());
    let v1 = svc.pym(&["version"]).stdout.trim().to_string();
    assert_eq!(version_on(live).expect("live answers")["version"], v1.as_str());

    svc.edit("server.py", "app = Flask(__name__)", "app = Flask(__name__)  # v2").commit("v2");
    pym(&["deploy", "--no-test", "--skip", "accept-local"], &host, &ssh).assert_ok();
    let v2 = svc.pym(&["version"]).stdout.trim().to_string();
    assert_eq!(version_on(live).unwrap()["version"], v2.as_str());
    pym(&["rollback"], &host, &ssh).assert_ok().assert_stderr_has(&format!("{v1} live again (was {v2})"));
    assert_eq!(version_on(live).unwrap()["version"], v1.as_str());
    let status = pym(&["status"], &host, &ssh);
    status.assert_ok();
    assert!(status.stdout.contains(&v1), "{}", status.stdout);
}

#[test]
fn a_docker_context_names_the_engine() {
    if !docker_available() {
        return;
    }
    // A context made by the docker CLI itself, pointing at a socket that does not exist:
    // pymdeploy must use it (and say so), not fall back to the local engine.
    let config = temp_dir("ctx");
    let made = std::process::Command::new("docker")
        .args(["context", "create", "elsewhere", "--docker", "host=unix:///nonexistent/docker.sock"])
        .env("DOCKER_CONFIG", &config)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let svc = TestService::new("ctx");
    let config_s = config.display().to_string();
    svc.pym_env(&["status"], &[("DOCKER_CONFIG", config_s.as_str()), ("DOCKER_CONTEXT", "elsewhere")])
        .assert_failed()
        .assert_stderr_has("unix:///nonexistent/docker.sock (context elsewhere)");
    // `docker context use` writes currentContext to config.json: the same engine.
    let used = std::process::Command::new("docker").args(["context", "use", "elsewhere"]).env("DOCKER_CONFIG", &config).output().unwrap();
    assert!(used.status.success());
    svc.pym_env(&["status"], &[("DOCKER_CONFIG", config_s.as_str())]).assert_failed().assert_stderr_has("(context elsewhere)");
    // DOCKER_HOST wins over the context, as with the docker CLI.
    svc.pym_env(&["status"], &[("DOCKER_CONFIG", config_s.as_str()), ("DOCKER_HOST", "unix:///var/run/docker.sock")]).assert_ok();
    let _ = std::fs::remove_dir_all(&config);
}
