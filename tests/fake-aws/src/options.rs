//! The configuration options of a Docker environment (64bit Amazon Linux 2023), as AWS
//! documents them ("General options for all environments", the Docker platform's): each
//! option's namespace, name, default and constraints. DescribeConfigurationOptions
//! answers them; DescribeConfigurationSettings answers an environment's effective values
//! (these defaults, with what was set on it in place). The load balancer's namespaces
//! apply to a load-balanced environment of that load balancer's type only.

/// What values an option takes.
#[derive(Clone, Copy)]
pub enum Kind {
    Scalar,
    Boolean,
    List,
    /// One of these values.
    OneOf(&'static [&'static str]),
    /// A number in this range.
    Range(i64, i64),
}

/// One option: namespace, name, default, what it takes, and what changing it does.
pub struct Opt {
    pub ns: &'static str,
    pub name: &'static str,
    pub default: &'static str,
    pub kind: Kind,
    /// `NoInterruption`, `RestartApplicationServer`, `RestartEnvironment` or
    /// `Unknown` (AWS's `ChangeSeverity`).
    pub severity: &'static str,
}

const fn o(
    ns: &'static str,
    name: &'static str,
    default: &'static str,
    kind: Kind,
    severity: &'static str,
) -> Opt {
    Opt {
        ns,
        name,
        default,
        kind,
        severity,
    }
}

const ASG: &str = "aws:autoscaling:asg";
const LC: &str = "aws:autoscaling:launchconfiguration";
const TRIGGER: &str = "aws:autoscaling:trigger";
const ROLLING: &str = "aws:autoscaling:updatepolicy:rollingupdate";
const INSTANCES: &str = "aws:ec2:instances";
const VPC: &str = "aws:ec2:vpc";
const COMMAND: &str = "aws:elasticbeanstalk:command";
const CONTROL: &str = "aws:elasticbeanstalk:control";
const ENVIRONMENT: &str = "aws:elasticbeanstalk:environment";
const PROCESS: &str = "aws:elasticbeanstalk:environment:process:default";
const HEALTH: &str = "aws:elasticbeanstalk:healthreporting:system";
const LOGS: &str = "aws:elasticbeanstalk:cloudwatch:logs";
const HEALTH_LOGS: &str = "aws:elasticbeanstalk:cloudwatch:logs:health";
const MANAGED: &str = "aws:elasticbeanstalk:managedactions";
const PLATFORM_UPDATE: &str = "aws:elasticbeanstalk:managedactions:platformupdate";
const SNS: &str = "aws:elasticbeanstalk:sns:topics";
const ELB: &str = "aws:elb:loadbalancer";
const ELB_LISTENER: &str = "aws:elb:listener";
const ELB_HEALTH: &str = "aws:elb:healthcheck";
const ELB_POLICIES: &str = "aws:elb:policies";
const ELBV2: &str = "aws:elbv2:loadbalancer";
const ELBV2_LISTENER: &str = "aws:elbv2:listener:default";

const NONE: &str = "NoInterruption";
const RESTART_ENV: &str = "RestartEnvironment";
const RESTART_APP: &str = "RestartApplicationServer";
const UNKNOWN: &str = "Unknown";

pub static OPTIONS: &[Opt] = &[
    o(
        ASG,
        "Availability Zones",
        "Any",
        Kind::OneOf(&["Any", "Any 1", "Any 2", "Any 3"]),
        NONE,
    ),
    o(ASG, "Cooldown", "360", Kind::Range(0, 10000), NONE),
    o(ASG, "Custom Availability Zones", "", Kind::List, NONE),
    o(
        ASG,
        "EnableCapacityRebalancing",
        "false",
        Kind::Boolean,
        NONE,
    ),
    o(ASG, "MinSize", "1", Kind::Range(1, 10000), NONE),
    o(ASG, "MaxSize", "4", Kind::Range(1, 10000), NONE),
    o(LC, "BlockDeviceMappings", "", Kind::Scalar, RESTART_ENV),
    o(LC, "DisableIMDSv1", "true", Kind::Boolean, RESTART_ENV),
    o(LC, "EC2KeyName", "", Kind::Scalar, RESTART_ENV),
    o(
        LC,
        "IamInstanceProfile",
        "aws-elasticbeanstalk-ec2-role",
        Kind::Scalar,
        RESTART_ENV,
    ),
    o(
        LC,
        "ImageId",
        "ami-0fa1ca9559f1892ec",
        Kind::Scalar,
        RESTART_ENV,
    ),
    o(
        LC,
        "MonitoringInterval",
        "5 minute",
        Kind::OneOf(&["1 minute", "5 minute"]),
        RESTART_ENV,
    ),
    o(
        LC,
        "RootVolumeIOPS",
        "",
        Kind::Range(100, 64000),
        RESTART_ENV,
    ),
    o(LC, "RootVolumeSize", "", Kind::Range(8, 16384), RESTART_ENV),
    o(
        LC,
        "RootVolumeThroughput",
        "",
        Kind::Range(125, 1000),
        RESTART_ENV,
    ),
    o(
        LC,
        "RootVolumeType",
        "",
        Kind::OneOf(&["standard", "gp2", "gp3", "io1"]),
        RESTART_ENV,
    ),
    o(
        LC,
        "SSHSourceRestriction",
        "tcp,22,22,0.0.0.0/0",
        Kind::Scalar,
        NONE,
    ),
    o(LC, "SecurityGroups", "", Kind::List, RESTART_ENV),
    o(TRIGGER, "BreachDuration", "5", Kind::Range(1, 600), NONE),
    o(TRIGGER, "EvaluationPeriods", "1", Kind::Range(1, 600), NONE),
    o(
        TRIGGER,
        "LowerBreachScaleIncrement",
        "-1",
        Kind::Scalar,
        NONE,
    ),
    o(
        TRIGGER,
        "LowerThreshold",
        "2000000",
        Kind::Range(0, 20000000),
        NONE,
    ),
    o(
        TRIGGER,
        "MeasureName",
        "NetworkOut",
        Kind::OneOf(&[
            "CPUUtilization",
            "NetworkIn",
            "NetworkOut",
            "DiskWriteOps",
            "DiskReadBytes",
            "DiskReadOps",
            "DiskWriteBytes",
            "Latency",
            "RequestCount",
            "HealthyHostCount",
            "UnhealthyHostCount",
            "TargetResponseTime",
        ]),
        NONE,
    ),
    o(TRIGGER, "Period", "5", Kind::Range(1, 600), NONE),
    o(
        TRIGGER,
        "Statistic",
        "Average",
        Kind::OneOf(&["Minimum", "Maximum", "Sum", "Average"]),
        NONE,
    ),
    o(
        TRIGGER,
        "Unit",
        "Bytes",
        Kind::OneOf(&[
            "Seconds",
            "Percent",
            "Bytes",
            "Bits",
            "Count",
            "Bytes/Second",
            "Bits/Second",
            "Count/Second",
            "None",
        ]),
        NONE,
    ),
    o(
        TRIGGER,
        "UpperBreachScaleIncrement",
        "1",
        Kind::Scalar,
        NONE,
    ),
    o(
        TRIGGER,
        "UpperThreshold",
        "6000000",
        Kind::Range(0, 20000000),
        NONE,
    ),
    o(ROLLING, "MaxBatchSize", "1", Kind::Range(1, 10000), NONE),
    o(
        ROLLING,
        "MinInstancesInService",
        "1",
        Kind::Range(0, 9999),
        NONE,
    ),
    o(ROLLING, "PauseTime", "", Kind::Scalar, NONE),
    o(
        ROLLING,
        "RollingUpdateEnabled",
        "false",
        Kind::Boolean,
        NONE,
    ),
    o(
        ROLLING,
        "RollingUpdateType",
        "Time",
        Kind::OneOf(&["Time", "Health", "Immutable"]),
        NONE,
    ),
    o(ROLLING, "Timeout", "PT30M", Kind::Scalar, NONE),
    o(INSTANCES, "EnableSpot", "false", Kind::Boolean, RESTART_ENV),
    o(
        INSTANCES,
        "InstanceTypes",
        "t3.micro, t3.small",
        Kind::List,
        RESTART_ENV,
    ),
    o(
        INSTANCES,
        "SpotFleetOnDemandAboveBasePercentage",
        "70",
        Kind::Range(0, 100),
        RESTART_ENV,
    ),
    o(
        INSTANCES,
        "SpotFleetOnDemandBase",
        "0",
        Kind::Range(0, 10000),
        RESTART_ENV,
    ),
    o(INSTANCES, "SpotMaxPrice", "", Kind::Scalar, RESTART_ENV),
    o(
        INSTANCES,
        "SupportedArchitectures",
        "x86_64",
        Kind::List,
        RESTART_ENV,
    ),
    o(
        VPC,
        "AssociatePublicIpAddress",
        "",
        Kind::Boolean,
        RESTART_ENV,
    ),
    o(VPC, "DBSubnets", "", Kind::List, RESTART_ENV),
    o(
        VPC,
        "ELBScheme",
        "public",
        Kind::OneOf(&["public", "internal"]),
        RESTART_ENV,
    ),
    o(VPC, "ELBSubnets", "", Kind::List, RESTART_ENV),
    o(VPC, "Subnets", "", Kind::List, RESTART_ENV),
    o(VPC, "VPCId", "", Kind::Scalar, RESTART_ENV),
    o(
        "aws:elasticbeanstalk:application",
        "Application Healthcheck URL",
        "",
        Kind::Scalar,
        NONE,
    ),
    o(LOGS, "DeleteOnTerminate", "false", Kind::Boolean, NONE),
    o(
        LOGS,
        "RetentionInDays",
        "7",
        Kind::OneOf(&[
            "1", "3", "5", "7", "14", "30", "60", "90", "120", "150", "180", "365", "400", "545",
            "731", "1827", "3653",
        ]),
        NONE,
    ),
    o(LOGS, "StreamLogs", "false", Kind::Boolean, NONE),
    o(
        HEALTH_LOGS,
        "DeleteOnTerminate",
        "false",
        Kind::Boolean,
        NONE,
    ),
    o(
        HEALTH_LOGS,
        "HealthStreamingEnabled",
        "false",
        Kind::Boolean,
        NONE,
    ),
    o(
        HEALTH_LOGS,
        "RetentionInDays",
        "7",
        Kind::OneOf(&[
            "1", "3", "5", "7", "14", "30", "60", "90", "120", "150", "180", "365", "400", "545",
            "731", "1827", "3653",
        ]),
        NONE,
    ),
    o(COMMAND, "BatchSize", "100", Kind::Range(1, 10000), NONE),
    o(
        COMMAND,
        "BatchSizeType",
        "Percentage",
        Kind::OneOf(&["Percentage", "Fixed"]),
        NONE,
    ),
    o(
        COMMAND,
        "DeploymentPolicy",
        "AllAtOnce",
        Kind::OneOf(&[
            "AllAtOnce",
            "Rolling",
            "RollingWithAdditionalBatch",
            "Immutable",
            "TrafficSplitting",
        ]),
        NONE,
    ),
    o(COMMAND, "IgnoreHealthCheck", "false", Kind::Boolean, NONE),
    o(COMMAND, "Timeout", "600", Kind::Range(1, 3600), NONE),
    o(CONTROL, "DefaultSSHPort", "22", Kind::Scalar, NONE),
    o(CONTROL, "LaunchTimeout", "0", Kind::Scalar, NONE),
    o(CONTROL, "LaunchType", "Migration", Kind::Scalar, NONE),
    o(
        CONTROL,
        "RollbackLaunchOnFailure",
        "false",
        Kind::Boolean,
        NONE,
    ),
    o(
        ENVIRONMENT,
        "EnvironmentType",
        "LoadBalanced",
        Kind::OneOf(&["SingleInstance", "LoadBalanced"]),
        RESTART_ENV,
    ),
    o(
        ENVIRONMENT,
        "ExternalExtensionsS3Bucket",
        "",
        Kind::Scalar,
        NONE,
    ),
    o(
        ENVIRONMENT,
        "ExternalExtensionsS3Key",
        "",
        Kind::Scalar,
        NONE,
    ),
    o(
        ENVIRONMENT,
        "LoadBalancerIsShared",
        "false",
        Kind::Boolean,
        RESTART_ENV,
    ),
    o(
        ENVIRONMENT,
        "LoadBalancerType",
        "classic",
        Kind::OneOf(&["classic", "application", "network"]),
        RESTART_ENV,
    ),
    o(
        ENVIRONMENT,
        "ServiceRole",
        "aws-elasticbeanstalk-service-role",
        Kind::Scalar,
        NONE,
    ),
    o(
        PROCESS,
        "DeregistrationDelay",
        "20",
        Kind::Range(0, 3600),
        NONE,
    ),
    o(
        PROCESS,
        "HealthCheckInterval",
        "15",
        Kind::Range(5, 300),
        NONE,
    ),
    o(PROCESS, "HealthCheckPath", "/", Kind::Scalar, NONE),
    o(PROCESS, "HealthCheckTimeout", "5", Kind::Range(1, 60), NONE),
    o(
        PROCESS,
        "HealthyThresholdCount",
        "3",
        Kind::Range(2, 10),
        NONE,
    ),
    o(PROCESS, "MatcherHTTPCode", "200", Kind::Scalar, NONE),
    o(PROCESS, "Port", "80", Kind::Range(1, 65535), NONE),
    o(
        PROCESS,
        "Protocol",
        "HTTP",
        Kind::OneOf(&["HTTP", "HTTPS", "TCP"]),
        NONE,
    ),
    o(PROCESS, "StickinessEnabled", "false", Kind::Boolean, NONE),
    o(
        PROCESS,
        "StickinessLBCookieDuration",
        "86400",
        Kind::Range(1, 604800),
        NONE,
    ),
    o(
        PROCESS,
        "StickinessType",
        "lb_cookie",
        Kind::OneOf(&["lb_cookie"]),
        NONE,
    ),
    o(
        PROCESS,
        "UnhealthyThresholdCount",
        "5",
        Kind::Range(2, 10),
        NONE,
    ),
    o(
        "aws:elasticbeanstalk:environment:proxy",
        "ProxyServer",
        "nginx",
        Kind::OneOf(&["nginx", "none"]),
        RESTART_APP,
    ),
    o(
        HEALTH,
        "ConfigDocument",
        "{\"Version\":1,\"CloudWatchMetrics\":{\"Instance\":{},\"Environment\":{}},\"Rules\":{\"Environment\":{\"ELB\":{\"ELBRequests4xx\":{\"Enabled\":true}},\"Application\":{\"ApplicationRequests4xx\":{\"Enabled\":true}}}}}",
        Kind::Scalar,
        NONE,
    ),
    o(
        HEALTH,
        "EnhancedHealthAuthEnabled",
        "true",
        Kind::Boolean,
        NONE,
    ),
    o(
        HEALTH,
        "HealthCheckSuccessThreshold",
        "Ok",
        Kind::OneOf(&["Ok", "Warning", "Degraded", "Severe"]),
        NONE,
    ),
    o(
        HEALTH,
        "SystemType",
        "basic",
        Kind::OneOf(&["basic", "enhanced"]),
        NONE,
    ),
    o(
        "aws:elasticbeanstalk:hostmanager",
        "LogPublicationControl",
        "false",
        Kind::Boolean,
        NONE,
    ),
    o(
        MANAGED,
        "ManagedActionsEnabled",
        "false",
        Kind::Boolean,
        NONE,
    ),
    o(MANAGED, "PreferredStartTime", "", Kind::Scalar, NONE),
    o(
        MANAGED,
        "ServiceRoleForManagedUpdates",
        "",
        Kind::Scalar,
        NONE,
    ),
    o(
        PLATFORM_UPDATE,
        "InstanceRefreshEnabled",
        "false",
        Kind::Boolean,
        NONE,
    ),
    o(
        PLATFORM_UPDATE,
        "UpdateLevel",
        "",
        Kind::OneOf(&["patch", "minor"]),
        NONE,
    ),
    o(
        "aws:elasticbeanstalk:monitoring",
        "Automatically Terminate Unhealthy Instances",
        "true",
        Kind::Boolean,
        NONE,
    ),
    o(SNS, "Notification Endpoint", "", Kind::Scalar, NONE),
    o(
        SNS,
        "Notification Protocol",
        "email",
        Kind::OneOf(&["http", "https", "email", "email-json", "sqs"]),
        NONE,
    ),
    o(SNS, "Notification Topic ARN", "", Kind::Scalar, NONE),
    o(SNS, "Notification Topic Name", "", Kind::Scalar, NONE),
    o(
        "aws:elasticbeanstalk:xray",
        "XRayEnabled",
        "false",
        Kind::Boolean,
        UNKNOWN,
    ),
    o(ELB, "CrossZone", "false", Kind::Boolean, NONE),
    o(ELB, "SecurityGroups", "", Kind::List, NONE),
    o(ELB, "ManagedSecurityGroup", "", Kind::Scalar, NONE),
    o(ELB_LISTENER, "ListenerEnabled", "true", Kind::Boolean, NONE),
    o(
        ELB_LISTENER,
        "ListenerProtocol",
        "HTTP",
        Kind::OneOf(&["HTTP", "TCP"]),
        NONE,
    ),
    o(
        ELB_LISTENER,
        "InstancePort",
        "80",
        Kind::Range(1, 65535),
        NONE,
    ),
    o(
        ELB_LISTENER,
        "InstanceProtocol",
        "HTTP",
        Kind::OneOf(&["HTTP", "TCP"]),
        NONE,
    ),
    o(
        ELB_HEALTH,
        "HealthyThreshold",
        "3",
        Kind::Range(2, 10),
        NONE,
    ),
    o(ELB_HEALTH, "Interval", "10", Kind::Range(5, 300), NONE),
    o(ELB_HEALTH, "Target", "TCP:80", Kind::Scalar, NONE),
    o(ELB_HEALTH, "Timeout", "5", Kind::Range(2, 60), NONE),
    o(
        ELB_HEALTH,
        "UnhealthyThreshold",
        "5",
        Kind::Range(2, 10),
        NONE,
    ),
    o(
        ELB_POLICIES,
        "ConnectionDrainingEnabled",
        "false",
        Kind::Boolean,
        NONE,
    ),
    o(
        ELB_POLICIES,
        "ConnectionDrainingTimeout",
        "20",
        Kind::Range(1, 3600),
        NONE,
    ),
    o(
        ELB_POLICIES,
        "ConnectionSettingIdleTimeout",
        "60",
        Kind::Range(1, 3600),
        NONE,
    ),
    o(
        ELB_POLICIES,
        "Stickiness Cookie Expiration",
        "0",
        Kind::Range(0, 1000000),
        NONE,
    ),
    o(
        ELB_POLICIES,
        "Stickiness Policy",
        "false",
        Kind::Boolean,
        NONE,
    ),
    o(ELBV2, "AccessLogsS3Bucket", "", Kind::Scalar, NONE),
    o(ELBV2, "AccessLogsS3Enabled", "false", Kind::Boolean, NONE),
    o(ELBV2, "AccessLogsS3Prefix", "", Kind::Scalar, NONE),
    o(ELBV2, "IdleTimeout", "", Kind::Range(1, 3600), NONE),
    o(ELBV2, "ManagedSecurityGroup", "", Kind::Scalar, NONE),
    o(ELBV2, "SecurityGroups", "", Kind::List, NONE),
    o(
        ELBV2_LISTENER,
        "DefaultProcess",
        "default",
        Kind::Scalar,
        NONE,
    ),
    o(
        ELBV2_LISTENER,
        "ListenerEnabled",
        "true",
        Kind::Boolean,
        NONE,
    ),
    o(
        ELBV2_LISTENER,
        "Protocol",
        "HTTP",
        Kind::OneOf(&["HTTP", "HTTPS"]),
        NONE,
    ),
    o(ELBV2_LISTENER, "Rules", "", Kind::List, NONE),
    o(ELBV2_LISTENER, "SSLCertificateArns", "", Kind::Scalar, NONE),
    o(ELBV2_LISTENER, "SSLPolicy", "", Kind::Scalar, NONE),
];

/// Whether an option's namespace applies to an environment of this type and load
/// balancer: a single instance has none of the load balancer's nor the rolling update's
/// and process's; each load balancer type has its own.
pub fn applies(ns: &str, single_instance: bool, load_balancer: &str) -> bool {
    let balancer = match ns {
        ELB | ELB_LISTENER | ELB_HEALTH | ELB_POLICIES => Some("classic"),
        ELBV2 | ELBV2_LISTENER => Some("application"),
        PROCESS => Some("any"),
        _ => None,
    };
    match balancer {
        None => true,
        Some(_) if single_instance => false,
        Some("classic") => load_balancer == "classic",
        Some("application") => load_balancer != "classic",
        Some(_) => true,
    }
}
