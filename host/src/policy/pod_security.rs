//! Workload content rules: the checks every object a module applies passes before the
//! host writes it.
//!
//! Guarantees of [`check_object`]:
//! - **Pod templates.** For the kinds that carry a pod template — core `Pod`,
//!   `PodTemplate` and `ReplicationController`; `apps` `Deployment`, `StatefulSet`,
//!   `DaemonSet` and `ReplicaSet`; `batch` `Job` and `CronJob` (any version of the group,
//!   since the module picks the version; also the old `extensions` `Deployment`,
//!   `DaemonSet` and `ReplicaSet`) — the pod spec and pod metadata are held to the
//!   [Pod Security Standards](https://kubernetes.io/docs/concepts/security/pod-security-standards/)
//!   at the administrator's [`PodSecurityLevel`]:
//!   - *baseline*: no HostProcess, no host namespaces, no privileged containers, only the
//!     default capabilities added, no hostPath volumes, no host ports, AppArmor, SELinux,
//!     seccomp and `/proc` mount left at or confined to the allowed values, only the safe
//!     sysctls, and no `host` in probes and lifecycle hooks;
//!   - *restricted*: all of baseline, plus only the standard's volume types (configMap,
//!     csi, downwardAPI, emptyDir, ephemeral, persistentVolumeClaim, projected, secret), no
//!     privilege escalation, non-root (`runAsNonRoot: true`, `runAsUser` not 0), a
//!     confining seccomp profile, and every capability dropped (only
//!     `NET_BIND_SERVICE` added back);
//!   - *privileged*: no Pod Security check.
//!
//!   Every container is checked: `containers`, `initContainers` and `ephemeralContainers`.
//! - **Always**, at every level: a pod template names no ServiceAccount other than
//!   `default` and those the administrator allows (`serviceAccountName` and the deprecated
//!   `serviceAccount`), and a core `Service` sets no `spec.externalIPs` (CVE-2020-8554: a
//!   Service with external IPs can intercept traffic meant for those addresses).
//! - **Wrong types fail.** A checked field (or any object or list on the way to it) of an
//!   unexpected JSON type counts as a violation rather than passing: `privileged: "true"`,
//!   `hostNetwork: 1` or `securityContext: []` are refused, because the API server or a
//!   later Kubernetes version might read them differently from this check. JSON `null`
//!   counts as unset, as it does for the API server. An object without a string
//!   `apiVersion` and `kind` is refused too, since its kind cannot be told.
//! - **Unknown kinds pass.** Kinds not listed above (ConfigMaps, custom resources, ...) are
//!   not checked; an administrator who lets modules write a custom kind that creates pods
//!   (an operator's CRD) must judge that kind on its own.
//!
//! The check reads the object as sent: it holds for what a create, a replace or a
//! server-side apply writes, not for what a merge patch would combine with stored state.
//! Kinds and groups are compared ignoring ASCII case, so an odd spelling cannot skip the
//! check. Where the standard exempts Windows pods (`spec.os.name: windows`) or pods in a
//! user namespace (`hostUsers: false`) from a restricted rule, this check does not
//! (stricter, and one less field the module's own say-so could relax).

use serde_json::Value;

/// How strict the pod-template check is (`--pod-security`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PodSecurityLevel {
    /// No Pod Security check; only the rules applied at every level.
    Privileged,
    /// The Pod Security Standards' baseline profile: no known privilege escalation.
    #[default]
    Baseline,
    /// The Pod Security Standards' restricted profile: baseline plus current hardening.
    Restricted,
}

/// The administrator's rules for workload content.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkloadPolicy {
    /// How strict the pod-template check is.
    pub level: PodSecurityLevel,
    /// ServiceAccounts a pod template may name besides `default` (`--allow-service-account`).
    pub allowed_service_accounts: Vec<String>,
}

/// One field of an applied object that the policy refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {rule}")]
pub struct Violation {
    /// Path of the field, e.g. `spec.template.spec.containers[0].securityContext.privileged`.
    /// Containers and other list items are named by index, never by their
    /// (module-chosen) names; map keys the module chose are escaped and shortened.
    pub field: String,
    /// What the rule allows, e.g. "must be unset or false (Pod Security baseline)".
    pub rule: &'static str,
}

/// Checks `object` (an applied object with apiVersion and kind) against `policy`.
///
/// Returns the first violation found. Kinds without pod templates are Ok, except for the
/// core Service rule; see the module documentation for what is checked.
pub fn check_object(object: &Value, policy: &WorkloadPolicy) -> Result<(), Violation> {
    let object_type = ObjectType::of(object)?;
    let root = Field::new(String::new(), Some(object));
    if object_type.is_core("Service") {
        check_service(&root)?;
    }
    let Some(template_path) = object_type.pod_template_path() else {
        return Ok(());
    };
    let template = root.descend(template_path)?;
    let pod = PodTemplate { metadata: template.child("metadata")?, spec: template.child("spec")? };
    check_service_accounts(&pod.spec, policy)?;
    match policy.level {
        PodSecurityLevel::Privileged => Ok(()),
        PodSecurityLevel::Baseline => check_baseline(&pod),
        // Restricted is cumulative: the standard defines it as baseline plus more.
        PodSecurityLevel::Restricted => check_baseline(&pod).and_then(|()| check_restricted(&pod)),
    }
}

// ---------------------------------------------------------------------------------------
// Rules (what a violation says is allowed)
// ---------------------------------------------------------------------------------------

const MUST_BE_OBJECT: &str = "must be a JSON object";
const MUST_BE_LIST: &str = "must be a JSON array";
const MUST_BE_STRING: &str = "must be a string";

const SERVICE_EXTERNAL_IPS: &str =
    "must be unset or empty: external IPs let a Service intercept traffic to those addresses (CVE-2020-8554)";
const SERVICE_ACCOUNT: &str =
    "must be unset, empty or `default`, or a ServiceAccount allowed by --allow-service-account";

const BASELINE_FALSE: &str = "must be unset or false (Pod Security baseline)";
const BASELINE_UNSET_OR_EMPTY: &str = "must be unset or empty (Pod Security baseline)";
const BASELINE_CAPABILITY: &str = "may add only AUDIT_WRITE, CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL, MKNOD, \
     NET_BIND_SERVICE, SETFCAP, SETGID, SETPCAP, SETUID or SYS_CHROOT (Pod Security baseline)";
const BASELINE_HOST_PATH: &str = "must be unset: hostPath volumes are forbidden (Pod Security baseline)";
const BASELINE_HOST_PORT: &str = "must be unset or 0 (Pod Security baseline)";
const BASELINE_PROFILE_TYPE: &str = "must be unset, RuntimeDefault or Localhost (Pod Security baseline)";
const BASELINE_APPARMOR_ANNOTATION: &str =
    "must be runtime/default or localhost/<profile> (Pod Security baseline)";
const BASELINE_SELINUX_TYPE: &str = "must be unset, empty, container_t, container_init_t, container_kvm_t \
     or container_engine_t (Pod Security baseline)";
const BASELINE_PROC_MOUNT: &str = "must be unset or Default (Pod Security baseline)";
const BASELINE_SYSCTL: &str = "must name a safe sysctl (Pod Security baseline)";

const RESTRICTED_VOLUME_TYPE: &str = "volume type not allowed: only configMap, csi, downwardAPI, emptyDir, \
     ephemeral, persistentVolumeClaim, projected and secret (Pod Security restricted)";
const RESTRICTED_NO_ESCALATION: &str = "must be false (Pod Security restricted)";
const RESTRICTED_UNSET_OR_TRUE: &str = "must be unset or true (Pod Security restricted)";
const RESTRICTED_NON_ROOT: &str =
    "must be true, on the container or in the pod's securityContext (Pod Security restricted)";
const RESTRICTED_RUN_AS_USER: &str = "must be unset or a non-zero user ID (Pod Security restricted)";
const RESTRICTED_SECCOMP: &str = "must be RuntimeDefault or Localhost, on the container or in the pod's \
     securityContext (Pod Security restricted)";
const RESTRICTED_DROP_ALL: &str = "must include ALL (Pod Security restricted)";
const RESTRICTED_CAPABILITY: &str = "may add only NET_BIND_SERVICE (Pod Security restricted)";

// ---------------------------------------------------------------------------------------
// Allowed values (from the Pod Security Standards, Kubernetes 1.34)
// ---------------------------------------------------------------------------------------

/// The capabilities baseline lets a container add: the container runtimes' default set.
pub const BASELINE_CAPABILITIES: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// The one capability restricted lets a container add back after dropping ALL.
const RESTRICTED_CAPABILITIES: &[&str] = &["NET_BIND_SERVICE"];

/// Seccomp and AppArmor profile types that keep the container confined.
const CONFINING_PROFILE_TYPES: &[&str] = &["RuntimeDefault", "Localhost"];

/// SELinux types baseline allows; the empty string means "the runtime's default".
const SELINUX_TYPES: &[&str] =
    &["", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"];

/// The sysctls the kubelet treats as safe: namespaced and isolated from other pods.
/// Names are compared exactly; the kubelet's `/`-separated spelling is refused (safe side).
const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
];

/// Volume sources restricted allows: none reaches the node or an unmanaged remote store.
const RESTRICTED_VOLUME_TYPES: &[&str] = &[
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

/// The pod annotations through which AppArmor was set before the field existed; the
/// kubelet still honours them, so they are checked like the field.
const APPARMOR_ANNOTATION_PREFIX: &str = "container.apparmor.security.beta.kubernetes.io/";

/// The three lists that hold containers; all of them run on the node.
const CONTAINER_LISTS: &[&str] = &["containers", "initContainers", "ephemeralContainers"];

/// Probes and lifecycle hooks: their `httpGet` and `tcpSocket` handlers take a `host`
/// that would make the kubelet connect anywhere on the module's behalf.
const PROBES: &[&str] = &["livenessProbe", "readinessProbe", "startupProbe"];
const LIFECYCLE_HOOKS: &[&str] = &["postStart", "preStop"];
const HANDLERS_WITH_HOST: &[&str] = &["httpGet", "tcpSocket"];

// ---------------------------------------------------------------------------------------
// Where the pod template is
// ---------------------------------------------------------------------------------------

/// The API group and kind of the applied object.
struct ObjectType<'v> {
    group: &'v str,
    kind: &'v str,
}

impl<'v> ObjectType<'v> {
    /// Reads apiVersion and kind; without both as strings the kind is unknowable, so the
    /// object is refused rather than waved through as "unknown kind".
    fn of(object: &'v Value) -> Result<Self, Violation> {
        let string = |key: &'static str| {
            object.get(key).and_then(Value::as_str).ok_or_else(|| violation(key, MUST_BE_STRING))
        };
        let api_version = string("apiVersion")?;
        let kind = string("kind")?;
        // `v1` is the core group, `apps/v1` the group `apps`. The version is ignored: the
        // module picks it, and every version of these kinds keeps the template in one place.
        let group = api_version.split_once('/').map_or("", |(group, _)| group);
        Ok(Self { group, kind })
    }

    /// Whether this is `kind` of the core group.
    fn is_core(&self, kind: &str) -> bool {
        self.group.is_empty() && self.kind.eq_ignore_ascii_case(kind)
    }

    /// Keys from the object to its pod template (the object holding the pod's `metadata`
    /// and `spec`); empty for a Pod, `None` for kinds without a pod template.
    fn pod_template_path(&self) -> Option<&'static [&'static str]> {
        const POD: &[&str] = &[];
        const POD_TEMPLATE: &[&str] = &["template"];
        const WORKLOAD: &[&str] = &["spec", "template"];
        const CRON_JOB: &[&str] = &["spec", "jobTemplate", "spec", "template"];
        let group = self.group.to_ascii_lowercase();
        let kind = self.kind.to_ascii_lowercase();
        match (group.as_str(), kind.as_str()) {
            ("", "pod") => Some(POD),
            ("", "podtemplate") => Some(POD_TEMPLATE),
            ("", "replicationcontroller")
            | ("apps", "deployment" | "statefulset" | "daemonset" | "replicaset")
            | ("batch", "job") => Some(WORKLOAD),
            // `extensions` served these kinds until Kubernetes 1.16; checking them costs
            // nothing and closes the door on an old cluster.
            ("extensions", "deployment" | "daemonset" | "replicaset") => Some(WORKLOAD),
            ("batch", "cronjob") => Some(CRON_JOB),
            _ => None,
        }
    }
}

/// A pod template: the pod's metadata (annotations) and spec.
struct PodTemplate<'v> {
    metadata: Field<'v>,
    spec: Field<'v>,
}

// ---------------------------------------------------------------------------------------
// Field access that refuses wrong types
// ---------------------------------------------------------------------------------------

/// A field of the applied object: its path (for the violation) and its value, `None` when
/// absent or JSON `null` (the API server reads `null` as unset, so the check does too).
#[derive(Debug, Clone)]
struct Field<'v> {
    path: String,
    value: Option<&'v Value>,
}

impl<'v> Field<'v> {
    fn new(path: String, value: Option<&'v Value>) -> Self {
        Self { path, value: value.filter(|value| !value.is_null()) }
    }

    /// The member `key`. An unset field has unset members; a field that is set but is not
    /// an object is a violation, since something in it could hide what is checked.
    fn child(&self, key: &str) -> Result<Field<'v>, Violation> {
        let path = if self.path.is_empty() { key.to_owned() } else { format!("{}.{key}", self.path) };
        match self.value {
            None => Ok(Field::new(path, None)),
            Some(Value::Object(members)) => Ok(Field::new(path, members.get(key))),
            Some(_) => Err(self.violation(MUST_BE_OBJECT)),
        }
    }

    /// The field reached through `keys`, one [`Field::child`] at a time.
    fn descend(&self, keys: &[&str]) -> Result<Field<'v>, Violation> {
        keys.iter().try_fold(self.clone(), |field, key| field.child(key))
    }

    /// The items of a list; none when unset, a violation when set but not a list.
    fn items(&self) -> Result<Vec<Field<'v>>, Violation> {
        match self.value {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => Ok(items
                .iter()
                .enumerate()
                .map(|(index, item)| Field::new(format!("{}[{index}]", self.path), Some(item)))
                .collect()),
            Some(_) => Err(self.violation(MUST_BE_LIST)),
        }
    }

    /// The members of a map (raw values, `null` included); none when unset, a violation
    /// when set but not an object.
    fn entries(&self) -> Result<Vec<(&'v str, &'v Value)>, Violation> {
        match self.value {
            None => Ok(Vec::new()),
            Some(Value::Object(members)) => {
                Ok(members.iter().map(|(key, value)| (key.as_str(), value)).collect())
            }
            Some(_) => Err(self.violation(MUST_BE_OBJECT)),
        }
    }

    /// Unset passes; a set value must satisfy `allowed`.
    fn check(&self, allowed: impl Fn(&Value) -> bool, rule: &'static str) -> Result<(), Violation> {
        match self.value {
            Some(value) if !allowed(value) => Err(self.violation(rule)),
            _ => Ok(()),
        }
    }

    /// The value must be set and satisfy `allowed`.
    fn require(&self, allowed: impl Fn(&Value) -> bool, rule: &'static str) -> Result<(), Violation> {
        if self.value.is_some_and(allowed) { Ok(()) } else { Err(self.violation(rule)) }
    }

    /// Whether the value is set and satisfies `allowed`.
    fn is(&self, allowed: impl Fn(&Value) -> bool) -> bool {
        self.value.is_some_and(allowed)
    }

    fn violation(&self, rule: &'static str) -> Violation {
        violation(self.path.clone(), rule)
    }
}

fn violation(field: impl Into<String>, rule: &'static str) -> Violation {
    Violation { field: field.into(), rule }
}

/// A map key the module chose, fit for a field path: plain Kubernetes-style keys as they
/// are, anything else quoted, escaped and shortened, so a hostile key can neither forge
/// log lines nor flood them.
fn display_key(key: &str) -> String {
    const MAX_CHARS: usize = 100;
    let plain = key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/'));
    if plain && key.len() <= MAX_CHARS {
        return key.to_owned();
    }
    let shortened: String = key.chars().take(MAX_CHARS).collect();
    format!("{shortened:?}")
}

// Predicates on set values. A value of another JSON type never satisfies them.

fn is_false(value: &Value) -> bool {
    value.as_bool() == Some(false)
}

fn is_true(value: &Value) -> bool {
    value.as_bool() == Some(true)
}

fn is_empty_string(value: &Value) -> bool {
    value.as_str() == Some("")
}

fn is_empty_list(value: &Value) -> bool {
    value.as_array().is_some_and(Vec::is_empty)
}

fn is_zero(value: &Value) -> bool {
    value.as_i64() == Some(0)
}

/// A user ID other than root's. Only JSON integers count: `"1000"` or `1000.0` would not
/// decode as an ID, so they are not given the benefit of the doubt.
fn is_non_zero_id(value: &Value) -> bool {
    value.as_i64().is_some_and(|id| id != 0) || value.as_u64().is_some_and(|id| id != 0)
}

fn is_one_of(allowed: &'static [&'static str]) -> impl Fn(&Value) -> bool {
    move |value| value.as_str().is_some_and(|value| allowed.contains(&value))
}

fn is_confining_profile(value: &Value) -> bool {
    is_one_of(CONFINING_PROFILE_TYPES)(value)
}

/// `runtime/default` or `localhost/<profile>`; `unconfined` and anything else is refused.
fn is_confining_apparmor_annotation(value: &Value) -> bool {
    value.as_str().is_some_and(|value| value == "runtime/default" || value.starts_with("localhost/"))
}

// ---------------------------------------------------------------------------------------
// Always: Service external IPs, ServiceAccounts
// ---------------------------------------------------------------------------------------

/// `spec.externalIPs` of a core Service must be unset or empty (CVE-2020-8554).
fn check_service(service: &Field) -> Result<(), Violation> {
    service.child("spec")?.child("externalIPs")?.check(is_empty_list, SERVICE_EXTERNAL_IPS)
}

/// The pod's ServiceAccount carries the pod's API rights, so only `default` (or an
/// administrator-allowed one) may be named. The deprecated `serviceAccount` is still read
/// by the API server when `serviceAccountName` is empty, so it is held to the same rule.
fn check_service_accounts(spec: &Field, policy: &WorkloadPolicy) -> Result<(), Violation> {
    let allowed = |value: &Value| value.as_str().is_some_and(|name| is_allowed_service_account(name, policy));
    for key in ["serviceAccountName", "serviceAccount"] {
        spec.child(key)?.check(allowed, SERVICE_ACCOUNT)?;
    }
    Ok(())
}

fn is_allowed_service_account(name: &str, policy: &WorkloadPolicy) -> bool {
    name.is_empty()
        || name == "default"
        || policy.allowed_service_accounts.iter().any(|allowed| allowed == name)
}

// ---------------------------------------------------------------------------------------
// Baseline
// ---------------------------------------------------------------------------------------

fn check_baseline(pod: &PodTemplate) -> Result<(), Violation> {
    check_host_namespaces(&pod.spec)?;
    check_pod_security_context(&pod.spec.child("securityContext")?)?;
    check_host_path_volumes(&pod.spec)?;
    check_apparmor_annotations(&pod.metadata)?;
    for container in containers(&pod.spec)? {
        check_container_baseline(&container)?;
    }
    Ok(())
}

/// Every container of the pod, whichever list it is in.
fn containers<'v>(spec: &Field<'v>) -> Result<Vec<Field<'v>>, Violation> {
    let mut all = Vec::new();
    for list in CONTAINER_LISTS {
        all.extend(spec.child(list)?.items()?);
    }
    Ok(all)
}

/// Sharing the node's network, PID or IPC namespace escapes the pod's isolation.
fn check_host_namespaces(spec: &Field) -> Result<(), Violation> {
    for key in ["hostNetwork", "hostPID", "hostIPC"] {
        spec.child(key)?.check(is_false, BASELINE_FALSE)?;
    }
    Ok(())
}

fn check_pod_security_context(context: &Field) -> Result<(), Violation> {
    check_shared_security_context(context)?;
    check_sysctls(&context.child("sysctls")?)
}

/// The settings the pod and its containers share (the container's wins, so both count).
fn check_shared_security_context(context: &Field) -> Result<(), Violation> {
    // A Windows HostProcess container runs on the node itself.
    context.child("windowsOptions")?.child("hostProcess")?.check(is_false, BASELINE_FALSE)?;
    check_selinux(&context.child("seLinuxOptions")?)?;
    context.child("seccompProfile")?.child("type")?.check(is_confining_profile, BASELINE_PROFILE_TYPE)?;
    context.child("appArmorProfile")?.child("type")?.check(is_confining_profile, BASELINE_PROFILE_TYPE)
}

/// A custom SELinux user or role, or a type outside the container types, lifts the
/// SELinux confinement; the level (MCS categories) only separates containers and is free.
fn check_selinux(options: &Field) -> Result<(), Violation> {
    options.child("type")?.check(is_one_of(SELINUX_TYPES), BASELINE_SELINUX_TYPE)?;
    for key in ["user", "role"] {
        options.child(key)?.check(is_empty_string, BASELINE_UNSET_OR_EMPTY)?;
    }
    Ok(())
}

/// Only namespaced sysctls isolated from other pods may be set.
fn check_sysctls(sysctls: &Field) -> Result<(), Violation> {
    for sysctl in sysctls.items()? {
        sysctl.child("name")?.check(is_one_of(SAFE_SYSCTLS), BASELINE_SYSCTL)?;
    }
    Ok(())
}

/// A hostPath volume exposes the node's file system.
fn check_host_path_volumes(spec: &Field) -> Result<(), Violation> {
    for volume in spec.child("volumes")?.items()? {
        volume.child("hostPath")?.check(|_| false, BASELINE_HOST_PATH)?;
    }
    Ok(())
}

/// The legacy AppArmor annotations may only keep a profile in force, never lift it.
fn check_apparmor_annotations(metadata: &Field) -> Result<(), Violation> {
    let annotations = metadata.child("annotations")?;
    for (key, value) in annotations.entries()? {
        // An annotation value of null or another type is refused: it is not a profile.
        if key.starts_with(APPARMOR_ANNOTATION_PREFIX) && !is_confining_apparmor_annotation(value) {
            let field = format!("{}[{}]", annotations.path, display_key(key));
            return Err(violation(field, BASELINE_APPARMOR_ANNOTATION));
        }
    }
    Ok(())
}

fn check_container_baseline(container: &Field) -> Result<(), Violation> {
    let context = container.child("securityContext")?;
    check_shared_security_context(&context)?;
    context.child("privileged")?.check(is_false, BASELINE_FALSE)?;
    for capability in context.child("capabilities")?.child("add")?.items()? {
        capability.check(is_one_of(BASELINE_CAPABILITIES), BASELINE_CAPABILITY)?;
    }
    // `Unmasked` exposes the host's /proc paths the runtime normally hides.
    context.child("procMount")?.check(is_one_of(&["Default"]), BASELINE_PROC_MOUNT)?;
    for port in container.child("ports")?.items()? {
        port.child("hostPort")?.check(is_zero, BASELINE_HOST_PORT)?;
    }
    check_handler_hosts(container)
}

/// Probes and lifecycle hooks must target the pod itself (`host` unset or empty), or the
/// kubelet would reach other hosts from the node's network for the module.
fn check_handler_hosts(container: &Field) -> Result<(), Violation> {
    let lifecycle = container.child("lifecycle")?;
    let mut handlers = Vec::new();
    for probe in PROBES {
        handlers.push(container.child(probe)?);
    }
    for hook in LIFECYCLE_HOOKS {
        handlers.push(lifecycle.child(hook)?);
    }
    for handler in handlers {
        for action in HANDLERS_WITH_HOST {
            handler.child(action)?.child("host")?.check(is_empty_string, BASELINE_UNSET_OR_EMPTY)?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Restricted
// ---------------------------------------------------------------------------------------

/// What the pod-level security context settles for every container.
#[derive(Clone, Copy)]
struct PodDefaults {
    run_as_non_root: bool,
    confining_seccomp: bool,
}

fn check_restricted(pod: &PodTemplate) -> Result<(), Violation> {
    check_volume_types(&pod.spec)?;
    let context = pod.spec.child("securityContext")?;
    let run_as_non_root = context.child("runAsNonRoot")?;
    // An explicit false at pod level is refused even if every container says true: a
    // container added later would inherit it.
    run_as_non_root.check(is_true, RESTRICTED_UNSET_OR_TRUE)?;
    context.child("runAsUser")?.check(is_non_zero_id, RESTRICTED_RUN_AS_USER)?;
    let defaults = PodDefaults {
        run_as_non_root: run_as_non_root.is(is_true),
        confining_seccomp: context.child("seccompProfile")?.child("type")?.is(is_confining_profile),
    };
    for container in containers(&pod.spec)? {
        check_container_restricted(&container, defaults)?;
    }
    Ok(())
}

/// Each volume may use only the allowed sources. Every member but `name` is a volume
/// source, so an unknown member (a future source type) is refused too. A volume with no
/// source at all is fine: the API server makes it an emptyDir.
fn check_volume_types(spec: &Field) -> Result<(), Violation> {
    for volume in spec.child("volumes")?.items()? {
        for (key, source) in volume.entries()? {
            let allowed = key == "name" || source.is_null() || RESTRICTED_VOLUME_TYPES.contains(&key);
            if !allowed {
                return Err(violation(
                    format!("{}.{}", volume.path, display_key(key)),
                    RESTRICTED_VOLUME_TYPE,
                ));
            }
        }
    }
    Ok(())
}

fn check_container_restricted(container: &Field, pod: PodDefaults) -> Result<(), Violation> {
    let context = container.child("securityContext")?;
    // Unset means allowed (the runtime's default is true), so false must be explicit.
    context.child("allowPrivilegeEscalation")?.require(is_false, RESTRICTED_NO_ESCALATION)?;
    let run_as_non_root = context.child("runAsNonRoot")?;
    if pod.run_as_non_root {
        run_as_non_root.check(is_true, RESTRICTED_UNSET_OR_TRUE)?;
    } else {
        run_as_non_root.require(is_true, RESTRICTED_NON_ROOT)?;
    }
    context.child("runAsUser")?.check(is_non_zero_id, RESTRICTED_RUN_AS_USER)?;
    let seccomp = context.child("seccompProfile")?.child("type")?;
    if pod.confining_seccomp {
        seccomp.check(is_confining_profile, RESTRICTED_SECCOMP)?;
    } else {
        seccomp.require(is_confining_profile, RESTRICTED_SECCOMP)?;
    }
    check_restricted_capabilities(&context.child("capabilities")?)
}

/// Every capability dropped, only NET_BIND_SERVICE added back.
fn check_restricted_capabilities(capabilities: &Field) -> Result<(), Violation> {
    let drop = capabilities.child("drop")?;
    let dropped = drop.items()?;
    for capability in &dropped {
        capability.check(Value::is_string, MUST_BE_STRING)?;
    }
    if !dropped.iter().any(|capability| capability.is(|value| value.as_str() == Some("ALL"))) {
        return Err(drop.violation(RESTRICTED_DROP_ALL));
    }
    for capability in capabilities.child("add")?.items()? {
        capability.check(is_one_of(RESTRICTED_CAPABILITIES), RESTRICTED_CAPABILITY)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const LEVELS: [PodSecurityLevel; 3] =
        [PodSecurityLevel::Privileged, PodSecurityLevel::Baseline, PodSecurityLevel::Restricted];

    fn policy(level: PodSecurityLevel) -> WorkloadPolicy {
        WorkloadPolicy { level, allowed_service_accounts: vec!["backup".to_owned()] }
    }

    fn check(object: &Value, level: PodSecurityLevel) -> Result<(), Violation> {
        check_object(object, &policy(level))
    }

    /// The field refused, failing the test if the object passes.
    fn refused(object: &Value, level: PodSecurityLevel) -> String {
        match check(object, level) {
            Ok(()) => panic!("{level:?} accepted {object}"),
            Err(violation) => violation.field,
        }
    }

    fn accepted(object: &Value, level: PodSecurityLevel) {
        assert_eq!(check(object, level), Ok(()), "{level:?} refused {object}");
    }

    /// A container that passes every level.
    fn container(name: &str) -> Value {
        json!({
            "name": name,
            "image": "example.com/app:1",
            "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}},
        })
    }

    /// A Pod that passes every level, with one container of each kind.
    fn pod() -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "p", "annotations": {"note": "x"}},
            "spec": {
                "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [container("app")],
                "initContainers": [container("init")],
                "ephemeralContainers": [container("debug")],
            },
        })
    }

    /// Sets the field at a JSON pointer (`~1` for `/`), creating objects on the way.
    fn set(target: &mut Value, pointer: &str, value: Value) {
        let segments: Vec<String> = pointer.split('/').skip(1).map(|s| s.replace("~1", "/")).collect();
        let (last, parents) = segments.split_last().expect("a pointer with a segment");
        let mut current = target;
        for segment in parents {
            if current.is_null() {
                *current = json!({});
            }
            current = match current {
                Value::Array(items) => &mut items[segment.parse::<usize>().expect("an index")],
                Value::Object(members) => members.entry(segment.clone()).or_insert(Value::Null),
                other => panic!("cannot descend into {other}"),
            };
        }
        if current.is_null() {
            *current = json!({});
        }
        match current {
            Value::Array(items) => items[last.parse::<usize>().expect("an index")] = value,
            Value::Object(members) => {
                members.insert(last.clone(), value);
            }
            other => panic!("cannot set in {other}"),
        }
    }

    /// `base` with one field set.
    fn with(base: &Value, pointer: &str, value: Value) -> Value {
        let mut object = base.clone();
        set(&mut object, pointer, value);
        object
    }

    /// The field path a JSON pointer names: `/spec/containers/0/ports` is `spec.containers[0].ports`.
    fn dotted(pointer: &str) -> String {
        let mut path = String::new();
        for segment in pointer.split('/').skip(1) {
            if segment.parse::<usize>().is_ok() {
                path.push_str(&format!("[{segment}]"));
            } else {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(segment);
            }
        }
        path
    }

    /// One field of a table: a refused value (refused at the pointer's path plus
    /// `suffix`) and values that are allowed.
    struct Row {
        pointer: &'static str,
        bad: Value,
        suffix: &'static str,
        good: Vec<Value>,
    }

    fn row(pointer: &'static str, bad: Value, suffix: &'static str, good: Vec<Value>) -> Row {
        Row { pointer, bad, suffix, good }
    }

    /// Baseline fields of the pod (pointers from the Pod).
    fn baseline_pod_rows() -> Vec<Row> {
        vec![
            row("/spec/hostNetwork", json!(true), "", vec![json!(false)]),
            row("/spec/hostPID", json!(true), "", vec![json!(false)]),
            row("/spec/hostIPC", json!(true), "", vec![json!(false)]),
            row("/spec/securityContext/windowsOptions/hostProcess", json!(true), "", vec![json!(false)]),
            row(
                "/spec/securityContext/seLinuxOptions/type",
                json!("spc_t"),
                "",
                vec![
                    json!(""),
                    json!("container_t"),
                    json!("container_init_t"),
                    json!("container_kvm_t"),
                    json!("container_engine_t"),
                ],
            ),
            row("/spec/securityContext/seLinuxOptions/user", json!("system_u"), "", vec![json!("")]),
            row("/spec/securityContext/seLinuxOptions/role", json!("sysadm_r"), "", vec![json!("")]),
            row(
                "/spec/securityContext/seccompProfile/type",
                json!("Unconfined"),
                "",
                vec![json!("RuntimeDefault"), json!("Localhost")],
            ),
            row(
                "/spec/securityContext/appArmorProfile/type",
                json!("Unconfined"),
                "",
                vec![json!("RuntimeDefault"), json!("Localhost")],
            ),
            row(
                "/spec/securityContext/sysctls",
                json!([{"name": "kernel.msgmax", "value": "1"}]),
                "[0].name",
                SAFE_SYSCTLS.iter().map(|name| json!([{"name": name, "value": "1"}])).collect(),
            ),
            row(
                "/spec/volumes",
                json!([{"name": "root", "hostPath": {"path": "/"}}]),
                "[0].hostPath",
                vec![json!([{"name": "root", "hostPath": null, "emptyDir": {}}])],
            ),
        ]
    }

    /// Baseline fields of a container (pointers from the container).
    fn baseline_container_rows() -> Vec<Row> {
        vec![
            row("/securityContext/privileged", json!(true), "", vec![json!(false)]),
            row("/securityContext/windowsOptions/hostProcess", json!(true), "", vec![json!(false)]),
            row(
                "/securityContext/capabilities/add",
                json!(["CHOWN", "SYS_ADMIN"]),
                "[1]",
                vec![json!(BASELINE_CAPABILITIES), json!([])],
            ),
            row("/securityContext/capabilities/add", json!(["NET_RAW"]), "[0]", vec![]),
            row("/securityContext/seLinuxOptions/type", json!("spc_t"), "", vec![json!("container_t")]),
            row("/securityContext/seLinuxOptions/user", json!("system_u"), "", vec![json!("")]),
            row("/securityContext/seLinuxOptions/role", json!("sysadm_r"), "", vec![json!("")]),
            row("/securityContext/seLinuxOptions/level", json!(null), "", vec![json!("s0:c123,c456")]),
            row("/securityContext/procMount", json!("Unmasked"), "", vec![json!("Default")]),
            row(
                "/securityContext/seccompProfile/type",
                json!("Unconfined"),
                "",
                vec![json!("RuntimeDefault"), json!("Localhost")],
            ),
            row(
                "/securityContext/appArmorProfile/type",
                json!("Unconfined"),
                "",
                vec![json!("RuntimeDefault"), json!("Localhost")],
            ),
            row(
                "/ports",
                json!([{"containerPort": 80}, {"containerPort": 80, "hostPort": 8080}]),
                "[1].hostPort",
                vec![json!([{"containerPort": 80, "hostPort": 0}, {"containerPort": 81}])],
            ),
            row("/livenessProbe/httpGet/host", json!("169.254.169.254"), "", vec![json!("")]),
            row("/livenessProbe/tcpSocket/host", json!("10.0.0.1"), "", vec![json!("")]),
            row("/readinessProbe/httpGet/host", json!("10.0.0.1"), "", vec![json!("")]),
            row("/readinessProbe/tcpSocket/host", json!("10.0.0.1"), "", vec![json!("")]),
            row("/startupProbe/httpGet/host", json!("10.0.0.1"), "", vec![json!("")]),
            row("/startupProbe/tcpSocket/host", json!("10.0.0.1"), "", vec![json!("")]),
            row("/lifecycle/postStart/httpGet/host", json!("10.0.0.1"), "", vec![json!("")]),
            row("/lifecycle/postStart/tcpSocket/host", json!("10.0.0.1"), "", vec![json!("")]),
            row("/lifecycle/preStop/httpGet/host", json!("10.0.0.1"), "", vec![json!("")]),
            row("/lifecycle/preStop/tcpSocket/host", json!("10.0.0.1"), "", vec![json!("")]),
        ]
    }

    /// Every (pointer from the Pod, row) of the baseline tables, container rows once per
    /// container list.
    fn baseline_cases() -> Vec<(String, Row)> {
        let mut cases: Vec<(String, Row)> =
            baseline_pod_rows().into_iter().map(|row| (row.pointer.to_owned(), row)).collect();
        for list in CONTAINER_LISTS {
            for row in baseline_container_rows() {
                cases.push((format!("/spec/{list}/0{}", row.pointer), row));
            }
        }
        cases
    }

    #[test]
    fn baseline_refuses_each_field_at_its_path_and_accepts_allowed_values() {
        let base = pod();
        for (pointer, row) in baseline_cases() {
            let bad = with(&base, &pointer, row.bad.clone());
            if !row.bad.is_null() {
                let expected = format!("{}{}", dotted(&pointer), row.suffix);
                assert_eq!(refused(&bad, PodSecurityLevel::Baseline), expected, "{pointer} = {}", row.bad);
            }
            for good in row.good {
                accepted(&with(&base, &pointer, good), PodSecurityLevel::Baseline);
            }
            // Null is unset, and unset is allowed for every baseline field.
            accepted(&with(&base, &pointer, Value::Null), PodSecurityLevel::Baseline);
        }
    }

    #[test]
    fn restricted_refuses_every_baseline_violation() {
        for (pointer, row) in baseline_cases().into_iter().filter(|(_, row)| !row.bad.is_null()) {
            let expected = format!("{}{}", dotted(&pointer), row.suffix);
            assert_eq!(refused(&with(&pod(), &pointer, row.bad), PodSecurityLevel::Restricted), expected);
        }
    }

    #[test]
    fn privileged_accepts_every_baseline_violation() {
        let base = pod();
        for (pointer, row) in baseline_cases() {
            accepted(&with(&base, &pointer, row.bad), PodSecurityLevel::Privileged);
        }
        let everything = json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {
                "hostNetwork": true, "hostPID": true,
                "volumes": [{"name": "root", "hostPath": {"path": "/"}}],
                "containers": [{"name": "c", "securityContext": {"privileged": true}}],
            },
        });
        accepted(&everything, PodSecurityLevel::Privileged);
    }

    #[test]
    fn apparmor_annotations() {
        let key = "/metadata/annotations/container.apparmor.security.beta.kubernetes.io~1app";
        let field = "metadata.annotations[container.apparmor.security.beta.kubernetes.io/app]";
        for bad in [json!("unconfined"), json!("localhost"), json!(""), json!(null), json!(1)] {
            let object = with(&pod(), key, bad.clone());
            assert_eq!(refused(&object, PodSecurityLevel::Baseline), field, "{bad}");
            accepted(&object, PodSecurityLevel::Privileged);
        }
        for good in ["runtime/default", "localhost/my-profile"] {
            accepted(&with(&pod(), key, json!(good)), PodSecurityLevel::Restricted);
        }
        // Other annotations are not AppArmor's business.
        let other = "/metadata/annotations/apparmor.example.com~1app";
        accepted(&with(&pod(), other, json!("unconfined")), PodSecurityLevel::Restricted);
    }

    #[test]
    fn hostile_annotation_keys_are_escaped_in_the_path() {
        let object = with(
            &pod(),
            "/metadata/annotations/container.apparmor.security.beta.kubernetes.io~1a\nb",
            json!("unconfined"),
        );
        let field = refused(&object, PodSecurityLevel::Baseline);
        assert!(!field.contains('\n'), "{field}");
        assert!(field.ends_with(r#"["container.apparmor.security.beta.kubernetes.io/a\nb"]"#), "{field}");
        let long = format!("{APPARMOR_ANNOTATION_PREFIX}{}", "x".repeat(10_000));
        let mut object = pod();
        set(&mut object, "/metadata/annotations", json!({ long: "unconfined" }));
        assert!(refused(&object, PodSecurityLevel::Baseline).len() < 200);
    }

    /// A field set by JSON pointer, and its value.
    type Patch = (&'static str, Value);

    /// Restricted rows as (a patch of the compliant Pod, the field refused or None).
    /// `{c}` in a pointer stands for each container list in turn.
    fn restricted_rows() -> Vec<(Patch, Option<&'static str>)> {
        let sc = "/spec/{c}/0/securityContext";
        vec![
            // Volume types.
            (
                ("/spec/volumes", json!([{"name": "v", "nfs": {"server": "s", "path": "/"}}])),
                Some("spec.volumes[0].nfs"),
            ),
            (
                ("/spec/volumes", json!([{"name": "v", "gitRepo": {"repository": "r"}}])),
                Some("spec.volumes[0].gitRepo"),
            ),
            (
                ("/spec/volumes", json!([{"name": "v", "futureSource": {}}])),
                Some("spec.volumes[0].futureSource"),
            ),
            (
                ("/spec/volumes", json!([{"name": "v"}, {"name": "w", "secret": {}, "rbd": {}}])),
                Some("spec.volumes[1].rbd"),
            ),
            (("/spec/volumes", json!([{"name": "v"}])), None),
            (("/spec/volumes", json!([{"name": "v", "emptyDir": {}, "nfs": null}])), None),
            // Privilege escalation.
            (
                (sc, json!({"allowPrivilegeEscalation": true, "capabilities": {"drop": ["ALL"]}})),
                Some("spec.{c}[0].securityContext.allowPrivilegeEscalation"),
            ),
            (
                (sc, json!({"capabilities": {"drop": ["ALL"]}})),
                Some("spec.{c}[0].securityContext.allowPrivilegeEscalation"),
            ),
            (
                ("/spec/{c}/0/securityContext/allowPrivilegeEscalation", json!(null)),
                Some("spec.{c}[0].securityContext.allowPrivilegeEscalation"),
            ),
            // Running as non-root.
            (("/spec/securityContext/runAsNonRoot", json!(false)), Some("spec.securityContext.runAsNonRoot")),
            (
                ("/spec/securityContext/runAsNonRoot", json!(null)),
                Some("spec.containers[0].securityContext.runAsNonRoot"),
            ),
            (
                ("/spec/{c}/0/securityContext/runAsNonRoot", json!(false)),
                Some("spec.{c}[0].securityContext.runAsNonRoot"),
            ),
            (("/spec/{c}/0/securityContext/runAsNonRoot", json!(true)), None),
            // Running as a non-root user.
            (("/spec/securityContext/runAsUser", json!(0)), Some("spec.securityContext.runAsUser")),
            (("/spec/securityContext/runAsUser", json!(1000)), None),
            (
                ("/spec/{c}/0/securityContext/runAsUser", json!(0)),
                Some("spec.{c}[0].securityContext.runAsUser"),
            ),
            (("/spec/{c}/0/securityContext/runAsUser", json!(65532)), None),
            // Seccomp.
            (
                ("/spec/securityContext/seccompProfile", json!(null)),
                Some("spec.containers[0].securityContext.seccompProfile.type"),
            ),
            (("/spec/securityContext/seccompProfile/type", json!("Localhost")), None),
            (("/spec/{c}/0/securityContext/seccompProfile/type", json!("Localhost")), None),
            // Capabilities.
            (
                ("/spec/{c}/0/securityContext/capabilities/drop", json!(null)),
                Some("spec.{c}[0].securityContext.capabilities.drop"),
            ),
            (
                ("/spec/{c}/0/securityContext/capabilities/drop", json!(["NET_RAW"])),
                Some("spec.{c}[0].securityContext.capabilities.drop"),
            ),
            (
                ("/spec/{c}/0/securityContext/capabilities/drop", json!(["all"])),
                Some("spec.{c}[0].securityContext.capabilities.drop"),
            ),
            (("/spec/{c}/0/securityContext/capabilities/drop", json!(["NET_RAW", "ALL"])), None),
            (
                ("/spec/{c}/0/securityContext/capabilities/add", json!(["CHOWN"])),
                Some("spec.{c}[0].securityContext.capabilities.add[0]"),
            ),
            (("/spec/{c}/0/securityContext/capabilities/add", json!(["NET_BIND_SERVICE"])), None),
        ]
    }

    #[test]
    fn restricted_rules() {
        accepted(&pod(), PodSecurityLevel::Restricted);
        for ((pointer, value), expected) in restricted_rows() {
            for list in CONTAINER_LISTS {
                let object = with(&pod(), &pointer.replace("{c}", list), value.clone());
                match expected {
                    Some(field) => {
                        assert_eq!(
                            refused(&object, PodSecurityLevel::Restricted),
                            field.replace("{c}", list)
                        );
                        // Every restricted-only rule is beyond baseline.
                        accepted(&object, PodSecurityLevel::Baseline);
                    }
                    None => accepted(&object, PodSecurityLevel::Restricted),
                }
            }
        }
    }

    #[test]
    fn restricted_allowed_volume_types() {
        for source in RESTRICTED_VOLUME_TYPES {
            let object = with(&pod(), "/spec/volumes", json!([{ "name": "v", *source: {} }]));
            accepted(&object, PodSecurityLevel::Restricted);
        }
    }

    #[test]
    fn restricted_pod_level_defaults_may_be_set_on_every_container_instead() {
        let mut object = pod();
        set(&mut object, "/spec/securityContext", json!(null));
        for list in CONTAINER_LISTS {
            set(&mut object, &format!("/spec/{list}/0/securityContext/runAsNonRoot"), json!(true));
            set(
                &mut object,
                &format!("/spec/{list}/0/securityContext/seccompProfile/type"),
                json!("RuntimeDefault"),
            );
        }
        accepted(&object, PodSecurityLevel::Restricted);
        // One container without them is enough to refuse.
        set(&mut object, "/spec/initContainers/0/securityContext/seccompProfile", json!(null));
        let field = refused(&object, PodSecurityLevel::Restricted);
        assert_eq!(field, "spec.initContainers[0].securityContext.seccompProfile.type");
        set(&mut object, "/spec/initContainers/0/securityContext/seccompProfile/type", json!("Localhost"));
        set(&mut object, "/spec/ephemeralContainers/0/securityContext/runAsNonRoot", json!(null));
        let field = refused(&object, PodSecurityLevel::Restricted);
        assert_eq!(field, "spec.ephemeralContainers[0].securityContext.runAsNonRoot");
    }

    fn service(spec: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": spec})
    }

    #[test]
    fn service_external_ips_refused_at_every_level() {
        for level in LEVELS {
            let refused_ips = [json!(["1.2.3.4"]), json!("1.2.3.4"), json!({}), json!([""])];
            for ips in refused_ips {
                let object = service(json!({"ports": [{"port": 80}], "externalIPs": ips}));
                assert_eq!(refused(&object, level), "spec.externalIPs", "{ips}");
            }
            for ips in [json!([]), json!(null)] {
                accepted(&service(json!({"ports": [{"port": 80}], "externalIPs": ips})), level);
            }
            accepted(&service(json!({"type": "LoadBalancer", "ports": [{"port": 80}]})), level);
            assert_eq!(refused(&service(json!("x")), level), "spec");
        }
        // Only the core Service: another group's kind of that name is not checked.
        let custom =
            json!({"apiVersion": "example.com/v1", "kind": "Service", "spec": {"externalIPs": ["1.2.3.4"]}});
        accepted(&custom, PodSecurityLevel::Restricted);
    }

    #[test]
    fn service_accounts() {
        for level in LEVELS {
            for key in ["serviceAccountName", "serviceAccount"] {
                let pointer = format!("/spec/{key}");
                for allowed in [json!("default"), json!(""), json!("backup"), json!(null)] {
                    accepted(&with(&pod(), &pointer, allowed), level);
                }
                for bad in [json!("admin"), json!("Default"), json!("backup "), json!(5), json!(["default"])]
                {
                    assert_eq!(
                        refused(&with(&pod(), &pointer, bad.clone()), level),
                        format!("spec.{key}"),
                        "{bad}"
                    );
                }
            }
        }
        let nobody_allowed = WorkloadPolicy::default();
        let object = with(&pod(), "/spec/serviceAccountName", json!("backup"));
        assert_eq!(
            check_object(&object, &nobody_allowed).map_err(|v| v.field),
            Err("spec.serviceAccountName".into())
        );
    }

    /// (apiVersion, kind, pointer to the pod template, path of the pod spec).
    const WORKLOAD_KINDS: &[(&str, &str, &str, &str)] = &[
        ("v1", "Pod", "", "spec"),
        ("v1", "PodTemplate", "/template", "template.spec"),
        ("v1", "ReplicationController", "/spec/template", "spec.template.spec"),
        ("apps/v1", "Deployment", "/spec/template", "spec.template.spec"),
        ("apps/v1", "StatefulSet", "/spec/template", "spec.template.spec"),
        ("apps/v1", "DaemonSet", "/spec/template", "spec.template.spec"),
        ("apps/v1", "ReplicaSet", "/spec/template", "spec.template.spec"),
        ("apps/v1beta2", "Deployment", "/spec/template", "spec.template.spec"),
        ("extensions/v1beta1", "DaemonSet", "/spec/template", "spec.template.spec"),
        ("batch/v1", "Job", "/spec/template", "spec.template.spec"),
        ("batch/v1", "CronJob", "/spec/jobTemplate/spec/template", "spec.jobTemplate.spec.template.spec"),
        (
            "batch/v1beta1",
            "CronJob",
            "/spec/jobTemplate/spec/template",
            "spec.jobTemplate.spec.template.spec",
        ),
        ("apps/v1", "deployment", "/spec/template", "spec.template.spec"),
    ];

    /// An object of the kind with `template` (metadata and spec) as its pod template.
    fn workload(api_version: &str, kind: &str, template_pointer: &str, template: Value) -> Value {
        let mut object = json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": "w"}});
        if template_pointer.is_empty() {
            set(&mut object, "/metadata", template["metadata"].clone());
            set(&mut object, "/spec", template["spec"].clone());
        } else {
            set(&mut object, template_pointer, template);
        }
        object
    }

    #[test]
    fn each_workload_kind_is_checked_where_its_pod_template_is() {
        let privileged =
            json!({"spec": {"containers": [{"name": "c", "securityContext": {"privileged": true}}]}});
        let annotated = json!({
            "metadata": {"annotations": {"container.apparmor.security.beta.kubernetes.io/c": "unconfined"}},
            "spec": {"containers": [{"name": "c"}]},
        });
        let service_account = json!({"spec": {"serviceAccountName": "admin", "containers": [{"name": "c"}]}});
        let plain = json!({"metadata": {"labels": {"app": "a"}}, "spec": {"containers": [{"name": "c"}]}});
        for (api_version, kind, pointer, spec) in WORKLOAD_KINDS {
            let object = workload(api_version, kind, pointer, privileged.clone());
            let expected = format!("{spec}.containers[0].securityContext.privileged");
            assert_eq!(refused(&object, PodSecurityLevel::Baseline), expected, "{kind}");
            let metadata =
                spec.strip_suffix("spec").map(|prefix| format!("{prefix}metadata")).expect("ends in spec");
            let expected =
                format!("{metadata}.annotations[container.apparmor.security.beta.kubernetes.io/c]");
            let object = workload(api_version, kind, pointer, annotated.clone());
            assert_eq!(refused(&object, PodSecurityLevel::Baseline), expected, "{kind}");
            let object = workload(api_version, kind, pointer, service_account.clone());
            assert_eq!(refused(&object, PodSecurityLevel::Privileged), format!("{spec}.serviceAccountName"));
            accepted(&workload(api_version, kind, pointer, plain.clone()), PodSecurityLevel::Baseline);
        }
    }

    #[test]
    fn a_missing_pod_spec_passes() {
        for object in [
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}}),
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}}),
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {"replicas": 1}}),
            json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "c"}, "spec": {"jobTemplate": null}}),
            json!({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"}, "template": {}}),
        ] {
            for level in LEVELS {
                accepted(&object, level);
            }
        }
    }

    #[test]
    fn unknown_kinds_pass() {
        let spec = json!({"hostNetwork": true, "containers": [{"name": "c", "securityContext": {"privileged": true}}]});
        let template = json!({"spec": {"template": {"spec": spec}}, "data": {"k": "v"}});
        for (api_version, kind) in [
            ("v1", "ConfigMap"),
            ("example.com/v1", "Deployment"),
            ("example.com/v1", "Pod"),
            ("apps/v1", "Pod"),
            ("batch/v1", "Deployment"),
        ] {
            let mut object = template.clone();
            set(&mut object, "/apiVersion", json!(api_version));
            set(&mut object, "/kind", json!(kind));
            set(&mut object, "/metadata/name", json!("x"));
            set(&mut object, "/spec/hostNetwork", json!(true));
            accepted(&object, PodSecurityLevel::Restricted);
        }
    }

    #[test]
    fn wrong_json_types_are_refused() {
        let cases: &[(&str, Value, &str)] = &[
            (
                "/spec/containers/0/securityContext/privileged",
                json!("true"),
                "spec.containers[0].securityContext.privileged",
            ),
            (
                "/spec/containers/0/securityContext/privileged",
                json!(0),
                "spec.containers[0].securityContext.privileged",
            ),
            ("/spec/hostNetwork", json!(1), "spec.hostNetwork"),
            ("/spec/hostPID", json!("false"), "spec.hostPID"),
            ("/spec", json!("x"), "spec"),
            ("/spec/securityContext", json!([]), "spec.securityContext"),
            (
                "/spec/securityContext/seccompProfile/type",
                json!(1),
                "spec.securityContext.seccompProfile.type",
            ),
            (
                "/spec/securityContext/sysctls",
                json!({"name": "kernel.msgmax"}),
                "spec.securityContext.sysctls",
            ),
            ("/spec/securityContext/sysctls", json!([{"name": 5}]), "spec.securityContext.sysctls[0].name"),
            (
                "/spec/securityContext/sysctls",
                json!(["kernel.shm_rmid_forced"]),
                "spec.securityContext.sysctls[0]",
            ),
            ("/spec/containers", json!({"name": "c"}), "spec.containers"),
            ("/spec/initContainers", json!(["c"]), "spec.initContainers[0]"),
            ("/spec/containers/0/securityContext", json!("privileged"), "spec.containers[0].securityContext"),
            (
                "/spec/containers/0/securityContext/capabilities",
                json!(["SYS_ADMIN"]),
                "spec.containers[0].securityContext.capabilities",
            ),
            (
                "/spec/containers/0/securityContext/capabilities/add",
                json!("SYS_ADMIN"),
                "spec.containers[0].securityContext.capabilities.add",
            ),
            (
                "/spec/containers/0/securityContext/capabilities/add",
                json!([7]),
                "spec.containers[0].securityContext.capabilities.add[0]",
            ),
            (
                "/spec/containers/0/ports",
                json!([{"hostPort": "8080"}]),
                "spec.containers[0].ports[0].hostPort",
            ),
            ("/spec/containers/0/ports", json!([{"hostPort": 0.0}]), "spec.containers[0].ports[0].hostPort"),
            ("/spec/containers/0/ports", json!({"hostPort": 80}), "spec.containers[0].ports"),
            ("/spec/containers/0/livenessProbe", json!("httpGet"), "spec.containers[0].livenessProbe"),
            (
                "/spec/containers/0/livenessProbe/httpGet/host",
                json!(false),
                "spec.containers[0].livenessProbe.httpGet.host",
            ),
            ("/spec/volumes", json!({"hostPath": {}}), "spec.volumes"),
            ("/spec/volumes", json!(["hostPath"]), "spec.volumes[0]"),
            ("/spec/securityContext/seLinuxOptions", json!("spc_t"), "spec.securityContext.seLinuxOptions"),
            (
                "/spec/securityContext/windowsOptions/hostProcess",
                json!("yes"),
                "spec.securityContext.windowsOptions.hostProcess",
            ),
            ("/metadata/annotations", json!("x"), "metadata.annotations"),
            ("/metadata", json!([]), "metadata"),
        ];
        for (pointer, value, field) in cases {
            for level in [PodSecurityLevel::Baseline, PodSecurityLevel::Restricted] {
                assert_eq!(
                    refused(&with(&pod(), pointer, value.clone()), level),
                    *field,
                    "{pointer} = {value}"
                );
            }
        }
    }

    #[test]
    fn wrong_json_types_are_refused_under_restricted() {
        let cases: &[(&str, Value, &str)] = &[
            ("/spec/securityContext/runAsUser", json!("0"), "spec.securityContext.runAsUser"),
            ("/spec/securityContext/runAsUser", json!(1000.0), "spec.securityContext.runAsUser"),
            ("/spec/securityContext/runAsNonRoot", json!("true"), "spec.securityContext.runAsNonRoot"),
            (
                "/spec/containers/0/securityContext/allowPrivilegeEscalation",
                json!("false"),
                "spec.containers[0].securityContext.allowPrivilegeEscalation",
            ),
            (
                "/spec/containers/0/securityContext/allowPrivilegeEscalation",
                json!(0),
                "spec.containers[0].securityContext.allowPrivilegeEscalation",
            ),
            (
                "/spec/containers/0/securityContext/capabilities/drop",
                json!("ALL"),
                "spec.containers[0].securityContext.capabilities.drop",
            ),
            (
                "/spec/containers/0/securityContext/capabilities/drop",
                json!(["ALL", 1]),
                "spec.containers[0].securityContext.capabilities.drop[1]",
            ),
            (
                "/spec/volumes",
                json!([{"name": "v", "emptyDir": {}, "hostPath": "/"}]),
                "spec.volumes[0].hostPath",
            ),
            ("/spec/volumes", json!([[]]), "spec.volumes[0]"),
        ];
        for (pointer, value, field) in cases {
            assert_eq!(
                refused(&with(&pod(), pointer, value.clone()), PodSecurityLevel::Restricted),
                *field,
                "{pointer} = {value}"
            );
        }
    }

    #[test]
    fn objects_without_a_readable_kind_are_refused() {
        let cases = [
            (json!([]), "apiVersion"),
            (json!("Pod"), "apiVersion"),
            (json!(null), "apiVersion"),
            (json!({"kind": "Pod"}), "apiVersion"),
            (json!({"apiVersion": 1, "kind": "Pod"}), "apiVersion"),
            (json!({"apiVersion": "v1"}), "kind"),
            (json!({"apiVersion": "v1", "kind": ["Pod"]}), "kind"),
        ];
        for (object, field) in cases {
            for level in LEVELS {
                assert_eq!(refused(&object, level), field, "{object}");
            }
        }
    }

    #[test]
    fn deep_and_odd_input_does_not_panic() {
        let mut deep = json!({});
        for _ in 0..64 {
            deep = json!({"securityContext": deep});
        }
        let odd = [json!(u64::MAX), json!(-1), json!(1e300), json!("\u{202e}"), deep];
        for value in odd {
            for pointer in [
                "/spec",
                "/spec/securityContext",
                "/spec/containers/0/securityContext/runAsUser",
                "/metadata/annotations",
            ] {
                for level in LEVELS {
                    let _ = check(&with(&pod(), pointer, value.clone()), level);
                }
            }
        }
        // A large user ID that only fits u64 is not root.
        accepted(
            &with(&pod(), "/spec/securityContext/runAsUser", json!(u64::MAX)),
            PodSecurityLevel::Restricted,
        );
    }

    fn stateful_set() -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": "dittofs", "namespace": "storage", "labels": {"app": "dittofs"}},
            "spec": {
                "serviceName": "dittofs",
                "replicas": 1,
                "selector": {"matchLabels": {"app": "dittofs"}},
                "template": {
                    "metadata": {"labels": {"app": "dittofs"}},
                    "spec": {
                        "securityContext": {"fsGroup": 65532},
                        "containers": [{
                            "name": "dittofs",
                            "image": "ghcr.io/marmos91/dittofs:0.1.0",
                            "args": ["start", "--config", "/config/config.yaml"],
                            "ports": [
                                {"name": "nfs", "containerPort": 12049, "protocol": "TCP"},
                                {"name": "api", "containerPort": 8080, "protocol": "TCP"},
                            ],
                            "volumeMounts": [
                                {"name": "config", "mountPath": "/config", "readOnly": true},
                                {"name": "data", "mountPath": "/data"},
                            ],
                            "readinessProbe": {"tcpSocket": {"port": 12049}, "periodSeconds": 10},
                        }],
                        "volumes": [{"name": "config", "configMap": {"name": "dittofs-config"}}],
                    },
                },
                "volumeClaimTemplates": [{
                    "metadata": {"name": "data"},
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Gi"}}},
                }],
            },
        })
    }

    #[test]
    fn realistic_stateful_set_passes_baseline_but_not_restricted() {
        let object = stateful_set();
        accepted(&object, PodSecurityLevel::Privileged);
        accepted(&object, PodSecurityLevel::Baseline);
        let container = "spec.template.spec.containers[0].securityContext";
        assert_eq!(
            refused(&object, PodSecurityLevel::Restricted),
            format!("{container}.allowPrivilegeEscalation")
        );
        let object = with(
            &object,
            "/spec/template/spec/containers/0/securityContext/allowPrivilegeEscalation",
            json!(false),
        );
        assert_eq!(refused(&object, PodSecurityLevel::Restricted), format!("{container}.runAsNonRoot"));
    }

    #[test]
    fn violation_displays_field_and_rule() {
        let object = with(&pod(), "/spec/hostNetwork", json!(true));
        let violation = check(&object, PodSecurityLevel::Baseline).expect_err("host network");
        assert_eq!(violation.to_string(), "spec.hostNetwork: must be unset or false (Pod Security baseline)");
    }

    #[test]
    fn default_policy_is_baseline_with_no_extra_service_accounts() {
        let policy = WorkloadPolicy::default();
        assert_eq!(policy.level, PodSecurityLevel::Baseline);
        assert!(policy.allowed_service_accounts.is_empty());
    }
}
