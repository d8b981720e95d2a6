//! What pymdeploy knows of the aws-beanstalk target without its SDK: the keys of
//! `pym-config.yaml` only it reads, and what `new` and `init` write and say
//! for it. `config` includes this file (one line in its `target_kinds!`): it belongs to
//! the config layer, beside the target it describes, and uses nothing else.

use super::Introduction;

target_keys! { beanstalk_keys {
    /// AWS profile used by the aws-beanstalk target
    aws_user: Option<String> = None => AwsBeanstalk,
    /// AWS region
    aws_region: Option<String> = None => AwsBeanstalk,
    /// aws-beanstalk target: the IAM role a CI job assumes with its OIDC identity token (GitHub Actions; no stored AWS keys)
    aws_role_arn: Option<String> = None => AwsBeanstalk,
    /// EC2 key pair for Beanstalk instances
    aws_keypair: Option<String> = None => AwsBeanstalk,
    /// EC2 instance type for Beanstalk instances
    aws_instance_type: Option<String> = None => AwsBeanstalk,
    /// ACM certificate ARN for HTTPS on Beanstalk
    aws_cert_arn: Option<String> = None => AwsBeanstalk,
    /// minimum number of Beanstalk instances
    aws_hosts_min: Option<NonZeroU32> = None => AwsBeanstalk,
    /// maximum number of Beanstalk instances
    aws_hosts_max: Option<NonZeroU32> = None => AwsBeanstalk,
    /// aws-beanstalk target: the S3 bucket holding the registry credentials Beanstalk pulls the image with
    docker_bucket: Option<String> = None => AwsBeanstalk,
    /// aws-beanstalk target: the key of the credentials (a Docker config.json) in docker_bucket
    docker_auth_key: String = "docker.cfg".to_string() => AwsBeanstalk,
    /// aws-beanstalk target: the Docker solution stack (default: the newest one AWS lists)
    aws_solution_stack: Option<String> = None => AwsBeanstalk,
    /// aws-beanstalk target: a platform ARN, instead of aws_solution_stack
    aws_platform_arn: Option<String> = None => AwsBeanstalk,
    /// aws-beanstalk target: the CNAME prefix of the live environment (default: <name>-live)
    aws_live_cname: Option<String> = None => AwsBeanstalk,
    /// aws-beanstalk target: seconds to wait for an environment to launch, update or swap
    aws_timeout: NonZeroU64 = nonzero!(1200) => AwsBeanstalk,
    /// aws-beanstalk target: the port environment CNAMEs answer HTTP on, for the checks and acceptance tests (80 on AWS; the local Beanstalk's `--lb-port`)
    aws_cname_port: Port = nonzero!(80) => AwsBeanstalk,
} }

/// The keys this target cannot deploy without, each with an example value: refused before
/// the first step when unset, and required by the JSON Schema when `deploy_target` names it.
pub const REQUIRES: &[(&str, &str)] = &[("docker_repo", "<registry>/<namespace>")];

/// What `new` and `init` write and say for this target.
pub const INTRODUCTION: Introduction = Introduction {
    config: "# aws-beanstalk: credentials and region come from the AWS default chain unless set here.\n\
             # It needs docker_repo above: Beanstalk pulls the image from that registry.\n\
             # aws_user: my-profile\n\
             # aws_region: us-east-1\n\
             # The registry credentials Beanstalk pulls the image with (a Docker config.json in S3).\n\
             # docker_bucket: my-bucket\n\
             # docker_auth_key: docker.cfg\n\
             # aws_instance_type: t3.small\n\
             # aws_hosts_min: 1\n\
             # aws_hosts_max: 2\n\
             # The live environment holds this CNAME prefix (default: {{name}}-live).\n\
             # aws_live_cname: {{name}}-live\n\
             # From GitHub Actions, the job's own identity assumes this role (no stored keys):\n\
             # aws_role_arn: arn:aws:iam::123456789012:role/deploy\n",
    readme: include_str!("../../../template/common/README-aws-beanstalk.md"),
    next: ", set `docker_repo` in pym-config.yaml and your AWS credentials (README.md says how, and how to try it on a local Beanstalk), then `cargo xtask deploy`",
    decide: &[
        "docker_repo and the aws-beanstalk settings in pym-config.yaml (README: the aws-beanstalk target)",
    ],
};
