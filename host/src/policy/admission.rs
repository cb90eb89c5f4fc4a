//! The confinement rules the API server enforces itself, derived from a module's
//! manifest: a `ValidatingAdmissionPolicy` and its binding
//! (`admissionregistration.k8s.io/v1`), so that a bug in the host cannot write what
//! confinement (docs/abi.md, *Confinement*) and the workload rules would refuse.
//!
//! The policy only looks at CREATE and UPDATE requests (server-side apply, patches and
//! replaces included) made by the operator's ServiceAccount; nobody else is affected.
//! Every object that identity creates or updates must:
//!
//! 1. be namespaced;
//! 2. be of a kind (API group and resource, any version) the manifest lists in
//!    `related`, and not a subresource;
//! 3. carry the owner label with a non-empty value, and on UPDATE carry it with the
//!    same value before: the host never takes over or re-labels an object it does not
//!    own (the fresh read before an `apply`), and `orphan` keeps the label;
//! 4. add no ownerReference but to an object of the primary's kind named by the owner
//!    label, and on UPDATE not have had a controller other than such an object;
//! 5. in a pod template (Pod, PodTemplate, ReplicationController, Deployment,
//!    StatefulSet, DaemonSet, ReplicaSet, Job, CronJob), unless pod security is off:
//!    no privileged container, no hostNetwork, hostPID or hostIPC, no hostPath volume,
//!    no hostPort but 0, no added capability outside the Pod Security baseline list;
//!    always: a ServiceAccount that is empty, `default` or allowed;
//! 6. if a core Service, set no `spec.externalIPs`.
//!
//! Exempt, because the host writes them by design: UPDATE of the primary and of its
//! `status` subresource (finalizer and status patches; only finalizer changes are
//! checked there: each finalizer added or removed is one of the manifest's), Events
//! (`events.k8s.io` and core), Leases in the operator's namespace (leader election)
//! and SelfSubjectAccessReviews (the hot swap's rights checks, which write nothing).
//! A refusal names what is wrong and the policy, and is a 403 (`Forbidden`), which the
//! host treats as a failure: a 409 or 422 would read as a conflict and be retried as a
//! fresh decision.
//!
//! What the API server cannot check, and the host's confinement still must:
//! - that the owner label's value is the name of the primary being reconciled (a
//!   policy sees one request, not which reconcile made it), nor that an ownerReference
//!   carries the primary's uid, nor that the namespace is the primary's;
//! - DELETE (and so `delete` and `orphan`'s association checks): the policy is
//!   limited to CREATE and UPDATE;
//! - reads (`requires`, `digestOnly`): admission sees writes only;
//! - changes to the primary other than its finalizers (its spec, labels, annotations);
//! - pod templates inside custom resources (another operator's, written under its
//!   own identity), and the Pod Security baseline rules not listed above (seccomp,
//!   AppArmor, SELinux, `/proc` mount, sysctls, Windows host processes), which the
//!   namespaces' Pod Security admission labels should cover;
//! - requests admission does not see: the policy's own objects and bindings are never
//!   subject to admission policies. RBAC ([`super::rbac`]) still decides what the
//!   identity may attempt at all; this policy only narrows it.

use super::pod_security::BASELINE_CAPABILITIES;
use super::rbac::api_group;
use reconcile_sdk::{KindRef, Manifest};
use serde_json::{Value, json};

/// Who the policy applies to and which workload rules it enforces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmissionOptions {
    /// The name of the policy and of its binding, e.g. `wasm-operator-<module name>`.
    pub policy_name: String,
    /// The ServiceAccount the operator runs as: the only identity the policy checks.
    pub service_account: String,
    /// The namespace of that ServiceAccount and of the operator's Lease.
    pub operator_namespace: String,
    /// ServiceAccounts a pod template may name besides `default` (and none).
    pub allowed_service_accounts: Vec<String>,
    /// Whether pod templates must meet the Pod Security baseline rules; `false` is the
    /// `privileged` level (the ServiceAccount and `externalIPs` rules still hold).
    pub pod_security_enforced: bool,
}

/// The kinds whose objects hold a pod spec (as `group/Kind`, core group empty), and
/// the CEL path to it.
const POD_SPECS: [(&str, &str); 9] = [
    ("/Pod", "object.?spec"),
    ("/PodTemplate", "object.?template.?spec"),
    ("/ReplicationController", "object.?spec.?template.?spec"),
    ("apps/Deployment", "object.?spec.?template.?spec"),
    ("apps/StatefulSet", "object.?spec.?template.?spec"),
    ("apps/DaemonSet", "object.?spec.?template.?spec"),
    ("apps/ReplicaSet", "object.?spec.?template.?spec"),
    ("batch/Job", "object.?spec.?template.?spec"),
    ("batch/CronJob", "object.?spec.?jobTemplate.?spec.?template.?spec"),
];

const API_VERSION: &str = "admissionregistration.k8s.io/v1";

/// The policy and its binding for `manifest`, in apply order (a binding to a missing
/// policy does nothing, so the policy comes first).
pub fn admission_objects(manifest: &Manifest, options: &AdmissionOptions) -> Vec<Value> {
    vec![policy(manifest, options), binding(options)]
}

fn policy(manifest: &Manifest, options: &AdmissionOptions) -> Value {
    json!({
        "apiVersion": API_VERSION,
        "kind": "ValidatingAdmissionPolicy",
        "metadata": metadata(&options.policy_name),
        "spec": {
            // A policy that cannot be evaluated must refuse: the point is to hold even
            // when something else is broken.
            "failurePolicy": "Fail",
            "matchConstraints": {
                // Everything, subresources included, so that a kind or subresource
                // outside `related` is refused rather than unmatched.
                "resourceRules": [{
                    "apiGroups": ["*"],
                    "apiVersions": ["*"],
                    "resources": ["*/*"],
                    "operations": ["CREATE", "UPDATE"],
                    "scope": "*",
                }],
            },
            "matchConditions": match_conditions(options),
            "variables": variables(manifest),
            "validations": validations(manifest, options),
        },
    })
}

fn binding(options: &AdmissionOptions) -> Value {
    json!({
        "apiVersion": API_VERSION,
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": metadata(&options.policy_name),
        // No matchResources: every namespace, and cluster-scoped requests too, which
        // rule 1 exists to refuse.
        "spec": {"policyName": options.policy_name, "validationActions": ["Deny"]},
    })
}

fn metadata(name: &str) -> Value {
    json!({"name": name, "labels": {"app.kubernetes.io/name": "wasm-operator"}})
}

/// Which requests the policy looks at: the operator's, minus what the host writes by
/// design outside `related`.
fn match_conditions(options: &AdmissionOptions) -> Value {
    let user = format!("system:serviceaccount:{}:{}", options.operator_namespace, options.service_account);
    let namespace = cel_string(&options.operator_namespace);
    json!([
        condition(
            "operator-service-account",
            &format!("request.userInfo.?username.orValue('') == {}", cel_string(&user)),
        ),
        // kube-runtime's Recorder writes events.k8s.io Events; core Events are the
        // same objects through the older API.
        condition(
            "not-an-event",
            "!(request.resource.resource == 'events' && request.resource.group in ['', 'events.k8s.io'])",
        ),
        // Leader election, in the operator's namespace only (where RBAC grants it).
        condition(
            "not-the-operator-lease",
            &format!(
                "!(request.resource.group == 'coordination.k8s.io' && request.resource.resource == 'leases' \
                 && request.?namespace.orValue('') == {namespace})"
            ),
        ),
        // The hot swap asks the API server about its rights (a cluster-scoped
        // create that stores nothing). Kubernetes 1.37 does not pass these reviews
        // through admission at all; the condition keeps them working should one.
        condition(
            "not-an-access-review",
            "!(request.resource.group == 'authorization.k8s.io' \
             && request.resource.resource == 'selfsubjectaccessreviews')",
        ),
    ])
}

fn condition(name: &str, expression: &str) -> Value {
    json!({"name": name, "expression": expression})
}

/// Named sub-expressions the validations share; evaluated lazily, at most once.
fn variables(manifest: &Manifest) -> Value {
    let label = cel_string(&manifest.owner_label);
    let primary = cel_string(&resource_key(&manifest.primary));
    // An empty field of `request` (namespace, name, subResource) is absent, not '':
    // such fields are read as optionals.
    json!([
        variable("resource", "request.resource.group + '/' + request.resource.resource"),
        // A request about a Namespace carries the Namespace's own name as its
        // namespace; the object is cluster-scoped all the same.
        variable(
            "requestNamespace",
            "variables.resource == '/namespaces' ? '' : request.?namespace.orValue('')",
        ),
        variable("requestName", "request.?name.orValue('')"),
        variable("subresource", "request.?subResource.orValue('')"),
        variable("groupKind", "request.kind.group + '/' + request.kind.kind"),
        variable("target", TARGET),
        variable(
            "primaryUpdate",
            &format!(
                "request.operation == 'UPDATE' && variables.resource == {primary} \
                 && variables.subresource in ['', 'status']"
            ),
        ),
        variable("ownerLabel", &format!("object.metadata.?labels[?{label}].orValue('')")),
        // oldObject is null on CREATE: guard before reading it.
        variable(
            "oldOwnerLabel",
            &format!("request.operation == 'UPDATE' ? oldObject.metadata.?labels[?{label}].orValue('') : ''"),
        ),
        variable(
            "oldOwnerReferences",
            "request.operation == 'UPDATE' ? oldObject.metadata.?ownerReferences.orValue([]) : []",
        ),
        variable("podSpec", &pod_spec_expression()),
        variable("spec", "variables.podSpec.orValue({})"),
        variable(
            "containers",
            "variables.spec.?containers.orValue([]) + variables.spec.?initContainers.orValue([]) \
             + variables.spec.?ephemeralContainers.orValue([])",
        ),
    ])
}

/// What the request is about, for messages: `Kind namespace/name`, plus the
/// subresource if any.
const TARGET: &str = "request.kind.kind + ' ' \
    + (variables.requestNamespace == '' ? '' : variables.requestNamespace + '/') \
    + (variables.requestName == '' ? '(generated name)' : variables.requestName) \
    + (variables.subresource == '' ? '' : ' (subresource ' + variables.subresource + ')')";

fn variable(name: &str, expression: &str) -> Value {
    json!({"name": name, "expression": expression})
}

/// An `optional` of the request object's pod spec: `optional.none()` for a kind that
/// has none, or a template that is absent.
fn pod_spec_expression() -> String {
    POD_SPECS.iter().rev().fold("optional.none()".to_owned(), |otherwise, (kind, path)| {
        format!("variables.groupKind == {} ? {path} : ({otherwise})", cel_string(kind))
    })
}

/// The rules, each true when the request is allowed; the first that fails is the
/// refusal's message.
fn validations(manifest: &Manifest, options: &AdmissionOptions) -> Value {
    let mut rules = object_rules(manifest);
    rules.push(primary_finalizer_rule(manifest));
    if options.pod_security_enforced {
        rules.extend(pod_security_rules());
    }
    rules.push(service_account_rule(&options.allowed_service_accounts));
    rules.push(external_ips_rule());
    Value::Array(rules.into_iter().map(|rule| rule.to_validation(&options.policy_name)).collect())
}

/// One validation: `expression` allows the request; `problem` says what is wrong as
/// static text (the `message`, used if `messageExpression` fails), `detail` as a CEL
/// string expression that names the offending parts (the `messageExpression`).
struct Rule {
    expression: String,
    problem: String,
    detail: String,
}

impl Rule {
    fn new(expression: impl Into<String>, problem: impl Into<String>, detail: impl Into<String>) -> Self {
        Rule { expression: expression.into(), problem: problem.into(), detail: detail.into() }
    }

    /// The rule as a validation, its messages naming the policy. `Forbidden` (403) so
    /// that the host reports a failure instead of re-deciding as on a 409 or 422.
    fn to_validation(&self, policy_name: &str) -> Value {
        let refused = format!("the wasm-operator admission policy {policy_name} refused");
        let prefix = cel_string(&format!("{refused} "));
        json!({
            "expression": self.expression,
            "message": format!("{refused} this write: {}", self.problem),
            "messageExpression": format!("{prefix} + variables.target + ': ' + {}", self.detail),
            "reason": "Forbidden",
        })
    }
}

/// Rules 1 to 4: where the object is, what kind it is, and whose.
fn object_rules(manifest: &Manifest) -> Vec<Rule> {
    let label = &manifest.owner_label;
    let related = cel_list(manifest.related.iter().map(resource_key));
    let kinds = kinds_text(&manifest.related);
    let primary = &manifest.primary;
    let owner_kind = format!("{} {}", primary.api_version, primary.kind);
    let is_owner = format!(
        "r.apiVersion == {} && r.kind == {} && r.name == variables.ownerLabel",
        cel_string(&primary.api_version),
        cel_string(&primary.kind)
    );
    vec![
        Rule::new(
            "variables.requestNamespace != ''",
            "the object is not namespaced",
            "'it is not namespaced: the operator may only write objects in a namespace'",
        ),
        Rule::new(
            format!("variables.primaryUpdate || variables.resource in {related}"),
            format!("the kind is not one of the module's related kinds ({kinds})"),
            cel_string(&format!("its kind is not one of the module's related kinds ({kinds})")),
        ),
        Rule::new(
            "variables.primaryUpdate || variables.subresource == ''",
            "the operator may write no subresource but its primary's status",
            "'the operator may write no subresource but its primary\\'s status'",
        ),
        Rule::new(
            "variables.primaryUpdate || variables.ownerLabel != ''",
            format!("the object does not carry the owner label {label} with a non-empty value"),
            cel_string(&format!("it does not carry the owner label {label} with a non-empty value")),
        ),
        Rule::new(
            "variables.primaryUpdate || request.operation != 'UPDATE' \
             || variables.oldOwnerLabel == variables.ownerLabel",
            format!(
                "the operator may only update objects that already carry its owner label {label}, unchanged"
            ),
            format!(
                "(variables.oldOwnerLabel == '' ? {} \
                 : {} + variables.oldOwnerLabel + ' to ' + variables.ownerLabel) \
                 + ': the operator may only update objects that already carry its owner label, unchanged'",
                cel_string(&format!("the existing object does not carry the owner label {label}")),
                cel_string(&format!("the owner label {label} would change from ")),
            ),
        ),
        // A reference kept from the old object is not the host's doing (`orphan`
        // keeps every reference but the primary's).
        Rule::new(
            format!(
                "variables.primaryUpdate || object.metadata.?ownerReferences.orValue([])\
                 .all(r, r in variables.oldOwnerReferences || ({is_owner}))"
            ),
            format!("an ownerReference it adds does not name the {owner_kind} of its owner label"),
            format!(
                "'it adds an ownerReference to ' + object.metadata.?ownerReferences.orValue([])\
                 .filter(r, !(r in variables.oldOwnerReferences || ({is_owner})))\
                 .map(r, r.kind + ' ' + r.name).join(', ') + {}",
                cel_string(&format!(": only the {owner_kind} named by the owner label may own it"))
            ),
        ),
        Rule::new(
            format!(
                "variables.primaryUpdate || variables.oldOwnerReferences\
                 .all(r, !r.?controller.orValue(false) || ({is_owner}))"
            ),
            "the object is controlled by another owner",
            format!(
                "'it is controlled by ' + variables.oldOwnerReferences\
                 .filter(r, r.?controller.orValue(false) && !({is_owner}))\
                 .map(r, r.kind + ' ' + r.name).join(', ') + {}",
                cel_string(", not by the operator's primary")
            ),
        ),
    ]
}

/// On the primary, the host only adds and removes the manifest's finalizers.
fn primary_finalizer_rule(manifest: &Manifest) -> Rule {
    let own = cel_list(manifest.finalizers.iter().cloned());
    let old = "oldObject.metadata.?finalizers.orValue([])";
    let new = "object.metadata.?finalizers.orValue([])";
    let foreign = format!(
        "{new}.filter(f, !(f in {old}) && !(f in {own})) + {old}.filter(f, !(f in {new}) && !(f in {own}))"
    );
    Rule::new(
        format!("!variables.primaryUpdate || ({foreign}).size() == 0"),
        "the operator may only add or remove the module's own finalizers",
        format!(
            "'it adds or removes the finalizers ' + ({foreign}).join(', ') + {}",
            cel_string(": the operator may only add or remove the module's own finalizers")
        ),
    )
}

/// Rule 5's Pod Security part: the baseline rules a pod template can break most
/// simply.
fn pod_security_rules() -> Vec<Rule> {
    let privileged = "c.?securityContext.?privileged.orValue(false)";
    let host_port = "c.?ports.orValue([]).exists(p, p.?hostPort.orValue(0) != 0)";
    let capabilities = cel_list(BASELINE_CAPABILITIES.iter().map(|c| (*c).to_owned()));
    let extra =
        format!("c.?securityContext.?capabilities.?add.orValue([]).filter(a, !(a in {capabilities}))");
    vec![
        Rule::new(
            format!("!variables.containers.exists(c, {privileged})"),
            "a container of its pod template is privileged",
            format!(
                "'privileged containers: ' \
                 + variables.containers.filter(c, {privileged}).map(c, c.name).join(', ')"
            ),
        ),
        Rule::new(
            "!['hostNetwork', 'hostPID', 'hostIPC'].exists(f, variables.spec[?f].orValue(false) == true)",
            "its pod template shares a host namespace (hostNetwork, hostPID or hostIPC)",
            "'its pod template sets ' + ['hostNetwork', 'hostPID', 'hostIPC']\
             .filter(f, variables.spec[?f].orValue(false) == true).join(', ')",
        ),
        Rule::new(
            "!variables.spec.?volumes.orValue([]).exists(v, has(v.hostPath))",
            "its pod template has a hostPath volume",
            "'hostPath volumes: ' + variables.spec.?volumes.orValue([]).filter(v, has(v.hostPath))\
             .map(v, v.name).join(', ')",
        ),
        Rule::new(
            format!("!variables.containers.exists(c, {host_port})"),
            "a container of its pod template uses a hostPort",
            format!(
                "'containers with a hostPort: ' \
                 + variables.containers.filter(c, {host_port}).map(c, c.name).join(', ')"
            ),
        ),
        Rule::new(
            format!("variables.containers.all(c, {extra}.size() == 0)"),
            "a container of its pod template adds a capability outside the Pod Security baseline",
            format!(
                "'capabilities outside the Pod Security baseline: ' + variables.containers\
                 .filter(c, {extra}.size() > 0).map(c, c.name + ' adds ' + {extra}.join(', ')).join('; ')"
            ),
        ),
    ]
}

/// Rule 5's ServiceAccount part. `serviceAccount` is the deprecated alias of
/// `serviceAccountName`; both are checked so that neither can name another.
fn service_account_rule(allowed: &[String]) -> Rule {
    let names = cel_list(["".to_owned(), "default".to_owned()].into_iter().chain(allowed.iter().cloned()));
    let fields =
        "[variables.spec.?serviceAccountName.orValue(''), variables.spec.?serviceAccount.orValue('')]";
    Rule::new(
        format!("{fields}.all(n, n in {names})"),
        "its pod template names a ServiceAccount that is not allowed",
        format!(
            "'its pod template runs as ServiceAccount ' + {fields}.filter(n, !(n in {names}))[0] + {}",
            cel_string(&format!(": allowed are only {}", allowed_text(allowed)))
        ),
    )
}

/// Rule 6: external IPs let a Service capture any address's traffic (CVE-2020-8554).
fn external_ips_rule() -> Rule {
    Rule::new(
        "variables.groupKind != '/Service' || object.?spec.?externalIPs.orValue([]).size() == 0",
        "the Service sets spec.externalIPs",
        "'it sets spec.externalIPs (' + object.spec.externalIPs.join(', ') + ')'",
    )
}

/// `group/plural`, as the `resource` variable spells a request's resource.
fn resource_key(kind: &KindRef) -> String {
    format!("{}/{}", api_group(&kind.api_version), kind.plural)
}

fn kinds_text(kinds: &[KindRef]) -> String {
    if kinds.is_empty() {
        return "none".to_owned();
    }
    kinds.iter().map(|k| format!("{} {}", k.api_version, k.kind)).collect::<Vec<_>>().join(", ")
}

fn allowed_text(allowed: &[String]) -> String {
    std::iter::once("none, default").chain(allowed.iter().map(String::as_str)).collect::<Vec<_>>().join(", ")
}

/// A CEL list literal of string literals.
fn cel_list(items: impl IntoIterator<Item = String>) -> String {
    let items: Vec<String> = items.into_iter().map(|item| cel_string(&item)).collect();
    format!("[{}]", items.join(", "))
}

/// `text` as a single-quoted CEL string literal. Manifest fields end up inside CEL
/// code, so a quote or backslash in them must not end the literal.
fn cel_string(text: &str) -> String {
    let mut literal = String::with_capacity(text.len() + 2);
    literal.push('\'');
    for c in text.chars() {
        match c {
            '\\' => literal.push_str("\\\\"),
            '\'' => literal.push_str("\\'"),
            // Every control character is in the BMP: four hex digits suffice.
            c if c.is_control() => literal.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => literal.push(c),
        }
    }
    literal.push('\'');
    literal
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        serde_json::from_value(json!({ "abi": 1, "name": "m", "version": "1",
          "primary": {"apiVersion": "dittofs.dittofs.com/v1alpha1", "kind": "DittoServer",
                      "plural": "dittoservers"},
          "related": [ {"apiVersion": "v1", "kind": "ConfigMap", "plural": "configmaps"},
                       {"apiVersion": "apps/v1", "kind": "StatefulSet", "plural": "statefulsets"},
                       {"apiVersion": "pgv2.percona.com/v2", "kind": "PerconaPGCluster",
                        "plural": "perconapgclusters", "optional": true} ],
          "reads": [ {"apiVersion": "v1", "kind": "Secret", "plural": "secrets", "digestOnly": true} ],
          "ownerLabel": "dittofs.dittofs.com/server", "fieldManager": "m",
          "finalizers": ["dittofs.dittofs.com/finalizer"] }))
        .expect("test manifest")
    }

    fn options(pod_security_enforced: bool) -> AdmissionOptions {
        AdmissionOptions {
            policy_name: "wasm-operator-m".to_owned(),
            service_account: "wasm-operator".to_owned(),
            operator_namespace: "ops".to_owned(),
            allowed_service_accounts: vec!["dittofs".to_owned()],
            pod_security_enforced,
        }
    }

    fn policy_spec(pod_security_enforced: bool) -> Value {
        admission_objects(&manifest(), &options(pod_security_enforced))[0]["spec"].clone()
    }

    /// The validation whose static message contains `text`.
    fn validation(spec: &Value, text: &str) -> Value {
        let validations = spec["validations"].as_array().cloned().unwrap_or_default();
        let mut found =
            validations.into_iter().filter(|v| v["message"].as_str().is_some_and(|m| m.contains(text)));
        let first = found.next().unwrap_or_else(|| panic!("no validation says {text:?}"));
        assert!(found.next().is_none(), "several validations say {text:?}");
        first
    }

    fn expression(spec: &Value, list: &str, name: &str) -> String {
        let entries = spec[list].as_array().cloned().unwrap_or_default();
        let entry = entries.iter().find(|e| e["name"] == name).unwrap_or_else(|| panic!("no {list} {name}"));
        entry["expression"].as_str().unwrap_or_default().to_owned()
    }

    #[test]
    fn the_objects_are_a_denying_policy_and_its_binding() {
        let objects = admission_objects(&manifest(), &options(true));
        assert_eq!(objects.len(), 2);
        let (policy, binding) = (&objects[0], &objects[1]);
        for (object, kind) in
            [(policy, "ValidatingAdmissionPolicy"), (binding, "ValidatingAdmissionPolicyBinding")]
        {
            assert_eq!(object["apiVersion"], "admissionregistration.k8s.io/v1");
            assert_eq!(object["kind"], kind);
            assert_eq!(object["metadata"]["name"], "wasm-operator-m");
            assert_eq!(object["metadata"]["labels"]["app.kubernetes.io/name"], "wasm-operator");
            assert!(object["metadata"].get("namespace").is_none(), "both are cluster-scoped");
        }
        assert_eq!(binding["spec"], json!({"policyName": "wasm-operator-m", "validationActions": ["Deny"]}));
        assert_eq!(policy["spec"]["failurePolicy"], "Fail");
        assert_eq!(
            policy["spec"]["matchConstraints"]["resourceRules"],
            json!([{"apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*/*"],
                    "operations": ["CREATE", "UPDATE"], "scope": "*"}])
        );
    }

    #[test]
    fn only_the_operator_service_account_is_checked() {
        let spec = policy_spec(true);
        assert_eq!(spec["matchConditions"][0]["name"], "operator-service-account");
        assert_eq!(
            expression(&spec, "matchConditions", "operator-service-account"),
            "request.userInfo.?username.orValue('') == 'system:serviceaccount:ops:wasm-operator'"
        );
    }

    #[test]
    fn events_the_own_lease_and_access_reviews_are_exempt() {
        let spec = policy_spec(true);
        let events = expression(&spec, "matchConditions", "not-an-event");
        assert!(events.starts_with("!(") && events.contains("['', 'events.k8s.io']"), "{events}");
        let lease = expression(&spec, "matchConditions", "not-the-operator-lease");
        assert!(lease.contains("'coordination.k8s.io'") && lease.contains("== 'ops'"), "{lease}");
        let reviews = expression(&spec, "matchConditions", "not-an-access-review");
        assert!(reviews.contains("'selfsubjectaccessreviews'"), "{reviews}");
    }

    #[test]
    fn only_related_kinds_may_be_written_and_the_primary_only_updated() {
        let spec = policy_spec(true);
        let rule = validation(&spec, "not one of the module's related kinds");
        assert_eq!(
            rule["expression"],
            "variables.primaryUpdate || variables.resource in \
             ['/configmaps', 'apps/statefulsets', 'pgv2.percona.com/perconapgclusters']"
        );
        assert!(
            rule["message"]
                .as_str()
                .is_some_and(|m| m
                    .ends_with("(v1 ConfigMap, apps/v1 StatefulSet, pgv2.percona.com/v2 PerconaPGCluster)")),
            "{rule}"
        );
        let primary = expression(&spec, "variables", "primaryUpdate");
        assert_eq!(
            primary,
            "request.operation == 'UPDATE' && variables.resource == 'dittofs.dittofs.com/dittoservers' \
             && variables.subresource in ['', 'status']"
        );
        // Reads are never writable.
        assert!(!spec.to_string().contains("secrets"));
    }

    #[test]
    fn with_no_related_kinds_nothing_but_the_primary_is_writable() {
        let mut bare = manifest();
        bare.related.clear();
        let spec = admission_objects(&bare, &options(true))[0]["spec"].clone();
        let rule = validation(&spec, "related kinds (none)");
        assert_eq!(rule["expression"], "variables.primaryUpdate || variables.resource in []");
    }

    #[test]
    fn every_rule_but_the_primary_finalizers_exempts_the_primary_update() {
        let spec = policy_spec(true);
        let object_rules = [
            "not one of the module's related kinds",
            "no subresource",
            "does not carry the owner label",
            "already carry its owner label",
            "ownerReference it adds",
            "controlled by another owner",
        ];
        for text in object_rules {
            let rule = validation(&spec, text);
            assert!(
                rule["expression"].as_str().is_some_and(|e| e.starts_with("variables.primaryUpdate || "))
            );
        }
        let finalizers = validation(&spec, "own finalizers");
        let expression = finalizers["expression"].as_str().unwrap_or_default();
        assert!(expression.starts_with("!variables.primaryUpdate || "), "{expression}");
        assert!(expression.contains("['dittofs.dittofs.com/finalizer']"), "{expression}");
        // Namespaced applies to the primary too: it is a namespaced kind.
        let namespaced = validation(&spec, "not namespaced");
        assert_eq!(namespaced["expression"], "variables.requestNamespace != ''");
    }

    #[test]
    fn the_owner_label_must_be_set_and_kept_and_owners_must_be_the_primary_kind() {
        let spec = policy_spec(true);
        assert_eq!(
            expression(&spec, "variables", "ownerLabel"),
            "object.metadata.?labels[?'dittofs.dittofs.com/server'].orValue('')"
        );
        let label = validation(&spec, "does not carry the owner label dittofs.dittofs.com/server");
        assert!(label["expression"].as_str().is_some_and(|e| e.ends_with("variables.ownerLabel != ''")));
        let kept = validation(&spec, "already carry its owner label");
        assert!(
            kept["expression"].as_str().is_some_and(|e| e.contains("request.operation != 'UPDATE'")
                && e.ends_with("variables.oldOwnerLabel == variables.ownerLabel")),
            "{kept}"
        );
        let owner = "r.apiVersion == 'dittofs.dittofs.com/v1alpha1' && r.kind == 'DittoServer' \
                     && r.name == variables.ownerLabel";
        let added = validation(&spec, "ownerReference it adds");
        assert!(
            added["expression"]
                .as_str()
                .is_some_and(|e| e.contains(owner) && e.contains("r in variables.oldOwnerReferences")),
            "{added}"
        );
        let controller = validation(&spec, "controlled by another owner");
        assert!(controller["expression"].as_str().is_some_and(|e| e.contains(owner)), "{controller}");
    }

    #[test]
    fn pod_specs_are_found_in_every_template_kind() {
        let spec = policy_spec(true);
        let pod_spec = expression(&spec, "variables", "podSpec");
        for (kind, path) in POD_SPECS {
            assert!(pod_spec.contains(&format!("variables.groupKind == '{kind}' ? {path} :")), "{kind}");
        }
        assert!(pod_spec.ends_with(&format!("(optional.none()){}", ")".repeat(POD_SPECS.len() - 1))));
        let containers = expression(&spec, "variables", "containers");
        for field in ["containers", "initContainers", "ephemeralContainers"] {
            assert!(containers.contains(&format!("variables.spec.?{field}.orValue([])")), "{field}");
        }
    }

    #[test]
    fn pod_security_rules_are_baseline_and_only_when_enforced() {
        let pod_security = [
            "is privileged",
            "shares a host namespace",
            "hostPath volume",
            "uses a hostPort",
            "outside the Pod Security baseline",
        ];
        let enforced = policy_spec(true);
        for text in pod_security {
            validation(&enforced, text);
        }
        let capabilities = validation(&enforced, "outside the Pod Security baseline");
        let listed = format!(
            "[{}]",
            BASELINE_CAPABILITIES.iter().map(|c| format!("'{c}'")).collect::<Vec<_>>().join(", ")
        );
        assert!(capabilities["expression"].as_str().is_some_and(|e| e.contains(&listed)), "{capabilities}");

        let privileged = policy_spec(false);
        let messages = privileged["validations"].to_string();
        for text in pod_security {
            assert!(!messages.contains(text), "{text} is checked at the privileged level");
        }
        let counts = [&enforced, &privileged].map(|s| s["validations"].as_array().map_or(0, Vec::len));
        assert_eq!(counts[0], counts[1] + pod_security.len());
        // These hold at every level.
        for spec in [&enforced, &privileged] {
            let service_account = validation(spec, "names a ServiceAccount that is not allowed");
            assert!(
                service_account["expression"]
                    .as_str()
                    .is_some_and(|e| e.contains("['', 'default', 'dittofs']")),
                "{service_account}"
            );
            let external = validation(spec, "spec.externalIPs");
            assert!(
                external["expression"]
                    .as_str()
                    .is_some_and(|e| e.starts_with("variables.groupKind != '/Service'"))
            );
        }
    }

    #[test]
    fn every_refusal_is_forbidden_and_names_the_policy() {
        for enforced in [true, false] {
            let spec = policy_spec(enforced);
            for rule in spec["validations"].as_array().into_iter().flatten() {
                assert_eq!(rule["reason"], "Forbidden", "{rule}");
                let message = rule["message"].as_str().unwrap_or_default();
                assert!(
                    message.starts_with(
                        "the wasm-operator admission policy wasm-operator-m refused this write: "
                    )
                );
                assert!(!message.contains('\n'), "a message is one line: {message}");
                let expression = rule["messageExpression"].as_str().unwrap_or_default();
                assert!(
                    expression.starts_with(
                        "'the wasm-operator admission policy wasm-operator-m refused ' \
                         + variables.target + ': ' + "
                    ),
                    "{expression}"
                );
            }
        }
    }

    /// The names after `variables.` in `text`.
    fn used_variables(text: &str) -> Vec<String> {
        text.split("variables.")
            .skip(1)
            .map(|rest| rest.chars().take_while(char::is_ascii_alphanumeric).collect())
            .collect()
    }

    #[test]
    fn variables_only_use_variables_defined_before_them() {
        let spec = policy_spec(true);
        let variables = spec["variables"].as_array().cloned().unwrap_or_default();
        let names: Vec<&str> = variables.iter().filter_map(|v| v["name"].as_str()).collect();
        for (i, variable) in variables.iter().enumerate() {
            for used in used_variables(variable["expression"].as_str().unwrap_or_default()) {
                assert!(
                    names[..i].contains(&used.as_str()),
                    "{} uses {used}, defined later or not at all",
                    names[i]
                );
            }
        }
        for used in used_variables(&spec["validations"].to_string()) {
            assert!(names.contains(&used.as_str()), "variables.{used} is not defined");
        }
        // Variables cannot be used in match conditions.
        assert!(used_variables(&spec["matchConditions"].to_string()).is_empty());
        // `namespace` is a reserved word in CEL, refused as a variable name.
        assert!(!names.contains(&"namespace"));
    }

    #[test]
    fn cel_strings_cannot_be_broken_out_of() {
        assert_eq!(cel_string("plain"), "'plain'");
        assert_eq!(cel_string(r"a'b\c"), r"'a\'b\\c'");
        assert_eq!(cel_string("line\nbreak\u{7f}"), r"'line\u000abreak\u007f'");
        assert_eq!(cel_list(["a".to_owned(), "b'".to_owned()]), r"['a', 'b\'']");
        assert_eq!(cel_list(Vec::new()), "[]");

        let mut hostile = manifest();
        hostile.owner_label = "x' || true || '".to_owned();
        let spec = admission_objects(&hostile, &options(true))[0]["spec"].clone();
        assert_eq!(
            expression(&spec, "variables", "ownerLabel"),
            r"object.metadata.?labels[?'x\' || true || \''].orValue('')"
        );
        let mut opts = options(true);
        opts.service_account = "sa' || true || '".to_owned();
        let spec = admission_objects(&manifest(), &opts)[0]["spec"].clone();
        assert_eq!(
            expression(&spec, "matchConditions", "operator-service-account"),
            r"request.userInfo.?username.orValue('') == 'system:serviceaccount:ops:sa\' || true || \''"
        );
    }
}
