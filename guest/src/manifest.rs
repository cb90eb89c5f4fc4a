//! The module's manifest: what the host watches, lets it touch and reads for it.

use reconcile_sdk::{ABI_VERSION, KindRef, Manifest};

use crate::names::{
    API_VERSION, FIELD_MANAGER, FINALIZER, KIND, OWNER_LABEL, PERCONA_API_VERSION, PERCONA_KIND, PLURAL,
};

fn kind(api_version: &str, kind: &str, plural: &str) -> KindRef {
    KindRef {
        api_version: api_version.into(),
        kind: kind.into(),
        plural: plural.into(),
        optional: false,
        digest_only: false,
    }
}

/// The manifest: DittoServers, the kinds they own (the PerconaPGCluster CRD may be
/// absent), Secrets by digest only, the owner label, field manager and finalizer.
pub fn manifest() -> Manifest {
    Manifest {
        abi: ABI_VERSION,
        name: env!("CARGO_PKG_NAME").into(),
        version: env!("CARGO_PKG_VERSION").into(),
        primary: kind(API_VERSION, KIND, PLURAL),
        related: vec![
            kind("v1", "ConfigMap", "configmaps"),
            kind("v1", "Service", "services"),
            kind("apps/v1", "StatefulSet", "statefulsets"),
            KindRef { optional: true, ..kind(PERCONA_API_VERSION, PERCONA_KIND, "perconapgclusters") },
        ],
        reads: vec![KindRef { digest_only: true, ..kind("v1", "Secret", "secrets") }],
        owner_label: OWNER_LABEL.into(),
        field_manager: FIELD_MANAGER.into(),
        finalizers: vec![FINALIZER.into()],
    }
}
