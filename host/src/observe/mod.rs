//! What the operator shows of itself: Prometheus metrics and the HTTP endpoints
//! (`/metrics` on one port; `/healthz`, `/readyz`, `/module` on another).

pub(crate) mod http;
pub(crate) mod metrics;
pub(crate) mod process;
pub(crate) mod rest;

pub use http::HttpState;
pub use metrics::{ActionLabels, Metrics, ModuleLabels, OpLabels, ResultLabels, WorkQueueMetrics};
pub use rest::RestClientMetrics;
