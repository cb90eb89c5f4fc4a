//! The Services: `<name>-headless` (governs the StatefulSet), `<name>-file` (NFS, and
//! SMB when enabled), `<name>-api` (control plane) and `<name>-metrics` (only while
//! metrics are enabled).

use super::model::{PodSelector, Service, ServicePort, ServiceSpec};
use crate::api::DittoServerSpec;
use crate::input::Primary;
use crate::names;

/// A TCP port whose target is the container port of the same name.
pub fn port(name: &'static str, number: i32) -> ServicePort {
    ServicePort { name, port: number, target_port: name, protocol: "TCP" }
}

fn service<'a>(
    owner: &'a Primary,
    name: String,
    kind: Option<&'static str>,
    cluster_ip: Option<&'static str>,
    ports: Vec<ServicePort>,
) -> Service<'a> {
    Service {
        api_version: "v1",
        kind: "Service",
        metadata: owner.metadata(name),
        spec: ServiceSpec { kind, cluster_ip, ports, selector: PodSelector::of(&owner.name) },
    }
}

/// `<name>-headless`: the StatefulSet's governing Service (stable pod DNS names).
pub fn headless<'a>(owner: &'a Primary, spec: &DittoServerSpec) -> Service<'a> {
    service(owner, names::headless_service(&owner.name), None, Some("None"), vec![port("nfs", spec.nfs_port)])
}

/// `<name>-file`: NFS (and SMB) for clients, of the type and with the annotations
/// `spec.service` asks for.
pub fn file<'a>(owner: &'a Primary, spec: &'a DittoServerSpec) -> Service<'a> {
    let mut ports = vec![port("nfs", spec.nfs_port)];
    if spec.smb.enabled {
        ports.push(port("smb", spec.smb.port));
    }
    let mut service =
        service(owner, names::file_service(&owner.name), Some(spec.service.kind.as_str()), None, ports);
    service.metadata.annotations.user = Some(&spec.service.annotations);
    service
}

/// `<name>-api`: the REST control plane.
pub fn api<'a>(owner: &'a Primary, spec: &DittoServerSpec) -> Service<'a> {
    service(owner, names::api_service(&owner.name), None, None, vec![port("api", spec.control_plane.port)])
}

/// `<name>-metrics`: the Prometheus endpoint.
pub fn metrics<'a>(owner: &'a Primary, spec: &DittoServerSpec) -> Service<'a> {
    service(owner, names::metrics_service(&owner.name), None, None, vec![port("metrics", spec.metrics.port)])
}
