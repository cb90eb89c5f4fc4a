//! The names, labels and annotations the module reads and writes: one place, so that
//! the objects, the manifest and the tests agree.

/// `apiVersion` of the primary kind.
pub const API_VERSION: &str = "dittofs.dittofs.com/v1alpha1";
/// The primary kind.
pub const KIND: &str = "DittoServer";
/// Plural resource name of the primary kind.
pub const PLURAL: &str = "dittoservers";
/// The finalizer that holds a DittoServer until its cleanup ran.
pub const FINALIZER: &str = "dittofs.dittofs.com/finalizer";
/// Label on every owned object; its value is the DittoServer's name.
pub const OWNER_LABEL: &str = "dittofs.dittofs.com/server";
/// Field manager of every server-side apply.
pub const FIELD_MANAGER: &str = "dittofs-operator";
/// Annotation holding the hash of the object as last applied (see [`crate::hash`]).
pub const APPLIED_HASH_ANNOTATION: &str = "dittofs.dittofs.com/applied-hash";
/// Pod annotation whose change rolls the pod: config file, Secrets, generation.
pub const CONFIG_HASH_ANNOTATION: &str = "dittofs.dittofs.com/config-hash";
/// Key of the configuration file in the ConfigMap.
pub const CONFIG_FILE_KEY: &str = "config.yaml";
/// Value of the pods' `app` label.
pub const APP_LABEL_VALUE: &str = "dittofs-server";

/// `apiVersion` of the Percona PostgreSQL cluster kind.
pub const PERCONA_API_VERSION: &str = "pgv2.percona.com/v2";
/// The Percona PostgreSQL cluster kind.
pub const PERCONA_KIND: &str = "PerconaPGCluster";
/// The PostgreSQL user Percona creates for DittoFS.
pub const PERCONA_USER: &str = "dittofs";

/// Name of the ConfigMap.
pub fn config_map(server: &str) -> String {
    format!("{server}-config")
}

/// Name of the headless Service that governs the StatefulSet.
pub fn headless_service(server: &str) -> String {
    format!("{server}-headless")
}

/// Name of the Service that exposes NFS (and SMB).
pub fn file_service(server: &str) -> String {
    format!("{server}-file")
}

/// Name of the control plane's Service.
pub fn api_service(server: &str) -> String {
    format!("{server}-api")
}

/// Name of the metrics Service.
pub fn metrics_service(server: &str) -> String {
    format!("{server}-metrics")
}

/// Name of the PerconaPGCluster.
pub fn percona_cluster(server: &str) -> String {
    format!("{server}-postgres")
}

/// Name of the Secret in which Percona publishes the DittoFS user's connection.
pub fn percona_user_secret(server: &str) -> String {
    format!("{server}-postgres-pguser-{PERCONA_USER}")
}
