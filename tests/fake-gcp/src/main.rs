//! `pym-fake-gcp [--port N] [--front-port N] [--region R] [--startup-timeout SECS]
//! [--write-key FILE]`: the local Cloud Run Admin API v2 on its own, for any REST caller or
//! Google client:
//! `curl -H 'Authorization: Bearer x' http://127.0.0.1:N/v2/projects/p/locations/us-central1/services`.
//! `--write-key` writes a service-account key (a fresh RSA key, made with openssl) for
//! GOOGLE_APPLICATION_CREDENTIALS: Google's clients sign their own tokens with it.

use std::process::ExitCode;
use std::time::Duration;

use pym_fake_common::cli::Args;

fn main() -> ExitCode {
    let mut opts = pym_fake_gcp::Options {
        port: 8085,
        front_port: 8086,
        ..Default::default()
    };
    let mut region = "us-central1".to_string();
    let mut key_file: Option<std::path::PathBuf> = None;
    let mut args = Args::new(
        "pym-fake-gcp [--port N (8085)] [--front-port N (8086)] [--region R (us-central1)] [--startup-timeout SECS (20)] [--docker-config DIR] [--write-key FILE]",
    );
    while let Some(a) = args.next() {
        match a.as_str() {
            "--port" => opts.port = args.parse(&a, "a port number"),
            "--front-port" => opts.front_port = args.parse(&a, "a port number"),
            "--region" => region = args.value(&a),
            "--startup-timeout" => {
                opts.startup_timeout = Duration::from_secs(args.parse(&a, "seconds"))
            }
            "--docker-config" => opts.docker_config = Some(args.value(&a).into()),
            "--write-key" => key_file = Some(args.value(&a).into()),
            "-h" | "--help" => args.usage(""),
            other => args.usage(&format!("unknown argument {other:?}")),
        }
    }
    let server = match pym_fake_gcp::FakeGcp::start(opts.clone()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "error: cannot listen on 127.0.0.1:{} (API) or {} (front door): {e}",
                opts.port, opts.front_port
            );
            eprintln!(
                "hint: pick free ports with --port and --front-port (0: any free port; ports below 1024 need root)"
            );
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "local Cloud Run Admin API v2 on {} (any project and location; try {region})",
        server.endpoint
    );
    eprintln!(
        "service URLs (http://<service>-<hash>-<region code>.a.run.localhost:{0}) answer on port {0}",
        server.front_port
    );
    eprintln!(
        "use it with: curl -H 'Authorization: Bearer x' {}/v2/projects/my-project/locations/{region}/services, or a Google client's with_endpoint(\"{}\") and a bearer token",
        server.endpoint, server.endpoint
    );
    if let Some(path) = &key_file {
        if let Err(e) = pym_fake_gcp::write_service_account_key(
            path,
            "my-project",
            &format!("{}/token", server.endpoint),
        ) {
            eprintln!(
                "error: cannot write a service-account key to {}: {e}",
                path.display()
            );
            return ExitCode::FAILURE;
        }
        eprintln!(
            "a service-account key for it: GOOGLE_APPLICATION_CREDENTIALS={}",
            path.display()
        );
    }
    println!("{}", server.endpoint);
    server.wait_for_signal();
    ExitCode::SUCCESS
}
