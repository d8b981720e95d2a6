//! What pymdeploy knows of the gcp-cloud-run target without its SDK: the keys of
//! `pym-config.yaml` only it reads (and the Google keys it shares with gke), and what `new` and `init` write and say
//! for it. `config` includes this file (one line in its `target_kinds!`): it belongs to
//! the config layer, beside the target it describes, and uses nothing else.

use super::Introduction;

target_keys! { cloudrun_keys {
    /// Google Cloud project for the gcp-cloud-run and gke targets
    gcp_project: Option<String> = None => GcpCloudRun | Gke,
    /// Google Cloud region
    gcp_region: Option<String> = None => GcpCloudRun | Gke,
    /// workload identity federation: the provider a CI job's OIDC token is exchanged with (`projects/N/locations/global/workloadIdentityPools/POOL/providers/PROVIDER`; GitHub Actions, no stored key)
    gcp_workload_identity_provider: Option<String> = None => GcpCloudRun | Gke,
    /// workload identity federation: the service account the CI job acts as (impersonated after the exchange)
    gcp_deploy_service_account: Option<String> = None => GcpCloudRun | Gke,
    /// gcp-cloud-run target: the Cloud Run service (default: `name`)
    gcp_service: Option<String> = None => GcpCloudRun,
    /// memory per instance, e.g. `512Mi` or `2Gi` (gcp-cloud-run; gke's default for its pods)
    gcp_memory: Option<String> = None => GcpCloudRun | Gke,
    /// gcp-cloud-run target: CPUs per instance, e.g. `1`, `2` or `500m`
    gcp_cpu: Option<String> = None => GcpCloudRun,
    /// gcp-cloud-run target: the most requests one instance serves at once (1 to 1000)
    gcp_request_concurrency: Option<NonZeroU32> = None => GcpCloudRun,
    /// gcp-cloud-run target: instances kept running at least
    gcp_min_instances: Option<u32> = None => GcpCloudRun,
    /// gcp-cloud-run target: instances running at most
    gcp_max_instances: Option<NonZeroU32> = None => GcpCloudRun,
    /// gcp-cloud-run target: the service account revisions run as (default: the project's compute one)
    gcp_service_account: Option<String> = None => GcpCloudRun,
    /// gcp-cloud-run target: let anyone invoke the service (`allUsers` as run.invoker in its IAM policy)
    gcp_allow_unauthenticated: bool = true => GcpCloudRun,
    /// gcp-cloud-run target: seconds a request may take (Cloud Run's request timeout, 1 to 3600)
    gcp_request_timeout: Option<NonZeroU64> = None => GcpCloudRun,
    /// gcp-cloud-run target: seconds to wait for a revision to become ready or traffic to move
    gcp_timeout: NonZeroU64 = nonzero!(600) => GcpCloudRun,
} }

/// The keys this target cannot deploy without, each with an example value: refused before
/// the first step when unset, and required by the JSON Schema when `deploy_target` names it.
/// The project and region are the deploy's destination: versioned with the service, never
/// taken from the environment of whoever runs it.
pub const REQUIRES: &[(&str, &str)] = &[
    ("docker_repo", "<registry>/<namespace>"),
    ("gcp_project", "my-project"),
    ("gcp_region", "us-central1"),
];

/// What `new` and `init` write and say for this target.
pub const INTRODUCTION: Introduction = Introduction {
    config: "# gcp-cloud-run: one Cloud Run service, a revision per version; credentials from\n\
             # Application Default Credentials. It needs docker_repo above (Artifact Registry:\n\
             # REGION-docker.pkg.dev/PROJECT/REPO).\n\
             # gcp_project: my-project\n\
             # gcp_region: us-central1\n\
             # gcp_memory: 512Mi\n\
             # gcp_cpu: 1\n\
             # gcp_request_concurrency: 80\n\
             # gcp_max_instances: 10\n\
             # From GitHub Actions, the job's own identity (workload identity federation; no key):\n\
             # gcp_workload_identity_provider: projects/123456/locations/global/workloadIdentityPools/github/providers/my-repo\n\
             # gcp_deploy_service_account: deployer@my-project.iam.gserviceaccount.com\n",
    readme: include_str!("../../../template/common/README-gcp-cloud-run.md"),
    next: ", set `docker_repo`, `gcp_project` and `gcp_region` in pym-config.yaml and your Google Cloud credentials (README.md says how, and how to try it on a local Cloud Run), then `cargo xtask deploy`",
    decide: &[
        "docker_repo and the gcp-cloud-run settings in pym-config.yaml (README: the gcp-cloud-run target)",
    ],
};
