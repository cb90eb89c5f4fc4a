//! Test support: realistic DittoServer snapshots, and a small fake cluster that plays
//! the host and the API server (server-side apply, finalizers, status, garbage
//! collection), so that tests can run the module to convergence.
#![allow(dead_code, missing_docs)]

use std::collections::BTreeMap;

use dittofs_reconciler::api::DittoServerSpec;
use dittofs_reconciler::names::{FINALIZER, OWNER_LABEL};
use reconcile_sdk::{Action, LastFailure, Outcome, RequiredObject, Snapshot};
use serde_json::{Value, json};

pub const NOW: &str = "2026-11-26T12:00:00Z";
pub const NAME: &str = "nas";
pub const NAMESPACE: &str = "files";
pub const UID: &str = "6f1c9a52-0c3e-4f5e-9a43-1d2b3c4d5e6f";

/// The spec as the API server stores it: with every CRD default filled in (the
/// module's serde defaults are the CRD's).
pub fn defaulted(spec: Value) -> Value {
    let spec: DittoServerSpec = serde_json::from_value(spec).expect("spec decodes");
    serde_json::to_value(spec).expect("spec encodes")
}

/// A DittoServer as the API returns it, with the module's finalizer.
pub fn server(spec: Value) -> Value {
    json!({
        "apiVersion": "dittofs.dittofs.com/v1alpha1",
        "kind": "DittoServer",
        "metadata": {
            "name": NAME, "namespace": NAMESPACE, "uid": UID,
            "generation": 1, "resourceVersion": "1001",
            "creationTimestamp": "2026-11-26T11:00:00Z",
            "finalizers": [FINALIZER],
        },
        "spec": defaulted(spec),
    })
}

/// The smallest useful spec.
pub fn plain() -> Value {
    json!({"storage": {"metadataSize": "10Gi"}})
}

/// A digest-only Secret as the host passes it.
pub fn secret(name: &str, keys: &[&str]) -> Value {
    let data: serde_json::Map<String, Value> =
        keys.iter().map(|k| (k.to_string(), format!("sha256:{:0>64}", k.len()).into())).collect();
    json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
           "metadata": {"name": name, "namespace": NAMESPACE, "uid": format!("uid-{name}"), "resourceVersion": "77"},
           "data": data})
}

pub fn snapshot(object: Value, related: Vec<Value>, required: Vec<RequiredObject>) -> Snapshot {
    Snapshot { abi: 1, now: NOW.into(), object, related, required, last_failure: None }
}

pub fn actions(outcome: &Outcome) -> &[Action] {
    match outcome {
        Outcome::Actions { actions, .. } => actions,
        Outcome::Error(err) => panic!("unexpected error outcome: {}", err.message),
    }
}

pub fn ops(outcome: &Outcome) -> Vec<String> {
    actions(outcome)
        .iter()
        .map(|action| match action {
            Action::Apply { object } => format!(
                "apply {} {}",
                object["kind"].as_str().unwrap_or("?"),
                object["metadata"]["name"].as_str().unwrap_or("?")
            ),
            Action::Delete { kind, name, .. } => format!("delete {kind} {name}"),
            Action::Orphan { kind, name, .. } => format!("orphan {kind} {name}"),
            Action::Event { reason, .. } => format!("event {reason}"),
            other => other.op().to_string(),
        })
        .collect()
}

/// The applied object of this kind and name in `outcome`.
pub fn applied<'a>(outcome: &'a Outcome, kind: &str, name: &str) -> Option<&'a Value> {
    actions(outcome).iter().find_map(|action| match action {
        Action::Apply { object } if object["kind"] == kind && object["metadata"]["name"] == name => {
            Some(object)
        }
        _ => None,
    })
}

/// The status written by `outcome`, if any.
pub fn status_of(outcome: &Outcome) -> Option<&Value> {
    actions(outcome).iter().find_map(|action| match action {
        Action::PatchStatus { status } => Some(status),
        _ => None,
    })
}

/// A fake cluster: the primary, the objects the module applied (with what the API
/// server adds), the Secrets it may read, and the events it recorded.
pub struct Cluster {
    pub primary: Option<Value>,
    pub objects: BTreeMap<(String, String), Value>,
    pub secrets: BTreeMap<String, Value>,
    pub events: Vec<(String, String)>,
    pub now: String,
    pub last_failure: Option<LastFailure>,
    pub invocations: usize,
    resource_version: u64,
}

impl Cluster {
    /// A cluster holding a DittoServer (without the module's finalizer: as created).
    pub fn new(spec: Value) -> Self {
        let mut primary = server(spec);
        primary["metadata"]["finalizers"] = json!([]);
        Cluster {
            primary: Some(primary),
            objects: BTreeMap::new(),
            secrets: BTreeMap::new(),
            events: Vec::new(),
            now: NOW.into(),
            last_failure: None,
            invocations: 0,
            resource_version: 2000,
        }
    }

    pub fn primary(&self) -> &Value {
        self.primary.as_ref().expect("the DittoServer exists")
    }

    pub fn object(&self, kind: &str, name: &str) -> Option<&Value> {
        self.objects.get(&(kind.to_string(), name.to_string()))
    }

    pub fn object_mut(&mut self, kind: &str, name: &str) -> &mut Value {
        self.objects.get_mut(&(kind.to_string(), name.to_string())).expect("object exists")
    }

    /// Changes the spec as `kubectl apply` would (the generation moves on).
    pub fn edit_spec(&mut self, edit: impl FnOnce(&mut Value)) {
        let primary = self.primary.as_mut().expect("exists");
        edit(&mut primary["spec"]);
        primary["spec"] = defaulted(primary["spec"].clone());
        let generation = primary["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
        primary["metadata"]["generation"] = generation.into();
    }

    /// `kubectl delete`: the API server sets deletionTimestamp (now) while finalizers hold.
    pub fn delete_primary(&mut self) {
        let now = self.now.clone();
        let primary = self.primary.as_mut().expect("exists");
        primary["metadata"]["deletionTimestamp"] = now.into();
        self.collect_if_released();
    }

    /// What the host would send: the primary and the associated objects without
    /// `metadata.managedFields` (the host drops them: host/src/operator/snapshot.rs),
    /// and the answers to the requirements.
    pub fn snapshot(&self, required: Vec<RequiredObject>) -> Snapshot {
        let as_sent = |object: &Value| {
            let mut object = object.clone();
            if let Some(metadata) = object["metadata"].as_object_mut() {
                metadata.remove("managedFields");
            }
            object
        };
        let related = self
            .objects
            .values()
            .filter(|object| object["metadata"]["labels"][OWNER_LABEL] == NAME)
            .map(as_sent)
            .collect();
        Snapshot {
            abi: 1,
            now: self.now.clone(),
            object: as_sent(self.primary()),
            related,
            required,
            last_failure: self.last_failure.clone(),
        }
    }

    /// One reconcile as the host runs it: requirement rounds, then the actions of the
    /// final outcome, in order. Returns that outcome.
    pub fn reconcile(&mut self) -> Outcome {
        let mut required = Vec::new();
        for _ in 0..4 {
            self.invocations += 1;
            let outcome = dittofs_reconciler::reconcile(self.snapshot(required.clone()));
            let Outcome::Actions { requires, .. } = &outcome else { return outcome };
            let unanswered: Vec<_> = requires
                .iter()
                .filter(|r| !required.iter().any(|a: &RequiredObject| a.answers(r)))
                .cloned()
                .collect();
            if unanswered.is_empty() {
                for action in actions(&outcome).to_vec() {
                    self.run(action);
                }
                return outcome;
            }
            for requirement in unanswered {
                assert_eq!((requirement.api_version.as_str(), requirement.kind.as_str()), ("v1", "Secret"));
                let object = self.secrets.get(&requirement.name).cloned();
                required.push(RequiredObject {
                    api_version: requirement.api_version,
                    kind: requirement.kind,
                    name: requirement.name,
                    object,
                });
            }
        }
        panic!("the module asked for requirements more than 4 times");
    }

    /// Reconciles until an outcome has no action; returns how many reconciles had some.
    pub fn converge(&mut self) -> usize {
        for round in 0..10 {
            if actions(&self.reconcile()).is_empty() {
                return round;
            }
        }
        panic!("no convergence after 10 reconciles");
    }

    fn next_version(&mut self) -> String {
        self.resource_version += 1;
        self.resource_version.to_string()
    }

    fn run(&mut self, action: Action) {
        match action {
            Action::AddFinalizer { finalizer } => {
                let primary = self.primary.as_mut().expect("exists");
                primary["metadata"]["finalizers"].as_array_mut().expect("list").push(finalizer.into());
            }
            Action::RemoveFinalizer { finalizer } => {
                let primary = self.primary.as_mut().expect("exists");
                primary["metadata"]["finalizers"].as_array_mut().expect("list").retain(|f| f != &finalizer);
                self.collect_if_released();
            }
            Action::PatchStatus { status } => {
                self.primary.as_mut().expect("exists")["status"] = status;
            }
            Action::Event { reason, message, .. } => self.events.push((reason, message)),
            Action::Apply { object } => self.server_side_apply(object),
            Action::Delete { kind, name, .. } => {
                self.objects.remove(&(kind, name));
            }
            Action::Orphan { kind, name, .. } => {
                let object = self.object_mut(&kind, &name);
                if let Some(refs) =
                    object.pointer_mut("/metadata/ownerReferences").and_then(Value::as_array_mut)
                {
                    refs.retain(|r| r["uid"] != UID);
                }
            }
        }
    }

    /// Server-side apply by the only field manager: the object becomes what was
    /// applied, plus what the API server adds. Fields of other writers (status, the
    /// Percona operator's spec defaults) survive only where the apply does not set
    /// them; ownerReferences merge by uid.
    fn server_side_apply(&mut self, mut object: Value) {
        let kind = object["kind"].as_str().expect("kind").to_string();
        let name = object["metadata"]["name"].as_str().expect("name").to_string();
        let version = self.next_version();
        let previous = self.objects.get(&(kind.clone(), name.clone())).cloned();
        let api_version = object["apiVersion"].clone();
        let metadata = object["metadata"].as_object_mut().expect("metadata");
        metadata.insert("resourceVersion".into(), version.into());
        metadata.insert("uid".into(), format!("uid-{kind}-{name}").to_lowercase().into());
        metadata.insert("creationTimestamp".into(), "2026-11-26T11:00:01Z".into());
        metadata.insert(
            "managedFields".into(),
            json!([{"manager": "dittofs-operator", "operation": "Apply",
            "apiVersion": api_version, "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {}}}]),
        );
        match previous {
            None => add_defaults(&kind, &mut object),
            Some(previous) => {
                // A changed spec bumps the generation; everything else is kept as the
                // API server had it.
                let mut next = previous.clone();
                for (key, value) in object.as_object().expect("object") {
                    if key == "metadata" {
                        for (k, v) in value.as_object().expect("metadata") {
                            if k == "ownerReferences" {
                                let mut refs = previous["metadata"]["ownerReferences"]
                                    .as_array()
                                    .cloned()
                                    .unwrap_or_default();
                                for r in v.as_array().expect("refs") {
                                    refs.retain(|p| p["uid"] != r["uid"]);
                                    refs.push(r.clone());
                                }
                                next["metadata"]["ownerReferences"] = refs.into();
                            } else {
                                next["metadata"][k] = v.clone();
                            }
                        }
                    } else {
                        next[key] = value.clone();
                    }
                }
                add_defaults(&kind, &mut next);
                if next["spec"] != previous["spec"] {
                    let generation = previous["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
                    next["metadata"]["generation"] = generation.into();
                }
                object = next;
            }
        }
        if object["metadata"]["generation"].is_null() && kind != "ConfigMap" && kind != "Service" {
            object["metadata"]["generation"] = 1.into();
        }
        self.objects.insert((kind, name), object);
    }

    /// The primary goes once its finalizers are gone; the garbage collector then
    /// deletes every object with an ownerReference to it.
    fn collect_if_released(&mut self) {
        let primary = self.primary();
        let released = !primary["metadata"]["deletionTimestamp"].is_null()
            && primary["metadata"]["finalizers"].as_array().is_none_or(Vec::is_empty);
        if released {
            self.primary = None;
            self.objects.retain(|_, object| {
                !object["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(|refs| refs.iter().any(|r| r["uid"] == UID))
            });
        }
    }

    /// The StatefulSet controller and kubelet, in one: every desired pod is ready.
    pub fn statefulset_ready(&mut self) {
        let sts = self.object_mut("StatefulSet", NAME);
        let replicas = sts["spec"]["replicas"].clone();
        let generation = sts["metadata"]["generation"].clone();
        sts["status"] = json!({"observedGeneration": generation, "replicas": replicas,
            "readyReplicas": replicas, "availableReplicas": replicas, "currentReplicas": replicas,
            "updatedReplicas": replicas, "currentRevision": "nas-5d8f7c9b6", "updateRevision": "nas-5d8f7c9b6",
            "collisionCount": 0});
    }

    /// The Percona operator: reports the cluster's state and defaults its spec.
    pub fn percona_state(&mut self, state: &str) {
        let cluster = self.object_mut("PerconaPGCluster", "nas-postgres");
        cluster["status"] = json!({"state": state, "host": "nas-postgres-pgbouncer.files.svc"});
        cluster["spec"]["image"] = "percona/percona-postgresql-operator:2.8.0-ppg16-postgres".into();
        cluster["spec"]["port"] = 5432.into();
    }
}

/// Some of the defaults the API server adds to what was applied.
fn add_defaults(kind: &str, object: &mut Value) {
    match kind {
        "Service" => {
            let spec = &mut object["spec"];
            if spec["clusterIP"].is_null() {
                spec["clusterIP"] = "10.96.12.34".into();
                spec["clusterIPs"] = json!(["10.96.12.34"]);
            }
            if spec["type"].is_null() {
                spec["type"] = "ClusterIP".into();
            }
            spec["sessionAffinity"] = "None".into();
            spec["ipFamilies"] = json!(["IPv4"]);
            spec["ipFamilyPolicy"] = "SingleStack".into();
            spec["internalTrafficPolicy"] = "Cluster".into();
            object["status"] = json!({"loadBalancer": {}});
        }
        "StatefulSet" => {
            let spec = &mut object["spec"];
            spec["podManagementPolicy"] = "OrderedReady".into();
            spec["revisionHistoryLimit"] = 10.into();
            spec["updateStrategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}});
            let pod = &mut spec["template"]["spec"];
            pod["restartPolicy"] = "Always".into();
            pod["dnsPolicy"] = "ClusterFirst".into();
            pod["schedulerName"] = "default-scheduler".into();
            pod["terminationGracePeriodSeconds"] = 30.into();
            for container in pod["containers"].as_array_mut().into_iter().flatten() {
                container["imagePullPolicy"] = "Always".into();
                container["terminationMessagePath"] = "/dev/termination-log".into();
                container["terminationMessagePolicy"] = "File".into();
                for probe in ["livenessProbe", "readinessProbe"] {
                    container[probe]["timeoutSeconds"] = 1.into();
                    container[probe]["successThreshold"] = 1.into();
                    container[probe]["failureThreshold"] = 3.into();
                }
            }
            for claim in spec["volumeClaimTemplates"].as_array_mut().into_iter().flatten() {
                claim["apiVersion"] = "v1".into();
                claim["kind"] = "PersistentVolumeClaim".into();
                claim["spec"]["volumeMode"] = "Filesystem".into();
                claim["status"] = json!({"phase": "Pending"});
            }
        }
        _ => {}
    }
}
