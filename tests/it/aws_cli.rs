//! The local AWS of `tests/fake-aws` as the AWS CLI (botocore, as boto3 and the EB CLI)
//! reads it: bucket creation dates, the configuration options of a platform, its
//! platform versions with filters. No environment runs here, so no engine is needed.

use std::process::Command;

use pym_fake_aws::{FakeAws, Options};

use crate::support::{Run, run};

/// Fails the test unless the AWS CLI runs here (.ci/setup installs it).
fn need_aws_cli() {
    assert!(
        Command::new("aws")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success()),
        "the AWS CLI (`aws`) does not run here: run .ci/setup"
    );
}

fn aws(fake: &FakeAws, args: &[&str]) -> Run {
    let mut cmd = Command::new("aws");
    cmd.env("AWS_ACCESS_KEY_ID", "AKIDPYMDEPLOYTEST")
        .env("AWS_SECRET_ACCESS_KEY", "pym-it-cli-secret")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env_remove("AWS_PROFILE")
        .args(["--endpoint-url", &fake.endpoint, "--output", "json"])
        .args(args);
    run(cmd)
}

fn json(r: &Run) -> serde_json::Value {
    serde_json::from_str(&r.assert_ok().stdout).expect("the CLI prints JSON")
}

const DOCKER: &str = "64bit Amazon Linux 2023 v4.7.1 running Docker";

#[test]
#[cfg_attr(
    pym_no_aws_cli,
    ignore = "needs the AWS CLI: run .ci/setup (CI runs it)"
)]
fn the_aws_cli_reads_buckets_options_and_platforms() {
    need_aws_cli();
    let fake = FakeAws::start(Options {
        lb_port: None,
        ..Default::default()
    })
    .expect("the local AWS starts");
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    aws(&fake, &["s3api", "create-bucket", "--bucket", "pym-it-cli"]).assert_ok();
    let buckets = json(&aws(&fake, &["s3api", "list-buckets"]));
    let created = buckets["Buckets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["Name"] == "pym-it-cli")
        .and_then(|b| b["CreationDate"].as_str())
        .expect("the bucket and its creation date")
        .to_string();
    // It is today's, to the second (the CLI prints it as given, RFC 3339).
    let epoch = Command::new("date")
        .args(["-u", "-d", &created, "+%s"])
        .output()
        .unwrap();
    let epoch: u64 = String::from_utf8_lossy(&epoch.stdout)
        .trim()
        .parse()
        .unwrap();
    assert!(
        (before.saturating_sub(1)..=before + 60).contains(&epoch),
        "CreationDate {created} is not when the bucket was made"
    );

    // A platform's options, with their defaults and constraints.
    let options = json(&aws(
        &fake,
        &[
            "elasticbeanstalk",
            "describe-configuration-options",
            "--solution-stack-name",
            DOCKER,
        ],
    ));
    assert_eq!(options["SolutionStackName"], DOCKER);
    let all = options["Options"].as_array().unwrap();
    assert!(all.len() >= 100, "{} options", all.len());
    let find = |ns: &str, name: &str| {
        all.iter()
            .find(|o| o["Namespace"] == ns && o["Name"] == name)
            .unwrap_or_else(|| panic!("no option {ns} {name}"))
            .clone()
    };
    let min = find("aws:autoscaling:asg", "MinSize");
    assert_eq!(
        (
            &min["DefaultValue"],
            &min["MinValue"],
            &min["MaxValue"],
            &min["ValueType"]
        ),
        (&"1".into(), &1.into(), &10000.into(), &"Scalar".into())
    );
    let kind = find("aws:elasticbeanstalk:environment", "EnvironmentType");
    assert_eq!(
        kind["ValueOptions"],
        serde_json::json!(["SingleInstance", "LoadBalanced"])
    );
    assert_eq!(
        find("aws:ec2:instances", "InstanceTypes")["ValueType"],
        "List"
    );
    // Asked for one namespace, only its options.
    let asked = json(&aws(
        &fake,
        &[
            "elasticbeanstalk",
            "describe-configuration-options",
            "--solution-stack-name",
            DOCKER,
            "--options",
            "Namespace=aws:elasticbeanstalk:command",
        ],
    ));
    let names: Vec<&str> = asked["Options"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["Name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "BatchSize",
            "BatchSizeType",
            "DeploymentPolicy",
            "IgnoreHealthCheck",
            "Timeout"
        ]
    );
    aws(
        &fake,
        &[
            "elasticbeanstalk",
            "describe-configuration-options",
            "--solution-stack-name",
            "64bit Windows running Docker",
        ],
    )
    .assert_failed()
    .assert_stderr_has("No Solution Stack named '64bit Windows running Docker' found.");

    // Platform versions, filtered as the EB CLI filters them.
    let docker = json(&aws(
        &fake,
        &[
            "elasticbeanstalk",
            "list-platform-versions",
            "--filters",
            r#"[{"Type": "PlatformBranchName", "Operator": "=", "Values": ["Docker running on 64bit Amazon Linux 2023"]}]"#,
        ],
    ));
    let list = docker["PlatformSummaryList"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{docker}");
    assert_eq!(list[0]["PlatformVersion"], "4.7.1");
    assert_eq!(list[0]["PlatformCategory"], "Docker");
    assert_eq!(
        list[0]["PlatformArn"],
        "arn:aws:elasticbeanstalk:us-east-1::platform/Docker running on 64bit Amazon Linux 2023/4.7.1"
    );
    let all = json(&aws(&fake, &["elasticbeanstalk", "list-platform-versions"]));
    assert!(all["PlatformSummaryList"].as_array().unwrap().len() > 1);
    let newer = json(&aws(
        &fake,
        &[
            "elasticbeanstalk",
            "list-platform-versions",
            "--filters",
            r#"[{"Type": "PlatformVersion", "Operator": ">=", "Values": ["6.0"]}]"#,
        ],
    ));
    let versions: Vec<&str> = newer["PlatformSummaryList"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["PlatformVersion"].as_str().unwrap())
        .collect();
    assert_eq!(versions, ["6.6.1"]);
}
