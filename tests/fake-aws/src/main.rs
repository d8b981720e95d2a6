//! `pym-fake-aws [--port N] [--lb-port N|--no-lb] [--region R] [--health-grace SECS]`: the local
//! Elastic Beanstalk and S3 on their own, for any AWS client:
//! `AWS_ENDPOINT_URL=http://127.0.0.1:N aws elasticbeanstalk describe-environments`.

use std::process::ExitCode;
use std::time::Duration;

use pym_fake_common::cli::Args;

fn main() -> ExitCode {
    let mut opts = pym_fake_aws::Options {
        port: 4566,
        ..Default::default()
    };
    let mut args = Args::new(
        "pym-fake-aws [--port N (4566)] [--lb-port N (80) | --no-lb] [--region R (us-east-1)] [--health-grace SECS (20)]",
    );
    while let Some(a) = args.next() {
        match a.as_str() {
            "--port" => opts.port = args.parse(&a, "a port number"),
            "--lb-port" => opts.lb_port = Some(args.parse(&a, "a port number")),
            "--no-lb" => opts.lb_port = None,
            "--region" => opts.region = args.value(&a),
            "--health-grace" => opts.health_grace = Duration::from_secs(args.parse(&a, "seconds")),
            "-h" | "--help" => args.usage(""),
            other => args.usage(&format!("unknown argument {other:?}")),
        }
    }
    let server = match pym_fake_aws::FakeAws::start(opts.clone()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "error: cannot listen on 127.0.0.1:{} (API) or {:?} (load balancer): {e}",
                opts.port, opts.lb_port
            );
            eprintln!(
                "hint: pick free ports with --port and --lb-port (ports below 1024 need root)"
            );
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "local Elastic Beanstalk and S3 on {} (region {})",
        server.endpoint, opts.region
    );
    match server.lb_port {
        Some(p) => eprintln!(
            "environment CNAMEs (*.{}.elasticbeanstalk.localhost) answer on port {p}",
            opts.region
        ),
        None => eprintln!("no load balancer: environments run but their CNAMEs do not answer"),
    }
    eprintln!(
        "use it with: AWS_ENDPOINT_URL={} AWS_ACCESS_KEY_ID=x AWS_SECRET_ACCESS_KEY=x AWS_REGION={}",
        server.endpoint, opts.region
    );
    println!("{}", server.endpoint);
    server.wait_for_signal();
    ExitCode::SUCCESS
}
