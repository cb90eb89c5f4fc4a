//! The Services: `<name>-headless` (governs the StatefulSet), `<name>-file` (NFS, and
//! SMB when enabled), `<name>-api` (control plane) and `<name>-metrics` (only while
//! metrics are enabled).

use serde_json::{Value, json};

use super::{Owner, set};
use crate::api::DittoServerSpec;
use crate::names;

/// A TCP port whose target is the container port of the same name.
pub fn port(name: &str, number: i32) -> Value {
    json!({"name": name, "port": number, "targetPort": name, "protocol": "TCP"})
}

fn service(owner: &Owner<'_>, name: String, mut spec: Value) -> Value {
    set(&mut spec, "selector", Some(owner.pod_selector()));
    json!({"apiVersion": "v1", "kind": "Service", "metadata": owner.metadata(name), "spec": spec})
}

/// `<name>-headless`: the StatefulSet's governing Service (stable pod DNS names).
pub fn headless(owner: &Owner<'_>, spec: &DittoServerSpec) -> Value {
    service(
        owner,
        names::headless_service(owner.name),
        json!({"clusterIP": "None", "ports": [port("nfs", spec.nfs_port)]}),
    )
}

/// `<name>-file`: NFS (and SMB) for clients, of the type and with the annotations
/// `spec.service` asks for.
pub fn file(owner: &Owner<'_>, spec: &DittoServerSpec) -> Value {
    let mut ports = vec![port("nfs", spec.nfs_port)];
    if spec.smb.enabled {
        ports.push(port("smb", spec.smb.port));
    }
    let mut service = service(
        owner,
        names::file_service(owner.name),
        json!({"type": spec.service.kind.as_str(), "ports": ports}),
    );
    if !spec.service.annotations.is_empty()
        && let Some(metadata) = service.get_mut("metadata")
    {
        set(metadata, "annotations", Some(json!(spec.service.annotations)));
    }
    service
}

/// `<name>-api`: the REST control plane.
pub fn api(owner: &Owner<'_>, spec: &DittoServerSpec) -> Value {
    service(owner, names::api_service(owner.name), json!({"ports": [port("api", spec.control_plane.port)]}))
}

/// `<name>-metrics`: the Prometheus endpoint.
pub fn metrics(owner: &Owner<'_>, spec: &DittoServerSpec) -> Value {
    service(owner, names::metrics_service(owner.name), json!({"ports": [port("metrics", spec.metrics.port)]}))
}
