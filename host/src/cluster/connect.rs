//! Connecting to the cluster: the kubeconfig given ([`ConnectConfig::kubeconfig`]),
//! else the one named by `KUBECONFIG` (or `~/.kube/config`), else the in-cluster
//! service account, as `kubectl` does; with [`ConnectConfig::context`], that context
//! of the kubeconfig instead of its current one.
//!
//! Errors say where the host looked, so that "no cluster" is actionable.

use crate::observe::RestClientMetrics;
use kube::client::ClientBuilder;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use std::path::PathBuf;

/// Which cluster to connect to: plain data from the command line.
#[derive(Debug, Clone, Default)]
pub struct ConnectConfig {
    /// A kubeconfig file to use instead of `KUBECONFIG` and the in-cluster config.
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use instead of its current one.
    pub context: Option<String>,
}

/// Why the host could not build a client.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Neither a kubeconfig nor the in-cluster configuration could be loaded.
    #[error(
        "no Kubernetes configuration found ({kubeconfig_env} could not be loaded) and not running in a pod \
         (KUBERNETES_SERVICE_HOST unset); set KUBECONFIG or pass --kubeconfig"
    )]
    NoConfig {
        /// Whether and what KUBECONFIG was set to, for the message.
        kubeconfig_env: String,
        /// The loader's error.
        #[source]
        source: kube::config::InferConfigError,
    },
    /// The kubeconfig given could not be read or used.
    #[error("cannot use the kubeconfig {path}")]
    Kubeconfig {
        /// The file, or `KUBECONFIG` when only a context was given.
        path: String,
        /// The loader's error.
        #[source]
        source: kube::config::KubeconfigError,
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

/// A client for the configured cluster, whose API requests `metrics` counts, and the
/// API server's URL (for error messages).
pub async fn connect(
    config: &ConnectConfig,
    metrics: &RestClientMetrics,
) -> Result<(Client, String), ConnectError> {
    let options = KubeConfigOptions { context: config.context.clone(), ..KubeConfigOptions::default() };
    let loaded = match (&config.kubeconfig, &config.context) {
        (Some(path), _) => {
            let named = |source| ConnectError::Kubeconfig { path: path.display().to_string(), source };
            let file = Kubeconfig::read_from(path).map_err(named)?;
            Config::from_custom_kubeconfig(file, &options).await.map_err(named)?
        }
        (None, Some(_)) => Config::from_kubeconfig(&options)
            .await
            .map_err(|source| ConnectError::Kubeconfig { path: kubeconfig_env(), source })?,
        (None, None) => Config::infer()
            .await
            .map_err(|source| ConnectError::NoConfig { kubeconfig_env: kubeconfig_env(), source })?,
    };
    let server = loaded.cluster_url.to_string();
    let client = ClientBuilder::try_from(loaded)
        .map_err(|source| ConnectError::Client { server: server.clone(), source })?
        .with_layer(&metrics.layer())
        .build();
    Ok((client, server))
}

/// What `KUBECONFIG` says, for the messages.
fn kubeconfig_env() -> String {
    match std::env::var("KUBECONFIG") {
        Ok(value) if !value.is_empty() => format!("KUBECONFIG={value}"),
        _ => "KUBECONFIG unset (~/.kube/config)".to_owned(),
    }
}
