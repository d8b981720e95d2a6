//! The docker target on a remote engine: `DOCKER_HOST=ssh://...` through a real OpenSSH
//! server (on a loopback port, in front of this machine's engine), as a team deploying
//! from a laptop or CI to one server does; and Docker contexts.

use crate::support::*;

#[test]
#[cfg_attr(
    pym_no_engine,
    ignore = "no Docker engine here: run .ci/setup (CI runs it)"
)]
fn deploy_and_rollback_over_ssh_and_clear_errors_for_a_wrong_key_or_host() {
    need_engine();
    let sshd = Sshd::start();
    let reg = Registry::start();
    let svc = TestService::new_lang("ssh", "python");
    let (live, _) = svc.for_docker_target(&reg);
    let host = sshd.docker_host();
    let ssh = sshd.ssh_command("client_key");
    let [user, password] = reg.env();
    let pym = |args: &[&str], docker_host: &str, ssh_command: &str| {
        svc.pym_env(
            args,
            &[
                user,
                password,
                ("DOCKER_HOST", docker_host),
                ("PYM_SSH_COMMAND", ssh_command),
            ],
        )
    };

    // A wrong key and an unreachable host: one clear error each, before the first step
    // (the unit tests do not run), and nothing left on the engine.
    let stranger = sshd.ssh_command("stranger_key");
    let run = pym(&["deploy"], &host, &stranger);
    run.assert_failed()
        .assert_stderr_has("cannot run, so nothing was started: no Docker engine reachable at ssh://root@127.0.0.1")
        .assert_stderr_has("Permission denied");
    assert!(
        !run.stderr.contains("==> test"),
        "the unit tests ran before the engine was found unreachable:\n{}",
        run.stderr
    );
    let nowhere = format!("ssh://root@127.0.0.1:{}", free_port());
    pym(&["deploy"], &nowhere, &ssh)
        .assert_failed()
        .assert_stderr_has(&format!("no Docker engine reachable at {nowhere}: "))
        .assert_stderr_has("Connection refused")
        .assert_stderr_has("docker version` works from this machine");
    assert!(svc.containers().is_empty(), "{:?}", svc.containers());

    // A proxy image made once and pushed, as a team deploying from a Mac or to an arm64
    // server does (`proxy_image`): the engine pulls it and the live proxy runs it.
    let made = pym(
        &["proxy-image", "--push", &format!("{}/tools", reg.host)],
        &host,
        &ssh,
    );
    made.assert_ok();
    let proxy_image = made.stdout.trim().to_string();
    assert!(
        proxy_image.starts_with(&format!("{}/tools/pym-proxy:", reg.host)),
        "{proxy_image}"
    );
    docker(&["rmi", &proxy_image]);
    svc.edit(
        "pym-config.yaml",
        "drain_seconds: 10",
        &format!("drain_seconds: 10\nproxy_image: {proxy_image}"),
    )
    .commit("a pushed proxy image");

    // The whole pipeline through ssh: every engine call goes through the server.
    let before = sshd.logins();
    pym(&["deploy"], &host, &ssh).assert_ok();
    assert_eq!(
        docker(&[
            "inspect",
            "--format",
            "{{.Config.Image}}",
            &format!("pym-{}-proxy", svc.name)
        ]),
        proxy_image
    );
    assert!(
        sshd.logins() > before,
        "the deploy never logged in over ssh:\n{}",
        sshd.log()
    );
    let v1 = svc.pym(&["version"]).stdout.trim().to_string();
    assert_eq!(
        version_on(live).expect("live answers")["version"],
        v1.as_str()
    );

    svc.edit(
        "server.py",
        "app = Flask(__name__)",
        "app = Flask(__name__)  # v2",
    )
    .commit("v2");
    pym(
        &["deploy", "--no-test", "--skip", "accept-local"],
        &host,
        &ssh,
    )
    .assert_ok();
    let v2 = svc.pym(&["version"]).stdout.trim().to_string();
    assert_eq!(version_on(live).unwrap()["version"], v2.as_str());
    pym(&["rollback"], &host, &ssh)
        .assert_ok()
        .assert_stderr_has(&format!("{v1} live again (was {v2})"));
    assert_eq!(version_on(live).unwrap()["version"], v1.as_str());
    let status = pym(&["status"], &host, &ssh);
    status.assert_ok();
    assert!(
        status
            .stdout
            .lines()
            .any(|l| l.starts_with("live ") && l.contains(&v1)),
        "{}",
        status.stdout
    );
}

#[test]
#[cfg_attr(
    pym_no_engine,
    ignore = "no Docker engine here: run .ci/setup (CI runs it)"
)]
fn a_docker_context_names_the_engine() {
    need_engine();
    // A context made by the docker CLI itself, pointing at a socket that does not exist:
    // pymdeploy must use it (and say so), not fall back to the local engine.
    let config = temp_dir("ctx");
    let made = std::process::Command::new("docker")
        .args([
            "context",
            "create",
            "elsewhere",
            "--docker",
            "host=unix:///nonexistent/docker.sock",
        ])
        .env("DOCKER_CONFIG", &config)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let svc = TestService::new("ctx");
    let config_s = config.display().to_string();
    svc.pym_env(
        &["status"],
        &[
            ("DOCKER_CONFIG", config_s.as_str()),
            ("DOCKER_CONTEXT", "elsewhere"),
        ],
    )
    .assert_failed()
    .assert_stderr_has("unix:///nonexistent/docker.sock (context elsewhere)");
    // `docker context use` writes currentContext to config.json: the same engine.
    let used = std::process::Command::new("docker")
        .args(["context", "use", "elsewhere"])
        .env("DOCKER_CONFIG", &config)
        .output()
        .unwrap();
    assert!(used.status.success());
    svc.pym_env(&["status"], &[("DOCKER_CONFIG", config_s.as_str())])
        .assert_failed()
        .assert_stderr_has("(context elsewhere)");
    // DOCKER_HOST wins over the context, as with the docker CLI.
    svc.pym_env(
        &["status"],
        &[
            ("DOCKER_CONFIG", config_s.as_str()),
            ("DOCKER_HOST", "unix:///var/run/docker.sock"),
        ],
    )
    .assert_ok();
    let _ = std::fs::remove_dir_all(&config);
}

/// A TLS endpoint in front of the local engine that, like `dockerd --tlsverify`, requires
/// a client certificate signed by its CA: stunnel, with certificates made by openssl.
#[cfg(feature = "docker-tls")]
struct TlsEngine {
    port: u16,
    dir: std::path::PathBuf,
    child: std::process::Child,
}

#[cfg(feature = "docker-tls")]
impl TlsEngine {
    fn start() -> TlsEngine {
        let dir = temp_dir("tls-engine");
        let sh = |script: &str| {
            let out = std::process::Command::new("sh")
                .arg("-ec")
                .arg(script)
                .current_dir(&dir)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{script}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        sh(
            "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=pym-test-ca -keyout ca-key.pem -out ca.pem 2>/dev/null",
        );
        sh(
            "openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout server-key.pem -out server.csr 2>/dev/null\n\
            printf 'subjectAltName=IP:127.0.0.1\\nextendedKeyUsage=serverAuth\\n' > server.ext\n\
            openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 1 -extfile server.ext -out server.pem 2>/dev/null",
        );
        sh(
            "mkdir -p client && openssl req -newkey rsa:2048 -nodes -subj /CN=deployer -keyout client/key.pem -out client.csr 2>/dev/null\n\
            printf 'extendedKeyUsage=clientAuth\\n' > client.ext\n\
            openssl x509 -req -in client.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 1 -extfile client.ext -out client/cert.pem 2>/dev/null\n\
            cp ca.pem client/ca.pem",
        );
        let port = free_port();
        let conf = format!(
            "foreground = yes\npid =\n[docker]\naccept = 127.0.0.1:{port}\nconnect = /var/run/docker.sock\ncert = {d}/server.pem\nkey = {d}/server-key.pem\nCAfile = {d}/ca.pem\nverifyChain = yes\nrequireCert = yes\n",
            d = dir.display()
        );
        std::fs::write(dir.join("stunnel.conf"), conf).unwrap();
        let child = std::process::Command::new("stunnel4")
            .arg(dir.join("stunnel.conf"))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join("stunnel.log")).unwrap())
            .spawn()
            .expect("stunnel4 runs (run .ci/setup)");
        wait_listening(port, "stunnel", &dir.join("stunnel.log"));
        TlsEngine { port, dir, child }
    }
}

#[cfg(feature = "docker-tls")]
impl Drop for TlsEngine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
#[cfg(feature = "docker-tls")]
#[cfg_attr(
    pym_no_engine,
    ignore = "no Docker engine here: run .ci/setup (CI runs it)"
)]
fn an_engine_over_tls_with_a_client_certificate() {
    need_engine();
    let tls = TlsEngine::start();
    let svc = TestService::new("tls");
    svc.on_free_ports();
    let host = format!("tcp://127.0.0.1:{}", tls.port);
    let certs = tls.dir.join("client").display().to_string();
    let with = |cert_path: &str| {
        svc.pym_env(
            &["status"],
            &[
                ("DOCKER_HOST", host.as_str()),
                ("DOCKER_TLS_VERIFY", "1"),
                ("DOCKER_CERT_PATH", cert_path),
            ],
        )
    };
    // The engine answers through TLS with our client certificate.
    with(&certs).assert_ok();
    // No client certificate: named before anything is tried.
    let no_cert = temp_dir("tls-nocert");
    std::fs::copy(tls.dir.join("ca.pem"), no_cert.join("ca.pem")).unwrap();
    with(no_cert.to_str().unwrap())
        .assert_failed()
        .assert_stderr_has("cert.pem, which is not there")
        .assert_stderr_has("DOCKER_CERT_PATH");
    // A CA that did not sign the server's certificate: the connection is refused.
    let other = temp_dir("tls-otherca");
    let out = std::process::Command::new("sh")
        .arg("-ec")
        .arg("openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=other -keyout k.pem -out ca.pem 2>/dev/null")
        .current_dir(&other)
        .output()
        .unwrap();
    assert!(out.status.success());
    for f in ["cert.pem", "key.pem"] {
        std::fs::copy(tls.dir.join("client").join(f), other.join(f)).unwrap();
    }
    with(other.to_str().unwrap())
        .assert_failed()
        .assert_stderr_has(&format!("no Docker engine reachable at {host}"));
    // Without DOCKER_TLS_VERIFY, plain HTTP to a TLS port does not pass for an engine.
    svc.pym_env(&["status"], &[("DOCKER_HOST", host.as_str())])
        .assert_failed()
        .assert_stderr_has(&format!("no Docker engine reachable at {host}: "));
}
