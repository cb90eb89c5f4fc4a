//! What the operator shows of itself: Prometheus metrics and the HTTP endpoints
//! (`/metrics`, `/healthz`, `/readyz`, `/module`).

pub(crate) mod http;
pub(crate) mod metrics;

pub use http::HttpState;
pub use metrics::{ActionLabels, Metrics, ModuleLabels, OpLabels, ResultLabels};
