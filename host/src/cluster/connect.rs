//! Connecting to the cluster: the kubeconfig named by `KUBECONFIG` (or
//! `~/.kube/config`), else the in-cluster service account, as `kubectl` does.
//!
//! Errors say where the host looked, so that "no cluster" is actionable.

use kube::{Client, Config};

/// Why the host could not build a client.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Neither a kubeconfig nor the in-cluster configuration could be loaded.
    #[error(
        "no Kubernetes configuration found: {kubeconfig_env}, no usable ~/.kube/config, and not running in a pod \
         (KUBERNETES_SERVICE_HOST unset); set KUBECONFIG to your cluster's kubeconfig"
    )]
    NoConfig {
        /// Whether and what KUBECONFIG was set to, for the message.
        kubeconfig_env: String,
        /// The loader's error.
        #[source]
        source: kube::config::InferConfigError,
    },
    /// The configuration was found but a client could not be built from it.
    #[error("cannot build a Kubernetes client for {server}")]
    Client {
        /// The API server's URL.
        server: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
}

/// A client for the configured cluster and the API server's URL (for error messages).
pub async fn connect() -> Result<(Client, String), ConnectError> {
    let config = Config::infer().await.map_err(|source| ConnectError::NoConfig {
        kubeconfig_env: match std::env::var("KUBECONFIG") {
            Ok(value) if !value.is_empty() => format!("KUBECONFIG={value} could not be loaded"),
            _ => "KUBECONFIG is unset".to_owned(),
        },
        source,
    })?;
    let server = config.cluster_url.to_string();
    let client =
        Client::try_from(config).map_err(|source| ConnectError::Client { server: server.clone(), source })?;
    Ok((client, server))
}
