//! Field tables of the Kubernetes protobuf messages the local apiserver decodes, from
//! k8s.io/api and k8s.io/apimachinery `generated.proto` (v0.32): each field's number, its
//! JSON name, its type, and whether it is repeated or a pointer (kept when zero).

/// How a field's value is read.
#[derive(Clone, Copy)]
pub enum Ty {
    /// string
    Str,
    /// int32 or int64 (varint; negative int32 comes as 10 bytes, read as i64)
    Int,
    Bool,
    /// bytes: base64 in JSON
    Bytes,
    /// an embedded message
    Msg(&'static [F]),
    /// map<string, string>
    MapStr,
    /// map<string, bytes>: base64 values in JSON
    MapBytes,
    /// map<string, M> for message M
    MapMsg(&'static [F]),
    /// metav1.Time / metav1.MicroTime: {seconds, nanos} -> RFC 3339 string
    Time,
    /// resource.Quantity: {string} -> its string
    Quantity,
    /// intstr.IntOrString: {type, intVal, strVal} -> a number or a string
    IntOrString,
    /// runtime.RawExtension: {raw bytes} -> the JSON it holds
    Raw,
}

/// One field of a message.
#[derive(Clone, Copy)]
pub struct F {
    pub num: u32,
    pub name: &'static str,
    pub ty: Ty,
    pub repeated: bool,
    /// A pointer in Go (`optional` with `+optional` and a `*T`, or a message field that is a pointer): its zero value is kept in JSON. Non-pointer scalars equal to their zero value ("" / 0 / false) are left out of the JSON, as Go's omitempty would, unless the Go json tag has no omitempty (then set keep: true too).
    pub keep: bool,
}

const fn f(num: u32, name: &'static str, ty: Ty) -> F {
    F {
        num,
        name,
        ty,
        repeated: false,
        keep: false,
    }
}
const fn rep(num: u32, name: &'static str, ty: Ty) -> F {
    F {
        num,
        name,
        ty,
        repeated: true,
        keep: false,
    }
}
const fn ptr(num: u32, name: &'static str, ty: Ty) -> F {
    F {
        num,
        name,
        ty,
        repeated: false,
        keep: true,
    }
}

/// The top-level message of a kind, by `kind` and `apiVersion` of its TypeMeta.
pub fn of(api_version: &str, kind: &str) -> Option<&'static [F]> {
    Some(match (api_version, kind) {
        ("v1", "Namespace") => NAMESPACE,
        ("v1", "Secret") => SECRET,
        ("v1", "ConfigMap") => CONFIG_MAP,
        ("v1", "Service") => SERVICE,
        ("v1", "Pod") => POD,
        ("v1", "Event") => EVENT,
        ("v1", "Endpoints") => ENDPOINTS,
        ("v1", "ServiceAccount") => SERVICE_ACCOUNT,
        ("apps/v1", "Deployment") => DEPLOYMENT,
        ("apps/v1", "ReplicaSet") => REPLICA_SET,
        ("discovery.k8s.io/v1", "EndpointSlice") => DISCOVERY_ENDPOINT_SLICE,
        ("autoscaling/v1", "Scale") => SCALE,
        _ => return None,
    })
}

// Conventions of the tables below (for the decoder):
//
// - A field whose name is empty ("") is one the Go struct embeds with `json:",inline"`
//   (Volume.volumeSource, Probe.handler, EphemeralContainer.ephemeralContainerCommon, and
//   the LocalObjectReference {name} inside ConfigMapKeySelector, SecretKeySelector,
//   ConfigMapEnvSource, SecretEnvSource, ConfigMapVolumeSource, ConfigMapProjection and
//   SecretProjection). On the wire it is an embedded message like any other; in JSON its
//   fields are merged into the enclosing object.
// - The one exception is QUANTITY_VALUE: a table whose only field has an empty name and a
//   scalar type stands for its value (the message is unwrapped to that value).
// - Field numbers, the JSON names (Go json tags), pointer-ness and omitempty were read
//   from generated.proto and the Go structs (types.go) at v0.32.0; every field of every
//   message below is listed (nothing reduced).
// - Repeated fields whose Go json tag has no omitempty (so a JSON client sends `[]` or
//   `null` for them) and that protobuf cannot tell from absent: PodSpec.containers,
//   EndpointSlice.endpoints, EndpointSlice.ports, (discovery) Endpoint.addresses,
//   ProjectedVolumeSource.sources, NodeSelector.nodeSelectorTerms,
//   RBDVolumeSource.monitors, CephFSVolumeSource.monitors.
// - Message-typed fields that are pointers in Go are written with ptr(), others with f();
//   for them `keep` is informational only.

/// map<string, resource.Quantity> values (ResourceList): the Quantity message {string = 1}.
/// A one-field message whose field has an empty name is unwrapped to its value.
pub static QUANTITY_VALUE: &[F] = &[f(1, "", Ty::Str)];

/// core/v1 Namespace
pub static NAMESPACE: &[F] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)),
    f(2, "spec", Ty::Msg(NAMESPACE_SPEC)),
    f(3, "status", Ty::Msg(NAMESPACE_STATUS)),
];

/// meta/v1 ObjectMeta
pub static OBJECT_META: &[F] = &[
    f(1, "name", Ty::Str),
    f(2, "generateName", Ty::Str),
    f(3, "namespace", Ty::Str),
    f(4, "selfLink", Ty::Str),
    f(5, "uid", Ty::Str),
    f(6, "resourceVersion", Ty::Str),
    f(7, "generation", Ty::Int),
    f(8, "creationTimestamp", Ty::Time),
    ptr(9, "deletionTimestamp", Ty::Time),
    ptr(10, "deletionGracePeriodSeconds", Ty::Int),
    f(11, "labels", Ty::MapStr),
    f(12, "annotations", Ty::MapStr),
    rep(13, "ownerReferences", Ty::Msg(OWNER_REFERENCE)),
    rep(14, "finalizers", Ty::Str),
    rep(17, "managedFields", Ty::Msg(MANAGED_FIELDS_ENTRY)),
];

/// meta/v1 OwnerReference
pub static OWNER_REFERENCE: &[F] = &[
    ptr(5, "apiVersion", Ty::Str),
    ptr(1, "kind", Ty::Str),
    ptr(3, "name", Ty::Str),
    ptr(4, "uid", Ty::Str),
    ptr(6, "controller", Ty::Bool),
    ptr(7, "blockOwnerDeletion", Ty::Bool),
];

/// meta/v1 ManagedFieldsEntry
pub static MANAGED_FIELDS_ENTRY: &[F] = &[
    f(1, "manager", Ty::Str),
    f(2, "operation", Ty::Str),
    f(3, "apiVersion", Ty::Str),
    ptr(4, "time", Ty::Time),
    f(6, "fieldsType", Ty::Str),
    ptr(7, "fieldsV1", Ty::Raw),
    f(8, "subresource", Ty::Str),
];

/// core/v1 NamespaceSpec
pub static NAMESPACE_SPEC: &[F] = &[rep(1, "finalizers", Ty::Str)];

/// core/v1 NamespaceStatus
pub static NAMESPACE_STATUS: &[F] = &[
    f(1, "phase", Ty::Str),
    rep(2, "conditions", Ty::Msg(NAMESPACE_CONDITION)),
];

/// core/v1 NamespaceCondition
pub static NAMESPACE_CONDITION: &[F] = &[
    ptr(1, "type", Ty::Str),
    ptr(2, "status", Ty::Str),
    f(4, "lastTransitionTime", Ty::Time),
    f(5, "reason", Ty::Str),
    f(6, "message", Ty::Str),
];

/// core/v1 Secret
pub static SECRET: &[F] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)),
    ptr(5, "immutable", Ty::Bool),
    f(2, "data", Ty::MapBytes),
    f(4, "stringData", Ty::MapStr),
    f(3, "type", Ty::Str),
];

/// core/v1 ConfigMap
pub static CONFIG_MAP: &[F] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)),
    ptr(4, "immutable", Ty::Bool),
    f(2, "data", Ty::MapStr),
    f(3, "binaryData", Ty::MapBytes),
];

/// core/v1 Service
pub static SERVICE: &[F] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)),
    f(2, "spec", Ty::Msg(SERVICE_SPEC)),
    f(3, "status", Ty::Msg(SERVICE_STATUS)),
];

/// core/v1 ServiceSpec
pub static SERVICE_SPEC: &[F] = &[
    rep(1, "ports", Ty::Msg(SERVICE_PORT)),
    f(2, "selector", Ty::MapStr),
    f(3, "clusterIP", Ty::Str),
    rep(18, "clusterIPs", Ty::Str),
    f(4, "type", Ty::Str),
    rep(5, "externalIPs", Ty::Str),
    f(7, "sessionAffinity", Ty::Str),
    f(8, "loadBalancerIP", Ty::Str),
    rep(9, "loadBalancerSourceRanges", Ty::Str),
    f(10, "externalName", Ty::Str),
    f(11, "externalTrafficPolicy", Ty::Str),
    f(12, "healthCheckNodePort", Ty::Int),
    f(13, "publishNotReadyAddresses", Ty::Bool),
    ptr(
        14,
        "sessionAffinityConfig",
        Ty::Msg(SESSION_AFFINITY_CONFIG),
    ),
    rep(19, "ipFamilies", Ty::Str),
    ptr(17, "ipFamilyPolicy", Ty::Str),
    ptr(20, "allocateLoadBalancerNodePorts", Ty::Bool),
    ptr(21, "loadBalancerClass", Ty::Str),
    ptr(22, "internalTrafficPolicy", Ty::Str),
    ptr(23, "trafficDistribution", Ty::Str),
];

/// core/v1 ServicePort
pub static SERVICE_PORT: &[F] = &[
    f(1, "name", Ty::Str),
    f(2, "protocol", Ty::Str),
    ptr(6, "appProtocol", Ty::Str),
    ptr(3, "port", Ty::Int),
    f(4, "targetPort", Ty::IntOrString),
    f(5, "nodePort", Ty::Int),
];

/// core/v1 SessionAffinityConfig
pub static SESSION_AFFINITY_CONFIG: &[F] = &[ptr(1, "clientIP", Ty::Msg(CLIENT_IP_CONFIG))];

/// core/v1 ClientIPConfig
pub static CLIENT_IP_CONFIG: &[F] = &[ptr(1, "timeoutSeconds", Ty::Int)];

/// core/v1 ServiceStatus
pub static SERVICE_STATUS: &[F] = &[
    f(1, "loadBalancer", Ty::Msg(LOAD_BALANCER_STATUS)),
    rep(2, "conditions", Ty::Msg(CONDITION)),
];

/// core/v1 LoadBalancerStatus
pub static LOAD_BALANCER_STATUS: &[F] = &[rep(1, "ingress", Ty::Msg(LOAD_BALANCER_INGRESS))];

/// core/v1 LoadBalancerIngress
pub static LOAD_BALANCER_INGRESS: &[F] = &[
    f(1, "ip", Ty::Str),
    f(2, "hostname", Ty::Str),
    ptr(3, "ipMode", Ty::Str),
    rep(4, "ports", Ty::Msg(PORT_STATUS)),
];

/// core/v1 PortStatus
pub static PORT_STATUS: &[F] = &[
    ptr(1, "port", Ty::Int),
    ptr(2, "protocol", Ty::Str),
    ptr(3, "error", Ty::Str),
];

/// meta/v1 Condition
pub static CONDITION: &[F] = &[
    ptr(1, "type", Ty::Str),
    ptr(2, "status", Ty::Str),
    f(3, "observedGeneration", Ty::Int),
    f(4, "lastTransitionTime", Ty::Time),
    ptr(5, "reason", Ty::Str),
    ptr(6, "message", Ty::Str),
];

/// core/v1 Pod
pub static POD: &[F] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)),
    f(2, "spec", Ty::Msg(POD_SPEC)),
    f(3, "status", Ty::Msg(POD_STATUS)),
];

/// core/v1 PodSpec
pub static POD_SPEC: &[F] = &[
    rep(1, "volumes", Ty::Msg(VOLUME)),
    rep(20, "initContainers", Ty::Msg(CONTAINER)),
    rep(2, "containers", Ty::Msg(CONTAINER)),
    rep(34, "ephemeralContainers", Ty::Msg(EPHEMERAL_CONTAINER)),
    f(3, "restartPolicy", Ty::Str),
    ptr(4, "terminationGracePeriodSeconds", Ty::Int),
    ptr(5, "activeDeadlineSeconds", Ty::Int),
    f(6, "dnsPolicy", Ty::Str),
    f(7, "nodeSelector", Ty::MapStr),
    f(8, "serviceAccountName", Ty::Str),
    f(9, "serviceAccount", Ty::Str),
    ptr(21, "automountServiceAccountToken", Ty::Bool),
    f(10, "nodeName", Ty::Str),
    f(11, "hostNetwork", Ty::Bool),
    f(12, "hostPID", Ty::Bool),
    f(13, "hostIPC", Ty::Bool),
    ptr(27, "shareProcessNamespace", Ty::Bool),
    ptr(14, "securityContext", Ty::Msg(POD_SECURITY_CONTEXT)),
    rep(15, "imagePullSecrets", Ty::Msg(LOCAL_OBJECT_REFERENCE)),
    f(16, "hostname", Ty::Str),
    f(17, "subdomain", Ty::Str),
    ptr(18, "affinity", Ty::Msg(AFFINITY)),
    f(19, "schedulerName", Ty::Str),
    rep(22, "tolerations", Ty::Msg(TOLERATION)),
    rep(23, "hostAliases", Ty::Msg(HOST_ALIAS)),
    f(24, "priorityClassName", Ty::Str),
    ptr(25, "priority", Ty::Int),
    ptr(26, "dnsConfig", Ty::Msg(POD_DNS_CONFIG)),
    rep(28, "readinessGates", Ty::Msg(POD_READINESS_GATE)),
    ptr(29, "runtimeClassName", Ty::Str),
    ptr(30, "enableServiceLinks", Ty::Bool),
    ptr(31, "preemptionPolicy", Ty::Str),
    f(32, "overhead", Ty::MapMsg(QUANTITY_VALUE)),
    rep(
        33,
        "topologySpreadConstraints",
        Ty::Msg(TOPOLOGY_SPREAD_CONSTRAINT),
    ),
    ptr(35, "setHostnameAsFQDN", Ty::Bool),
    ptr(36, "os", Ty::Msg(POD_OS)),
    ptr(37, "hostUsers", Ty::Bool),
    rep(38, "schedulingGates", Ty::Msg(POD_SCHEDULING_GATE)),
    rep(39, "resourceClaims", Ty::Msg(POD_RESOURCE_CLAIM)),
    ptr(40, "resources", Ty::Msg(RESOURCE_REQUIREMENTS)),
];

/// core/v1 Volume
pub static VOLUME: &[F] = &[ptr(1, "name", Ty::Str), f(2, "", Ty::Msg(VOLUME_SOURCE))];

/// core/v1 VolumeSource
pub static VOLUME_SOURCE: &[F] = &[
    ptr(1, "hostPath", Ty::Msg(HOST_PATH_VOLUME_SOURCE)),
    ptr(2, "emptyDir", Ty::Msg(EMPTY_DIR_VOLUME_SOURCE)),
    ptr(
        3,
        "gcePersistentDisk",
        Ty::Msg(GCE_PERSISTENT_DISK_VOLUME_SOURCE),
    ),
    ptr(
        4,
        "awsElasticBlockStore",
        Ty::Msg(AWS_ELASTIC_BLOCK_STORE_VOLUME_SOURCE),
    ),
    ptr(5, "gitRepo", Ty::Msg(GIT_REPO_VOLUME_SOURCE)),
    ptr(6, "secret", Ty::Msg(SECRET_VOLUME_SOURCE)),
    ptr(7, "nfs", Ty::Msg(NFS_VOLUME_SOURCE)),
    ptr(8, "iscsi", Ty::Msg(ISCSI_VOLUME_SOURCE)),
    ptr(9, "glusterfs", Ty::Msg(GLUSTERFS_VOLUME_SOURCE)),
    ptr(
        10,
        "persistentVolumeClaim",
        Ty::Msg(PERSISTENT_VOLUME_CLAIM_VOLUME_SOURCE),
    ),
    ptr(11, "rbd", Ty::Msg(RBD_VOLUME_SOURCE)),
    ptr(12, "flexVolume", Ty::Msg(FLEX_VOLUME_SOURCE)),
    ptr(13, "cinder", Ty::Msg(CINDER_VOLUME_SOURCE)),
    ptr(14, "cephfs", Ty::Msg(CEPH_FS_VOLUME_SOURCE)),
    ptr(15, "flocker", Ty::Msg(FLOCKER_VOLUME_SOURCE)),
    ptr(16, "downwardAPI", Ty::Msg(DOWNWARD_API_VOLUME_SOURCE)),
    ptr(17, "fc", Ty::Msg(FC_VOLUME_SOURCE)),
    ptr(18, "azureFile", Ty::Msg(AZURE_FILE_VOLUME_SOURCE)),
    ptr(19, "configMap", Ty::Msg(CONFIG_MAP_VOLUME_SOURCE)),
    ptr(
        20,
        "vsphereVolume",
        Ty::Msg(VSPHERE_VIRTUAL_DISK_VOLUME_SOURCE),
    ),
    ptr(21, "quobyte", Ty::Msg(QUOBYTE_VOLUME_SOURCE)),
    ptr(22, "azureDisk", Ty::Msg(AZURE_DISK_VOLUME_SOURCE)),
    ptr(
        23,
        "photonPersistentDisk",
        Ty::Msg(PHOTON_PERSISTENT_DISK_VOLUME_SOURCE),
    ),
    ptr(26, "projected", Ty::Msg(PROJECTED_VOLUME_SOURCE)),
    ptr(24, "portworxVolume", Ty::Msg(PORTWORX_VOLUME_SOURCE)),
    ptr(25, "scaleIO", Ty::Msg(SCALE_IO_VOLUME_SOURCE)),
    ptr(27, "storageos", Ty::Msg(STORAGE_OS_VOLUME_SOURCE)),
    ptr(28, "csi", Ty::Msg(CSI_VOLUME_SOURCE)),
    ptr(29, "ephemeral", Ty::Msg(EPHEMERAL_VOLUME_SOURCE)),
    ptr(30, "image", Ty::Msg(IMAGE_VOLUME_SOURCE)),
];

/// core/v1 HostPathVolumeSource
pub static HOST_PATH_VOLUME_SOURCE: &[F] = &[ptr(1, "path", Ty::Str), ptr(2, "type", Ty::Str)];

/// core/v1 EmptyDirVolumeSource
pub static EMPTY_DIR_VOLUME_SOURCE: &[F] =
    &[f(1, "medium", Ty::Str), ptr(2, "sizeLimit", Ty::Quantity)];

/// core/v1 GCEPersistentDiskVolumeSource
pub static GCE_PERSISTENT_DISK_VOLUME_SOURCE: &[F] = &[
    ptr(1, "pdName", Ty::Str),
    f(2, "fsType", Ty::Str),
    f(3, "partition", Ty::Int),
    f(4, "readOnly", Ty::Bool),
];

/// core/v1 AWSElasticBlockStoreVolumeSource
pub static AWS_ELASTIC_BLOCK_STORE_VOLUME_SOURCE: &[F] = &[
    ptr(1, "volumeID", Ty::Str),
    f(2, "fsType", Ty::Str),
    f(3, "partition", Ty::Int),
    f(4, "readOnly", Ty::Bool),
];

/// core/v1 GitRepoVolumeSource
pub static GIT_REPO_VOLUME_SOURCE: &[F] = &[
    ptr(1, "repository", Ty::Str),
    f(2, "revision", Ty::Str),
    f(3, "directory", Ty::Str),
];

/// core/v1 SecretVolumeSource
pub static SECRET_VOLUME_SOURCE: &[F] = &[
    f(1, "secretName", Ty::Str),
    rep(2, "items", Ty::Msg(KEY_TO_PATH)),
    ptr(3, "defaultMode", Ty::Int),
    ptr(4, "optional", Ty::Bool),
];

/// core/v1 KeyToPath
pub static KEY_TO_PATH: &[F] = &[
    ptr(1, "key", Ty::Str),
    ptr(2, "path", Ty::Str),
    ptr(3, "mode", Ty::Int),
];

/// core/v1 NFSVolumeSource
pub static NFS_VOLUME_SOURCE: &[F] = &[
    ptr(1, "server", Ty::Str),
    ptr(2, "path", Ty::Str),
    f(3, "readOnly", Ty::Bool),
];

/// core/v1 ISCSIVolumeSource
pub static ISCSI_VOLUME_SOURCE: &[F] = &[
    ptr(1, "targetPortal", Ty::Str),
    ptr(2, "iqn", Ty::Str),
    ptr(3, "lun", Ty::Int),
    f(4, "iscsiInterface", Ty::Str),
    f(5, "fsType", Ty::Str),
    f(6, "readOnly", Ty::Bool),
    rep(7, "portals", Ty::Str),
    f(8, "chapAuthDiscovery", Ty::Bool),
    f(11, "chapAuthSession", Ty::Bool),
    ptr(10, "secretRef", Ty::Msg(LOCAL_OBJECT_REFERENCE)),
    ptr(12, "initiatorName", Ty::Str),
];

/// core/v1 LocalObjectReference
pub static LOCAL_OBJECT_REFERENCE: &[F] = &[f(1, "name", Ty::Str)];

/// core/v1 GlusterfsVolumeSource
pub static GLUSTERFS_VOLUME_SOURCE: &[F] = &[
    ptr(1, "endpoints", Ty::Str),
    ptr(2, "path", Ty::Str),
    f(3, "readOnly", Ty::Bool),
];

/// core/v1 PersistentVolumeClaimVolumeSource
pub static PERSISTENT_VOLUME_CLAIM_VOLUME_SOURCE: &[F] =
    &[ptr(1, "claimName", Ty::Str), f(2, "readOnly", Ty::Bool)];

/// core/v1 RBDVolumeSource
pub static RBD_VOLUME_SOURCE: &[F] = &[
    rep(1, "monitors", Ty::Str),
    ptr(2, "image", Ty::Str),
    f(3, "fsType", Ty::Str),
    f(4, "pool", Ty::Str),
    f(5, "user", Ty::Str),
    f(6, "keyring", Ty::Str),
    ptr(7, "secretRef", Ty::Msg(LOCAL_OBJECT_REFERENCE)),
    f(8, "readOnly", Ty::Bool),
];

/// core/v1 FlexVolumeSource
pub static FLEX_VOLUME_SOURCE: &[F] = &[
    ptr(1, "driver", Ty::Str),
    f(2, "fsType", Ty::Str),
    ptr(3, "secretRef", Ty::Msg(LOCAL_OBJECT_REFERENCE)),
    f(4, "readOnly", Ty::Bool),
    f(5, "options", Ty::MapStr),
];

/// core/v1 CinderVolumeSource
pub static CINDER_VOLUME_SOURCE: &[F] = &[
    ptr(1, "volumeID", Ty::Str),
    f(2, "fsType", Ty::Str),
    f(3, "readOnly", Ty::Bool),
    ptr(4, "secretRef", Ty::Msg(LOCAL_OBJECT_REFERENCE)),
];

/// core/v1 CephFSVolumeSource
pub static CEPH_FS_VOLUME_SOURCE: &[F] = &[
    rep(1, "monitors", Ty::Str),
    f(2, "path", Ty::Str),
    f(3, "user", Ty::Str),
    f(4, "secretFile", Ty::Str),
    ptr(5, "secretRef", Ty::Msg(LOCAL_OBJECT_REFERENCE)),
    f(6, "readOnly", Ty::Bool),
];

/// core/v1 FlockerVolumeSource
pub static FLOCKER_VOLUME_SOURCE: &[F] =
    &[f(1, "datasetName", Ty::Str), f(2, "datasetUUID", Ty::Str)];

/// core/v1 DownwardAPIVolumeSource
pub static DOWNWARD_API_VOLUME_SOURCE: &[F] = &[
    rep(1, "items", Ty::Msg(DOWNWARD_API_VOLUME_FILE)),
    ptr(2, "defaultMode", Ty::Int),
];

/// core/v1 DownwardAPIVolumeFile
pub static DOWNWARD_API_VOLUME_FILE: &[F] = &[
    ptr(1, "path", Ty::Str),
    ptr(2, "fieldRef", Ty::Msg(OBJECT_FIELD_SELECTOR)),
    ptr(3, "resourceFieldRef", Ty::Msg(RESOURCE_FIELD_SELECTOR)),
    ptr(4, "mode", Ty::Int),
];

/// core/v1 ObjectFieldSelector
pub static OBJECT_FIELD_SELECTOR: &[F] =
    &[f(1, "apiVersion", Ty::Str), ptr(2, "fieldPath", Ty::Str)];

/// core/v1 ResourceFieldSelector
pub static RESOURCE_FIELD_SELECTOR: &[F] = &[
    f(1, "containerName", Ty::Str),
    ptr(2, "resource", Ty::Str),
    f(3, "divisor", Ty::Quantity),
];

/// core/v1 FCVolumeSource
pub static FC_VOLUME_SOURCE: &[F] = &[
    rep(1, "targetWWNs", Ty::Str),
    ptr(2, "lun", Ty::Int),
    f(3, "fsType", Ty::Str),
    f(4, "readOnly", Ty::Bool),
    rep(5, "wwids", Ty::Str),
];

/// core/v1 AzureFileVolumeSource
pub static AZURE_FILE_VOLUME_SOURCE: &[F] = &[
    ptr(1, "secretName", Ty::Str),
    ptr(2, "shareName", Ty::Str),
    f(3, "readOnly", Ty::Bool),
];

/// core/v1 ConfigMapVolumeSource
pub static CONFIG_MAP_VOLUME_SOURCE: &[F] = &[
    f(1, "", Ty::Msg(LOCAL_OBJECT_REFERENCE)),
    rep(2, "items", Ty::Msg(KEY_TO_PATH)),
    ptr(3, "defaultMode", Ty::Int),
    ptr(4, "optional", Ty::Bool),
];

/// core/v1 VsphereVirtualDiskVolumeSource
pub static VSPHERE_VIRTUAL_DISK_VOLUME_SOURCE: &[F] = &[
    ptr(1, "volumePath", Ty::Str),
    f(2, "fsType", Ty::Str),
    f(3, "storagePolicyName", Ty::Str),
    f(4, "storagePolicyID", Ty::Str),
];

/// core/v1 QuobyteVolumeSource
pub static QUOBYTE_VOLUME_SOURCE: &[F] = &[
    ptr(1, "registry", Ty::Str),
    ptr(2, "volume", Ty::Str),
    f(3, "readOnly", Ty::Bool),
    f(4, "user", Ty::Str),
    f(5, "group", Ty::Str),
    f(6, "tenant", Ty::Str),
];

/// core/v1 AzureDiskVolumeSource
pub static AZURE_DISK_VOLUME_SOURCE: &[F] = &[
    ptr(1, "diskName", Ty::Str),
    ptr(2, "diskURI", Ty::Str),
    ptr(3, "cachingMode", Ty::Str),
    ptr(4, "fsType", Ty::Str),
    ptr(5, "readOnly", Ty::Bool),
    ptr(6, "kind", Ty::Str),
];

/// core/v1 PhotonPersistentDiskVolumeSource
pub static PHOTON_PERSISTENT_DISK_VOLUME_SOURCE: &[F] =
    &[ptr(1, "pdID", Ty::Str), f(2, "fsType", Ty::Str)];

/// core/v1 ProjectedVolumeSource
pub static PROJECTED_VOLUME_SOURCE: &[F] = &[
    rep(1, "sources", Ty::Msg(VOLUME_PROJECTION)),
    ptr(2, "defaultMode", Ty::Int),
];

/// core/v1 VolumeProjection
pub static VOLUME_PROJECTION: &[F] = &[
    ptr(1, "secret", Ty::Msg(SECRET_PROJECTION)),
    ptr(2, "downwardAPI", Ty::Msg(DOWNWARD_API_PROJECTION)),
    ptr(3, "configMap", Ty::Msg(CONFIG_MAP_PROJECTION)),
    ptr(
        4,
        "serviceAccountToken",
        Ty::Msg(SERVICE_ACCOUNT_TOKEN_PROJECTION),
    ),
    ptr(
        5,
        "clusterTrustBundle",
        Ty::Msg(CLUSTER_TRUST_BUNDLE_PROJECTION),
    ),
];

/// core/v1 SecretProjection
pub static SECRET_PROJECTION: &[F] = &[
    f(1, "", Ty::Msg(LOCAL_OBJECT_REFERENCE)),
    rep(2, "items", Ty::Msg(KEY_TO_PATH)),
    ptr(4, "optional", Ty::Bool),
];

/// core/v1 DownwardAPIProjection
pub static DOWNWARD_API_PROJECTION: &[F] = &[rep(1, "items", Ty::Msg(DOWNWARD_API_VOLUME_FILE))];

/// core/v1 ConfigMapProjection
pub static CONFIG_MAP_PROJECTION: &[F] = &[
    f(1, "", Ty::Msg(LOCAL_OBJECT_REFERENCE)),
    rep(2, "items", Ty::Msg(KEY_TO_PATH)),
    ptr(4, "optional", Ty::Bool),
];

/// core/v1 ServiceAccountTokenProjection
pub static SERVICE_ACCOUNT_TOKEN_PROJECTION: &[F] = &[
    f(1, "audience", Ty::Str),
    ptr(2, "expirationSeconds", Ty::Int),
    ptr(3, "path", Ty::Str),
];

/// core/v1 ClusterTrustBundleProjection
pub static CLUSTER_TRUST_BUNDLE_PROJECTION: &[F] = &[
    ptr(1, "name", Ty::Str),
    ptr(2, "signerName", Ty::Str),
    ptr(3, "labelSelector", Ty::Msg(LABEL_SELECTOR)),
    ptr(5, "optional", Ty::Bool),
    ptr(4, "path", Ty::Str),
];

/// meta/v1 LabelSelector
pub static LABEL_SELECTOR: &[F] = &[
    f(1, "matchLabels", Ty::MapStr),
    rep(2, "matchExpressions", Ty::Msg(LABEL_SELECTOR_REQUIREMENT)),
];

/// meta/v1 LabelSelectorRequirement
pub static LABEL_SELECTOR_REQUIREMENT: &[F] = &[
    ptr(1, "key", Ty::Str),
    ptr(2, "operator", Ty::Str),
    rep(3, "values", Ty::Str),
];

/// core/v1 PortworxVolumeSource
pub static PORTWORX_VOLUME_SOURCE: &[F] = &[
    ptr(1, "volumeID", Ty::Str),
    f(2, "fsType", Ty::Str),
    f(3, "readOnly", Ty::Bool),
];

/// core/v1 ScaleIOVolumeSource
pub static SCALE_IO_VOLUME_SOURCE: &[F] = &[
    ptr(1, "gateway", Ty::Str),
    ptr(2, "system", Ty::Str),
    ptr(3, "secretRef", Ty::Msg(LOCAL_OBJECT_REFERENCE)),
    f(4, "sslEnabled", Ty::Bool),
    f(5, "protectionDomain", Ty::Str),
    f(6, "storagePool", Ty::Str),
    f(7, "storageMode", Ty::Str),
    f(8, "volumeName", Ty::Str),
    f(9, "fsType", Ty::Str),
    f(10, "readOnly", Ty::Bool),
];

/// core/v1 StorageOSVolumeSource
pub static STORAGE_OS_VOLUME_SOURCE: &[F] = &[
    f(1, "volumeName", Ty::Str),
    f(2, "volumeNamespace", Ty::Str),
    f(3, "fsType", Ty::Str),
    f(4, "readOnly", Ty::Bool),
    ptr(5, "secretRef", Ty::Msg(LOCAL_OBJECT_REFERENCE)),
];

/// core/v1 CSIVolumeSource
pub static CSI_VOLUME_SOURCE: &[F] = &[
    ptr(1, "driver", Ty::Str),
    ptr(2, "readOnly", Ty::Bool),
    ptr(3, "fsType", Ty::Str),
    f(4, "volumeAttributes", Ty::MapStr),
    ptr(5, "nodePublishSecretRef", Ty::Msg(LOCAL_OBJECT_REFERENCE)),
];

/// core/v1 EphemeralVolumeSource
pub static EPHEMERAL_VOLUME_SOURCE: &[F] = &[ptr(
    1,
    "volumeClaimTemplate",
    Ty::Msg(PERSISTENT_VOLUME_CLAIM_TEMPLATE),
)];

/// core/v1 PersistentVolumeClaimTemplate
pub static PERSISTENT_VOLUME_CLAIM_TEMPLATE: &[F] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)),
    f(2, "spec", Ty::Msg(PERSISTENT_VOLUME_CLAIM_SPEC)),
];

/// core/v1 PersistentVolumeClaimSpec
pub static PERSISTENT_VOLUME_CLAIM_SPEC: &[F] = &[
    rep(1, "accessModes", Ty::Str),
    ptr(4, "selector", Ty::Msg(LABEL_SELECTOR)),
    f(2, "resources", Ty::Msg(VOLUME_RESOURCE_REQUIREMENTS)),
    f(3, "volumeName", Ty::Str),
    ptr(5, "storageClassName", Ty::Str),
    ptr(6, "volumeMode", Ty::Str),
    ptr(7, "dataSource", Ty::Msg(TYPED_LOCAL_OBJECT_REFERENCE)),
    ptr(8, "dataSourceRef", Ty::Msg(TYPED_OBJECT_REFERENCE)),
    ptr(9, "volumeAttributesClassName", Ty::Str),
];

/// core/v1 VolumeResourceRequirements
pub static VOLUME_RESOURCE_REQUIREMENTS: &[F] = &[
    f(1, "limits", Ty::MapMsg(QUANTITY_VALUE)),
    f(2, "requests", Ty::MapMsg(QUANTITY_VALUE)),
];

/// core/v1 TypedLocalObjectReference
pub static TYPED_LOCAL_OBJECT_REFERENCE: &[F] = &[
    ptr(1, "apiGroup", Ty::Str),
    ptr(2, "kind", Ty::Str),
    ptr(3, "name", Ty::Str),
];

/// core/v1 TypedObjectReference
pub static TYPED_OBJECT_REFERENCE: &[F] = &[
    ptr(1, "apiGroup", Ty::Str),
    ptr(2, "kind", Ty::Str),
    ptr(3, "name", Ty::Str),
    ptr(4, "namespace", Ty::Str),
];

/// core/v1 ImageVolumeSource
pub static IMAGE_VOLUME_SOURCE: &[F] = &[f(1, "reference", Ty::Str), f(2, "pullPolicy", Ty::Str)];

/// core/v1 Container
pub static CONTAINER: &[F] = &[
    ptr(1, "name", Ty::Str),
    f(2, "image", Ty::Str),
    rep(3, "command", Ty::Str),
    rep(4, "args", Ty::Str),
    f(5, "workingDir", Ty::Str),
    rep(6, "ports", Ty::Msg(CONTAINER_PORT)),
    rep(19, "envFrom", Ty::Msg(ENV_FROM_SOURCE)),
    rep(7, "env", Ty::Msg(ENV_VAR)),
    f(8, "resources", Ty::Msg(RESOURCE_REQUIREMENTS)),
    rep(23, "resizePolicy", Ty::Msg(CONTAINER_RESIZE_POLICY)),
    ptr(24, "restartPolicy", Ty::Str),
    rep(9, "volumeMounts", Ty::Msg(VOLUME_MOUNT)),
    rep(21, "volumeDevices", Ty::Msg(VOLUME_DEVICE)),
    ptr(10, "livenessProbe", Ty::Msg(PROBE)),
    ptr(11, "readinessProbe", Ty::Msg(PROBE)),
    ptr(22, "startupProbe", Ty::Msg(PROBE)),
    ptr(12, "lifecycle", Ty::Msg(LIFECYCLE)),
    f(13, "terminationMessagePath", Ty::Str),
    f(20, "terminationMessagePolicy", Ty::Str),
    f(14, "imagePullPolicy", Ty::Str),
    ptr(15, "securityContext", Ty::Msg(SECURITY_CONTEXT)),
    f(16, "stdin", Ty::Bool),
    f(17, "stdinOnce", Ty::Bool),
    f(18, "tty", Ty::Bool),
];

/// core/v1 ContainerPort
pub static CONTAINER_PORT: &[F] = &[
    f(1, "name", Ty::Str),
    f(2, "hostPort", Ty::Int),
    ptr(3, "containerPort", Ty::Int),
    f(4, "protocol", Ty::Str),
    f(5, "hostIP", Ty::Str),
];

/// core/v1 EnvFromSource
pub static ENV_FROM_SOURCE: &[F] = &[
    f(1, "prefix", Ty::Str),
    ptr(2, "configMapRef", Ty::Msg(CONFIG_MAP_ENV_SOURCE)),
    ptr(3, "secretRef", Ty::Msg(SECRET_ENV_SOURCE)),
];

/// core/v1 ConfigMapEnvSource
pub static CONFIG_MAP_ENV_SOURCE: &[F] = &[
    f(1, "", Ty::Msg(LOCAL_OBJECT_REFERENCE)),
    ptr(2, "optional", Ty::Bool),
];

/// core/v1 SecretEnvSource
pub static SECRET_ENV_SOURCE: &[F] = &[
    f(1, "", Ty::Msg(LOCAL_OBJECT_REFERENCE)),
    ptr(2, "optional", Ty::Bool),
];

/// core/v1 EnvVar
pub static ENV_VAR: &[F] = &[
    ptr(1, "name", Ty::Str),
    f(2, "value", Ty::Str),
    ptr(3, "valueFrom", Ty::Msg(ENV_VAR_SOURCE)),
];

/// core/v1 EnvVarSource
pub static ENV_VAR_SOURCE: &[F] = &[
    ptr(1, "fieldRef", Ty::Msg(OBJECT_FIELD_SELECTOR)),
    ptr(2, "resourceFieldRef", Ty::Msg(RESOURCE_FIELD_SELECTOR)),
    ptr(3, "configMapKeyRef", Ty::Msg(CONFIG_MAP_KEY_SELECTOR)),
    ptr(4, "secretKeyRef", Ty::Msg(SECRET_KEY_SELECTOR)),
];

/// core/v1 ConfigMapKeySelector
pub static CONFIG_MAP_KEY_SELECTOR: &[F] = &[
    f(1, "", Ty::Msg(LOCAL_OBJECT_REFERENCE)),
    ptr(2, "key", Ty::Str),
    ptr(3, "optional", Ty::Bool),
];

/// core/v1 SecretKeySelector
pub static SECRET_KEY_SELECTOR: &[F] = &[
    f(1, "", Ty::Msg(LOCAL_OBJECT_REFERENCE)),
    ptr(2, "key", Ty::Str),
    ptr(3, "optional", Ty::Bool),
];

/// core/v1 ResourceRequirements
pub static RESOURCE_REQUIREMENTS: &[F] = &[
    f(1, "limits", Ty::MapMsg(QUANTITY_VALUE)),
    f(2, "requests", Ty::MapMsg(QUANTITY_VALUE)),
    rep(3, "claims", Ty::Msg(RESOURCE_CLAIM)),
];

/// core/v1 ResourceClaim
pub static RESOURCE_CLAIM: &[F] = &[ptr(1, "name", Ty::Str), f(2, "request", Ty::Str)];

/// core/v1 ContainerResizePolicy
pub static CONTAINER_RESIZE_POLICY: &[F] = &[
    ptr(1, "resourceName", Ty::Str),
    ptr(2, "restartPolicy", Ty::Str),
];

/// core/v1 VolumeMount
pub static VOLUME_MOUNT: &[F] = &[
    ptr(1, "name", Ty::Str),
    f(2, "readOnly", Ty::Bool),
    ptr(7, "recursiveReadOnly", Ty::Str),
    ptr(3, "mountPath", Ty::Str),
    f(4, "subPath", Ty::Str),
    ptr(5, "mountPropagation", Ty::Str),
    f(6, "subPathExpr", Ty::Str),
];

/// core/v1 VolumeDevice
pub static VOLUME_DEVICE: &[F] = &[ptr(1, "name", Ty::Str), ptr(2, "devicePath", Ty::Str)];

/// core/v1 Probe
pub static PROBE: &[F] = &[
    f(1, "", Ty::Msg(PROBE_HANDLER)),
    f(2, "initialDelaySeconds", Ty::Int),
    f(3, "timeoutSeconds", Ty::Int),
    f(4, "periodSeconds", Ty::Int),
    f(5, "successThreshold", Ty::Int),
    f(6, "failureThreshold", Ty::Int),
    ptr(7, "terminationGracePeriodSeconds", Ty::Int),
];

/// core/v1 ProbeHandler
pub static PROBE_HANDLER: &[F] = &[
    ptr(1, "exec", Ty::Msg(EXEC_ACTION)),
    ptr(2, "httpGet", Ty::Msg(HTTP_GET_ACTION)),
    ptr(3, "tcpSocket", Ty::Msg(TCP_SOCKET_ACTION)),
    ptr(4, "grpc", Ty::Msg(GRPC_ACTION)),
];

/// core/v1 ExecAction
pub static EXEC_ACTION: &[F] = &[rep(1, "command", Ty::Str)];

/// core/v1 HTTPGetAction
pub static HTTP_GET_ACTION: &[F] = &[
    f(1, "path", Ty::Str),
    f(2, "port", Ty::IntOrString),
    f(3, "host", Ty::Str),
    f(4, "scheme", Ty::Str),
    rep(5, "httpHeaders", Ty::Msg(HTTP_HEADER)),
];

/// core/v1 HTTPHeader
pub static HTTP_HEADER: &[F] = &[ptr(1, "name", Ty::Str), ptr(2, "value", Ty::Str)];

/// core/v1 TCPSocketAction
pub static TCP_SOCKET_ACTION: &[F] = &[f(1, "port", Ty::IntOrString), f(2, "host", Ty::Str)];

/// core/v1 GRPCAction
pub static GRPC_ACTION: &[F] = &[ptr(1, "port", Ty::Int), ptr(2, "service", Ty::Str)];

/// core/v1 Lifecycle
pub static LIFECYCLE: &[F] = &[
    ptr(1, "postStart", Ty::Msg(LIFECYCLE_HANDLER)),
    ptr(2, "preStop", Ty::Msg(LIFECYCLE_HANDLER)),
];

/// core/v1 LifecycleHandler
pub static LIFECYCLE_HANDLER: &[F] = &[
    ptr(1, "exec", Ty::Msg(EXEC_ACTION)),
    ptr(2, "httpGet", Ty::Msg(HTTP_GET_ACTION)),
    ptr(3, "tcpSocket", Ty::Msg(TCP_SOCKET_ACTION)),
    ptr(4, "sleep", Ty::Msg(SLEEP_ACTION)),
];

/// core/v1 SleepAction
pub static SLEEP_ACTION: &[F] = &[ptr(1, "seconds", Ty::Int)];

/// core/v1 SecurityContext
pub static SECURITY_CONTEXT: &[F] = &[
    ptr(1, "capabilities", Ty::Msg(CAPABILITIES)),
    ptr(2, "privileged", Ty::Bool),
    ptr(3, "seLinuxOptions", Ty::Msg(SE_LINUX_OPTIONS)),
    ptr(
        10,
        "windowsOptions",
        Ty::Msg(WINDOWS_SECURITY_CONTEXT_OPTIONS),
    ),
    ptr(4, "runAsUser", Ty::Int),
    ptr(8, "runAsGroup", Ty::Int),
    ptr(5, "runAsNonRoot", Ty::Bool),
    ptr(6, "readOnlyRootFilesystem", Ty::Bool),
    ptr(7, "allowPrivilegeEscalation", Ty::Bool),
    ptr(9, "procMount", Ty::Str),
    ptr(11, "seccompProfile", Ty::Msg(SECCOMP_PROFILE)),
    ptr(12, "appArmorProfile", Ty::Msg(APP_ARMOR_PROFILE)),
];

/// core/v1 Capabilities
pub static CAPABILITIES: &[F] = &[rep(1, "add", Ty::Str), rep(2, "drop", Ty::Str)];

/// core/v1 SELinuxOptions
pub static SE_LINUX_OPTIONS: &[F] = &[
    f(1, "user", Ty::Str),
    f(2, "role", Ty::Str),
    f(3, "type", Ty::Str),
    f(4, "level", Ty::Str),
];

/// core/v1 WindowsSecurityContextOptions
pub static WINDOWS_SECURITY_CONTEXT_OPTIONS: &[F] = &[
    ptr(1, "gmsaCredentialSpecName", Ty::Str),
    ptr(2, "gmsaCredentialSpec", Ty::Str),
    ptr(3, "runAsUserName", Ty::Str),
    ptr(4, "hostProcess", Ty::Bool),
];

/// core/v1 SeccompProfile
pub static SECCOMP_PROFILE: &[F] = &[ptr(1, "type", Ty::Str), ptr(2, "localhostProfile", Ty::Str)];

/// core/v1 AppArmorProfile
pub static APP_ARMOR_PROFILE: &[F] =
    &[ptr(1, "type", Ty::Str), ptr(2, "localhostProfile", Ty::Str)];

/// core/v1 EphemeralContainer
pub static EPHEMERAL_CONTAINER: &[F] = &[
    f(1, "", Ty::Msg(EPHEMERAL_CONTAINER_COMMON)),
    f(2, "targetContainerName", Ty::Str),
];

/// core/v1 EphemeralContainerCommon
pub static EPHEMERAL_CONTAINER_COMMON: &[F] = &[
    ptr(1, "name", Ty::Str),
    f(2, "image", Ty::Str),
    rep(3, "command", Ty::Str),
    rep(4, "args", Ty::Str),
    f(5, "workingDir", Ty::Str),
    rep(6, "ports", Ty::Msg(CONTAINER_PORT)),
    rep(19, "envFrom", Ty::Msg(ENV_FROM_SOURCE)),
    rep(7, "env", Ty::Msg(ENV_VAR)),
    f(8, "resources", Ty::Msg(RESOURCE_REQUIREMENTS)),
    rep(23, "resizePolicy", Ty::Msg(CONTAINER_RESIZE_POLICY)),
    ptr(24, "restartPolicy", Ty::Str),
    rep(9, "volumeMounts", Ty::Msg(VOLUME_MOUNT)),
    rep(21, "volumeDevices", Ty::Msg(VOLUME_DEVICE)),
    ptr(10, "livenessProbe", Ty::Msg(PROBE)),
    ptr(11, "readinessProbe", Ty::Msg(PROBE)),
    ptr(22, "startupProbe", Ty::Msg(PROBE)),
    ptr(12, "lifecycle", Ty::Msg(LIFECYCLE)),
    f(13, "terminationMessagePath", Ty::Str),
    f(20, "terminationMessagePolicy", Ty::Str),
    f(14, "imagePullPolicy", Ty::Str),
    ptr(15, "securityContext", Ty::Msg(SECURITY_CONTEXT)),
    f(16, "stdin", Ty::Bool),
    f(17, "stdinOnce", Ty::Bool),
    f(18, "tty", Ty::Bool),
];

/// core/v1 PodSecurityContext
pub static POD_SECURITY_CONTEXT: &[F] = &[
    ptr(1, "seLinuxOptions", Ty::Msg(SE_LINUX_OPTIONS)),
    ptr(
        8,
        "windowsOptions",
        Ty::Msg(WINDOWS_SECURITY_CONTEXT_OPTIONS),
    ),
    ptr(2, "runAsUser", Ty::Int),
    ptr(6, "runAsGroup", Ty::Int),
    ptr(3, "runAsNonRoot", Ty::Bool),
    rep(4, "supplementalGroups", Ty::Int),
    ptr(12, "supplementalGroupsPolicy", Ty::Str),
    ptr(5, "fsGroup", Ty::Int),
    rep(7, "sysctls", Ty::Msg(SYSCTL)),
    ptr(9, "fsGroupChangePolicy", Ty::Str),
    ptr(10, "seccompProfile", Ty::Msg(SECCOMP_PROFILE)),
    ptr(11, "appArmorProfile", Ty::Msg(APP_ARMOR_PROFILE)),
    ptr(13, "seLinuxChangePolicy", Ty::Str),
];

/// core/v1 Sysctl
pub static SYSCTL: &[F] = &[ptr(1, "name", Ty::Str), ptr(2, "value", Ty::Str)];

/// core/v1 Affinity
pub static AFFINITY: &[F] = &[
    ptr(1, "nodeAffinity", Ty::Msg(NODE_AFFINITY)),
    ptr(2, "podAffinity", Ty::Msg(POD_AFFINITY)),
    ptr(3, "podAntiAffinity", Ty::Msg(POD_ANTI_AFFINITY)),
];

/// core/v1 NodeAffinity
pub static NODE_AFFINITY: &[F] = &[
    ptr(
        1,
        "requiredDuringSchedulingIgnoredDuringExecution",
        Ty::Msg(NODE_SELECTOR),
    ),
    rep(
        2,
        "preferredDuringSchedulingIgnoredDuringExecution",
        Ty::Msg(PREFERRED_SCHEDULING_TERM),
    ),
];

/// core/v1 NodeSelector
pub static NODE_SELECTOR: &[F] = &[rep(1, "nodeSelectorTerms", Ty::Msg(NODE_SELECTOR_TERM))];

/// core/v1 NodeSelectorTerm
pub static NODE_SELECTOR_TERM: &[F] = &[
    rep(1, "matchExpressions", Ty::Msg(NODE_SELECTOR_REQUIREMENT)),
    rep(2, "matchFields", Ty::Msg(NODE_SELECTOR_REQUIREMENT)),
];

/// core/v1 NodeSelectorRequirement
pub static NODE_SELECTOR_REQUIREMENT: &[F] = &[
    ptr(1, "key", Ty::Str),
    ptr(2, "operator", Ty::Str),
    rep(3, "values", Ty::Str),
];

/// core/v1 PreferredSchedulingTerm
pub static PREFERRED_SCHEDULING_TERM: &[F] = &[
    ptr(1, "weight", Ty::Int),
    f(2, "preference", Ty::Msg(NODE_SELECTOR_TERM)),
];

/// core/v1 PodAffinity
pub static POD_AFFINITY: &[F] = &[
    rep(
        1,
        "requiredDuringSchedulingIgnoredDuringExecution",
        Ty::Msg(POD_AFFINITY_TERM),
    ),
    rep(
        2,
        "preferredDuringSchedulingIgnoredDuringExecution",
        Ty::Msg(WEIGHTED_POD_AFFINITY_TERM),
    ),
];

/// core/v1 PodAffinityTerm
pub static POD_AFFINITY_TERM: &[F] = &[
    ptr(1, "labelSelector", Ty::Msg(LABEL_SELECTOR)),
    rep(2, "namespaces", Ty::Str),
    ptr(3, "topologyKey", Ty::Str),
    ptr(4, "namespaceSelector", Ty::Msg(LABEL_SELECTOR)),
    rep(5, "matchLabelKeys", Ty::Str),
    rep(6, "mismatchLabelKeys", Ty::Str),
];

/// core/v1 WeightedPodAffinityTerm
pub static WEIGHTED_POD_AFFINITY_TERM: &[F] = &[
    ptr(1, "weight", Ty::Int),
    f(2, "podAffinityTerm", Ty::Msg(POD_AFFINITY_TERM)),
];

/// core/v1 PodAntiAffinity
pub static POD_ANTI_AFFINITY: &[F] = &[
    rep(
        1,
        "requiredDuringSchedulingIgnoredDuringExecution",
        Ty::Msg(POD_AFFINITY_TERM),
    ),
    rep(
        2,
        "preferredDuringSchedulingIgnoredDuringExecution",
        Ty::Msg(WEIGHTED_POD_AFFINITY_TERM),
    ),
];

/// core/v1 Toleration
pub static TOLERATION: &[F] = &[
    f(1, "key", Ty::Str),
    f(2, "operator", Ty::Str),
    f(3, "value", Ty::Str),
    f(4, "effect", Ty::Str),
    ptr(5, "tolerationSeconds", Ty::Int),
];

/// core/v1 HostAlias
pub static HOST_ALIAS: &[F] = &[ptr(1, "ip", Ty::Str), rep(2, "hostnames", Ty::Str)];

/// core/v1 PodDNSConfig
pub static POD_DNS_CONFIG: &[F] = &[
    rep(1, "nameservers", Ty::Str),
    rep(2, "searches", Ty::Str),
    rep(3, "options", Ty::Msg(POD_DNS_CONFIG_OPTION)),
];

/// core/v1 PodDNSConfigOption
pub static POD_DNS_CONFIG_OPTION: &[F] = &[f(1, "name", Ty::Str), ptr(2, "value", Ty::Str)];

/// core/v1 PodReadinessGate
pub static POD_READINESS_GATE: &[F] = &[ptr(1, "conditionType", Ty::Str)];

/// core/v1 TopologySpreadConstraint
pub static TOPOLOGY_SPREAD_CONSTRAINT: &[F] = &[
    ptr(1, "maxSkew", Ty::Int),
    ptr(2, "topologyKey", Ty::Str),
    ptr(3, "whenUnsatisfiable", Ty::Str),
    ptr(4, "labelSelector", Ty::Msg(LABEL_SELECTOR)),
    ptr(5, "minDomains", Ty::Int),
    ptr(6, "nodeAffinityPolicy", Ty::Str),
    ptr(7, "nodeTaintsPolicy", Ty::Str),
    rep(8, "matchLabelKeys", Ty::Str),
];

/// core/v1 PodOS
pub static POD_OS: &[F] = &[ptr(1, "name", Ty::Str)];

/// core/v1 PodSchedulingGate
pub static POD_SCHEDULING_GATE: &[F] = &[ptr(1, "name", Ty::Str)];

/// core/v1 PodResourceClaim
pub static POD_RESOURCE_CLAIM: &[F] = &[
    ptr(1, "name", Ty::Str),
    ptr(3, "resourceClaimName", Ty::Str),
    ptr(4, "resourceClaimTemplateName", Ty::Str),
];

/// core/v1 PodStatus
pub static POD_STATUS: &[F] = &[
    f(1, "phase", Ty::Str),
    rep(2, "conditions", Ty::Msg(POD_CONDITION)),
    f(3, "message", Ty::Str),
    f(4, "reason", Ty::Str),
    f(11, "nominatedNodeName", Ty::Str),
    f(5, "hostIP", Ty::Str),
    rep(16, "hostIPs", Ty::Msg(HOST_IP)),
    f(6, "podIP", Ty::Str),
    rep(12, "podIPs", Ty::Msg(POD_IP)),
    ptr(7, "startTime", Ty::Time),
    rep(10, "initContainerStatuses", Ty::Msg(CONTAINER_STATUS)),
    rep(8, "containerStatuses", Ty::Msg(CONTAINER_STATUS)),
    f(9, "qosClass", Ty::Str),
    rep(13, "ephemeralContainerStatuses", Ty::Msg(CONTAINER_STATUS)),
    f(14, "resize", Ty::Str),
    rep(
        15,
        "resourceClaimStatuses",
        Ty::Msg(POD_RESOURCE_CLAIM_STATUS),
    ),
];

/// core/v1 PodCondition
pub static POD_CONDITION: &[F] = &[
    ptr(1, "type", Ty::Str),
    ptr(2, "status", Ty::Str),
    f(3, "lastProbeTime", Ty::Time),
    f(4, "lastTransitionTime", Ty::Time),
    f(5, "reason", Ty::Str),
    f(6, "message", Ty::Str),
];

/// core/v1 HostIP
pub static HOST_IP: &[F] = &[ptr(1, "ip", Ty::Str)];

/// core/v1 PodIP
pub static POD_IP: &[F] = &[ptr(1, "ip", Ty::Str)];

/// core/v1 ContainerStatus
pub static CONTAINER_STATUS: &[F] = &[
    ptr(1, "name", Ty::Str),
    f(2, "state", Ty::Msg(CONTAINER_STATE)),
    f(3, "lastState", Ty::Msg(CONTAINER_STATE)),
    ptr(4, "ready", Ty::Bool),
    ptr(5, "restartCount", Ty::Int),
    ptr(6, "image", Ty::Str),
    ptr(7, "imageID", Ty::Str),
    f(8, "containerID", Ty::Str),
    ptr(9, "started", Ty::Bool),
    f(10, "allocatedResources", Ty::MapMsg(QUANTITY_VALUE)),
    ptr(11, "resources", Ty::Msg(RESOURCE_REQUIREMENTS)),
    rep(12, "volumeMounts", Ty::Msg(VOLUME_MOUNT_STATUS)),
    ptr(13, "user", Ty::Msg(CONTAINER_USER)),
    rep(14, "allocatedResourcesStatus", Ty::Msg(RESOURCE_STATUS)),
];

/// core/v1 ContainerState
pub static CONTAINER_STATE: &[F] = &[
    ptr(1, "waiting", Ty::Msg(CONTAINER_STATE_WAITING)),
    ptr(2, "running", Ty::Msg(CONTAINER_STATE_RUNNING)),
    ptr(3, "terminated", Ty::Msg(CONTAINER_STATE_TERMINATED)),
];

/// core/v1 ContainerStateWaiting
pub static CONTAINER_STATE_WAITING: &[F] = &[f(1, "reason", Ty::Str), f(2, "message", Ty::Str)];

/// core/v1 ContainerStateRunning
pub static CONTAINER_STATE_RUNNING: &[F] = &[f(1, "startedAt", Ty::Time)];

/// core/v1 ContainerStateTerminated
pub static CONTAINER_STATE_TERMINATED: &[F] = &[
    ptr(1, "exitCode", Ty::Int),
    f(2, "signal", Ty::Int),
    f(3, "reason", Ty::Str),
    f(4, "message", Ty::Str),
    f(5, "startedAt", Ty::Time),
    f(6, "finishedAt", Ty::Time),
    f(7, "containerID", Ty::Str),
];

/// core/v1 VolumeMountStatus
pub static VOLUME_MOUNT_STATUS: &[F] = &[
    ptr(1, "name", Ty::Str),
    ptr(2, "mountPath", Ty::Str),
    f(3, "readOnly", Ty::Bool),
    ptr(4, "recursiveReadOnly", Ty::Str),
];

/// core/v1 ContainerUser
pub static CONTAINER_USER: &[F] = &[ptr(1, "linux", Ty::Msg(LINUX_CONTAINER_USER))];

/// core/v1 LinuxContainerUser
pub static LINUX_CONTAINER_USER: &[F] = &[
    ptr(1, "uid", Ty::Int),
    ptr(2, "gid", Ty::Int),
    rep(3, "supplementalGroups", Ty::Int),
];

/// core/v1 ResourceStatus
pub static RESOURCE_STATUS: &[F] = &[
    ptr(1, "name", Ty::Str),
    rep(2, "resources", Ty::Msg(RESOURCE_HEALTH)),
];

/// core/v1 ResourceHealth
pub static RESOURCE_HEALTH: &[F] = &[ptr(1, "resourceID", Ty::Str), f(2, "health", Ty::Str)];

/// core/v1 PodResourceClaimStatus
pub static POD_RESOURCE_CLAIM_STATUS: &[F] = &[
    ptr(1, "name", Ty::Str),
    ptr(2, "resourceClaimName", Ty::Str),
];

/// core/v1 Event
pub static EVENT: &[F] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)),
    f(2, "involvedObject", Ty::Msg(OBJECT_REFERENCE)),
    f(3, "reason", Ty::Str),
    f(4, "message", Ty::Str),
    f(5, "source", Ty::Msg(EVENT_SOURCE)),
    f(6, "firstTimestamp", Ty::Time),
    f(7, "lastTimestamp", Ty::Time),
    f(8, "count", Ty::Int),
    f(9, "type", Ty::Str),
    f(10, "eventTime", Ty::Time),
    ptr(11, "series", Ty::Msg(EVENT_SERIES)),
    f(12, "action", Ty::Str),
    ptr(13, "related", Ty::Msg(OBJECT_REFERENCE)),
    ptr(14, "reportingComponent", Ty::Str),
    ptr(15, "reportingInstance", Ty::Str),
];

/// core/v1 ObjectReference
pub static OBJECT_REFERENCE: &[F] = &[
    f(1, "kind", Ty::Str),
    f(2, "namespace", Ty::Str),
    f(3, "name", Ty::Str),
    f(4, "uid", Ty::Str),
    f(5, "apiVersion", Ty::Str),
    f(6, "resourceVersion", Ty::Str),
    f(7, "fieldPath", Ty::Str),
];

/// core/v1 EventSource
pub static EVENT_SOURCE: &[F] = &[f(1, "component", Ty::Str), f(2, "host", Ty::Str)];

/// core/v1 EventSeries
pub static EVENT_SERIES: &[F] = &[f(1, "count", Ty::Int), f(2, "lastObservedTime", Ty::Time)];

/// core/v1 Endpoints
pub static ENDPOINTS: &[F] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)),
    rep(2, "subsets", Ty::Msg(ENDPOINT_SUBSET)),
];

/// core/v1 EndpointSubset
pub static ENDPOINT_SUBSET: &[F] = &[
    rep(1, "addresses", Ty::Msg(ENDPOINT_ADDRESS)),
    rep(2, "notReadyAddresses", Ty::Msg(ENDPOINT_ADDRESS)),
    rep(3, "ports", Ty::Msg(ENDPOINT_PORT)),
];

/// core/v1 EndpointAddress
pub static ENDPOINT_ADDRESS: &[F] = &[
    ptr(1, "ip", Ty::Str),
    f(3, "hostname", Ty::Str),
    ptr(4, "nodeName", Ty::Str),
    ptr(2, "targetRef", Ty::Msg(OBJECT_REFERENCE)),
];

/// core/v1 EndpointPort
pub static ENDPOINT_PORT: &[F] = &[
    f(1, "name", Ty::Str),
    ptr(2, "port", Ty::Int),
    f(3, "protocol", Ty::Str),
    ptr(4, "appProtocol", Ty::Str),
];

/// core/v1 ServiceAccount
pub static SERVICE_ACCOUNT: &[F] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)),
    rep(2, "secrets", Ty::Msg(OBJECT_REFERENCE)),
    rep(3, "imagePullSecrets", Ty::Msg(LOCAL_OBJECT_REFERENCE)),
    ptr(4, "automountServiceAccountToken", Ty::Bool),
];

/// apps/v1 Deployment
pub static DEPLOYMENT: &[F] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)),
    f(2, "spec", Ty::Msg(DEPLOYMENT_SPEC)),
    f(3, "status", Ty::Msg(DEPLOYMENT_STATUS)),
];

/// apps/v1 DeploymentSpec
pub static DEPLOYMENT_SPEC: &[F] = &[
    ptr(1, "replicas", Ty::Int),
    ptr(2, "selector", Ty::Msg(LABEL_SELECTOR)),
    f(3, "template", Ty::Msg(POD_TEMPLATE_SPEC)),
    f(4, "strategy", Ty::Msg(DEPLOYMENT_STRATEGY)),
    f(5, "minReadySeconds", Ty::Int),
    ptr(6, "revisionHistoryLimit", Ty::Int),
    f(7, "paused", Ty::Bool),
    ptr(9, "progressDeadlineSeconds", Ty::Int),
];

/// core/v1 PodTemplateSpec
pub static POD_TEMPLATE_SPEC: &[F] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)),
    f(2, "spec", Ty::Msg(POD_SPEC)),
];

/// apps/v1 DeploymentStrategy
pub static DEPLOYMENT_STRATEGY: &[F] = &[
    f(1, "type", Ty::Str),
    ptr(2, "rollingUpdate", Ty::Msg(ROLLING_UPDATE_DEPLOYMENT)),
];

/// apps/v1 RollingUpdateDeployment
pub static ROLLING_UPDATE_DEPLOYMENT: &[F] = &[
    ptr(1, "maxUnavailable", Ty::IntOrString),
    ptr(2, "maxSurge", Ty::IntOrString),
];

/// apps/v1 DeploymentStatus
pub static DEPLOYMENT_STATUS: &[F] = &[
    f(1, "observedGeneration", Ty::Int),
    f(2, "replicas", Ty::Int),
    f(3, "updatedReplicas", Ty::Int),
    f(7, "readyReplicas", Ty::Int),
    f(4, "availableReplicas", Ty::Int),
    f(5, "unavailableReplicas", Ty::Int),
    rep(6, "conditions", Ty::Msg(DEPLOYMENT_CONDITION)),
    ptr(8, "collisionCount", Ty::Int),
];

/// apps/v1 DeploymentCondition
pub static DEPLOYMENT_CONDITION: &[F] = &[
    ptr(1, "type", Ty::Str),
    ptr(2, "status", Ty::Str),
    f(6, "lastUpdateTime", Ty::Time),
    f(7, "lastTransitionTime", Ty::Time),
    f(4, "reason", Ty::Str),
    f(5, "message", Ty::Str),
];

/// apps/v1 ReplicaSet
pub static REPLICA_SET: &[F] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)),
    f(2, "spec", Ty::Msg(REPLICA_SET_SPEC)),
    f(3, "status", Ty::Msg(REPLICA_SET_STATUS)),
];

/// apps/v1 ReplicaSetSpec
pub static REPLICA_SET_SPEC: &[F] = &[
    ptr(1, "replicas", Ty::Int),
    f(4, "minReadySeconds", Ty::Int),
    ptr(2, "selector", Ty::Msg(LABEL_SELECTOR)),
    f(3, "template", Ty::Msg(POD_TEMPLATE_SPEC)),
];

/// apps/v1 ReplicaSetStatus
pub static REPLICA_SET_STATUS: &[F] = &[
    ptr(1, "replicas", Ty::Int),
    f(2, "fullyLabeledReplicas", Ty::Int),
    f(4, "readyReplicas", Ty::Int),
    f(5, "availableReplicas", Ty::Int),
    f(3, "observedGeneration", Ty::Int),
    rep(6, "conditions", Ty::Msg(REPLICA_SET_CONDITION)),
];

/// apps/v1 ReplicaSetCondition
pub static REPLICA_SET_CONDITION: &[F] = &[
    ptr(1, "type", Ty::Str),
    ptr(2, "status", Ty::Str),
    f(3, "lastTransitionTime", Ty::Time),
    f(4, "reason", Ty::Str),
    f(5, "message", Ty::Str),
];

/// discovery/v1 EndpointSlice
pub static DISCOVERY_ENDPOINT_SLICE: &[F] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)),
    ptr(4, "addressType", Ty::Str),
    rep(2, "endpoints", Ty::Msg(DISCOVERY_ENDPOINT)),
    rep(3, "ports", Ty::Msg(DISCOVERY_ENDPOINT_PORT)),
];

/// discovery/v1 Endpoint
pub static DISCOVERY_ENDPOINT: &[F] = &[
    rep(1, "addresses", Ty::Str),
    f(2, "conditions", Ty::Msg(DISCOVERY_ENDPOINT_CONDITIONS)),
    ptr(3, "hostname", Ty::Str),
    ptr(4, "targetRef", Ty::Msg(OBJECT_REFERENCE)),
    f(5, "deprecatedTopology", Ty::MapStr),
    ptr(6, "nodeName", Ty::Str),
    ptr(7, "zone", Ty::Str),
    ptr(8, "hints", Ty::Msg(DISCOVERY_ENDPOINT_HINTS)),
];

/// discovery/v1 EndpointConditions
pub static DISCOVERY_ENDPOINT_CONDITIONS: &[F] = &[
    ptr(1, "ready", Ty::Bool),
    ptr(2, "serving", Ty::Bool),
    ptr(3, "terminating", Ty::Bool),
];

/// discovery/v1 EndpointHints
pub static DISCOVERY_ENDPOINT_HINTS: &[F] = &[rep(1, "forZones", Ty::Msg(DISCOVERY_FOR_ZONE))];

/// discovery/v1 ForZone
pub static DISCOVERY_FOR_ZONE: &[F] = &[ptr(1, "name", Ty::Str)];

/// discovery/v1 EndpointPort
pub static DISCOVERY_ENDPOINT_PORT: &[F] = &[
    ptr(1, "name", Ty::Str),
    ptr(2, "protocol", Ty::Str),
    ptr(3, "port", Ty::Int),
    ptr(4, "appProtocol", Ty::Str),
];

/// autoscaling/v1 Scale
pub static SCALE: &[F] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)),
    f(2, "spec", Ty::Msg(SCALE_SPEC)),
    f(3, "status", Ty::Msg(SCALE_STATUS)),
];

/// autoscaling/v1 ScaleSpec
pub static SCALE_SPEC: &[F] = &[f(1, "replicas", Ty::Int)];

/// autoscaling/v1 ScaleStatus
pub static SCALE_STATUS: &[F] = &[ptr(1, "replicas", Ty::Int), f(2, "selector", Ty::Str)];
