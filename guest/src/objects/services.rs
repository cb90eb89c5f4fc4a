//! The Services: `<name>-headless` (governs the StatefulSet), `<name>-file` (NFS, and
//! SMB when enabled), `<name>-api` (control plane) and `<name>-metrics` (only while
//! metrics are enabled).

use serde_json::{Value, json};

use super::{annotate, pod_selector};
use crate::api::DittoServerSpec;
use crate::input::Primary;
use crate::names;

/// A TCP port whose target is the container port of the same name.
fn port(name: &str, number: i32) -> Value {
    json!({"name": name, "port": number, "targetPort": name, "protocol": "TCP"})
}

/// The Service `name` selecting the server's pods, with `ports` and `spec` beside the
/// selector. (Built values are moved in by index: `json!` would copy them.)
fn service(owner: &Primary, name: &str, mut spec: Value, ports: Vec<Value>) -> Value {
    spec["selector"] = pod_selector(&owner.name);
    spec["ports"] = ports.into();
    let mut service = json!({"apiVersion": "v1", "kind": "Service"});
    service["metadata"] = owner.metadata(name);
    service["spec"] = spec;
    service
}

/// `<name>-headless`: the StatefulSet's governing Service (stable pod DNS names).
pub fn headless(owner: &Primary, spec: &DittoServerSpec) -> Value {
    let ports = vec![port("nfs", spec.nfs_port)];
    service(owner, &names::headless_service(&owner.name), json!({"clusterIP": "None"}), ports)
}

/// `<name>-file`: NFS (and SMB) for clients, of the type and with the annotations
/// `spec.service` asks for.
pub fn file(owner: &Primary, spec: &DittoServerSpec) -> Value {
    let mut ports = vec![port("nfs", spec.nfs_port)];
    if spec.smb.enabled {
        ports.push(port("smb", spec.smb.port));
    }
    let kind = spec.service.kind.as_str();
    let mut service = service(owner, &names::file_service(&owner.name), json!({"type": kind}), ports);
    // A user annotation named like the applied hash is overwritten by it when applied.
    for (key, value) in &spec.service.annotations {
        annotate(&mut service["metadata"], key, value);
    }
    service
}

/// `<name>-api`: the REST control plane.
pub fn api(owner: &Primary, spec: &DittoServerSpec) -> Value {
    let ports = vec![port("api", spec.control_plane.port)];
    service(owner, &names::api_service(&owner.name), json!({}), ports)
}

/// `<name>-metrics`: the Prometheus endpoint.
pub fn metrics(owner: &Primary, spec: &DittoServerSpec) -> Value {
    let ports = vec![port("metrics", spec.metrics.port)];
    service(owner, &names::metrics_service(&owner.name), json!({}), ports)
}
