//! `pym-fake-kube [--port N] [--progress-deadline-scale F] [--step-delay-ms N] [--docker-config DIR]
//! [--token T]... [--kubeconfig PATH]`: the local Kubernetes apiserver and controller on
//! their own, for the real `kubectl`: `kubectl --server http://127.0.0.1:N --token x get
//! pods`. With `--token`, HTTPS and only those tokens (use the kubeconfig it writes).

use std::process::ExitCode;
use std::time::Duration;

use pym_fake_common::cli::Args;

fn main() -> ExitCode {
    let mut opts = pym_fake_kube::Options {
        port: 6443,
        ..Default::default()
    };
    let mut kubeconfig: Option<std::path::PathBuf> = None;
    let mut args = Args::new(
        "pym-fake-kube [--port N (6443)] [--progress-deadline-scale F (1.0)] [--step-delay-ms N (200)] [--docker-config DIR] [--token T (HTTPS, only these tokens; repeatable)] [--kubeconfig PATH]",
    );
    while let Some(a) = args.next() {
        match a.as_str() {
            "--port" => opts.port = args.parse(&a, "a port number"),
            "--progress-deadline-scale" => {
                opts.progress_deadline_scale = args.parse(&a, "a number")
            }
            "--step-delay-ms" => {
                opts.step_delay = Duration::from_millis(args.parse(&a, "milliseconds"))
            }
            "--docker-config" => opts.docker_config = Some(args.value(&a).into()),
            "--kubeconfig" => kubeconfig = Some(args.value(&a).into()),
            "--token" => opts
                .tokens
                .get_or_insert_with(Vec::new)
                .push(args.value(&a)),
            "-h" | "--help" => args.usage(""),
            other => args.usage(&format!("unknown argument {other:?}")),
        }
    }
    let server = match pym_fake_kube::FakeKube::start(opts.clone()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot listen on 127.0.0.1:{}: {e}", opts.port);
            eprintln!("hint: pick a free port with --port (0: any free port)");
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "local Kubernetes API (v1.32, core/v1, apps/v1, discovery.k8s.io/v1) on {}",
        server.url
    );
    eprintln!(
        "pods run as containers on the local Docker engine; a Service's ports answer on 127.0.0.1:<spec.ports[].nodePort>, a LoadBalancer's also on <status.loadBalancer.ingress[0].ip>:<port>"
    );
    match kubeconfig {
        Some(path) => {
            let dir = path
                .parent()
                .map(std::path::Path::to_path_buf)
                .unwrap_or_default();
            let name = "fake-kube";
            let written = server.kubeconfig(&dir, name);
            if written != path {
                let _ = std::fs::rename(&written, &path);
            }
            eprintln!(
                "wrote {}; use it with: KUBECONFIG={} kubectl ...",
                path.display(),
                path.display()
            );
        }
        None if server.ca_pem.is_some() => eprintln!(
            "it answers HTTPS with a CA of its own: --kubeconfig PATH writes a kubeconfig that trusts it"
        ),
        None => eprintln!(
            "use it with: kubectl --server {} --token x ... (any bearer token passes; --kubeconfig PATH writes a kubeconfig)",
            server.url
        ),
    }
    println!("{}", server.url);
    server.wait_for_signal();
    ExitCode::SUCCESS
}
