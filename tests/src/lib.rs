//! Helpers for end-to-end tests against a real Kubernetes control plane.
//!
//! The cluster is the one `tests/cluster/up.sh` runs on loopback (etcd,
//! kube-apiserver, kube-controller-manager with the garbage collector and the
//! workload controllers, kube-scheduler, and kwok's fake nodes, on which pods become
//! Running and Ready without containers), or any cluster that `KUBECONFIG` names.
//! The tests play only the Percona operator, which the cluster does not have.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! let cluster = e2e::cluster().await?;
//! let client = cluster.client()?;
//! let ns = e2e::TestNamespace::create(cluster, "example").await?;
//! e2e::apply_yaml(&client, Some(ns.name()), "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n").await?;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

pub mod build;
pub mod cluster;
pub mod converge;
pub mod crds;
pub mod deploy;
pub mod dittofs;
pub mod helm;
pub mod host_process;
pub mod identity;
pub mod measure;
pub mod namespace;
pub mod objects;
pub mod operator;
pub mod private_cluster;
pub mod record;
pub mod registry;
pub mod wait;
pub mod workload;

pub use cluster::{Cluster, cluster};
pub use dittofs::Scenario;
pub use namespace::TestNamespace;
pub use objects::{FIELD_MANAGER, apply, apply_yaml, parse_yaml};
pub use operator::{Metrics, Operator};
pub use wait::{DEFAULT_TIMEOUT, wait_until};
