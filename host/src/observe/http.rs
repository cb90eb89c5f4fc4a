//! The HTTP endpoints: `/metrics` on `--metrics-bind-address`, and `/healthz`,
//! `/readyz`, `/module` on `--health-probe-bind-address` (controller-runtime's split,
//! so that a NetworkPolicy can open the metrics port to Prometheus alone and the
//! probe port to the kubelet).
//!
//! - `/healthz` answers 200 while the replica reconciles (or is a follower), and 503
//!   with the reason when it leads but has stopped: no worker alive, or work waiting
//!   in the queue past the stall timeout. Kubernetes then restarts the pod;
//! - `/readyz` answers 200 once every watch has delivered its initial list (with
//!   leader election, regardless of leadership: a follower is ready to take over),
//!   503 before, naming each watch that has not listed within the sync timeout with
//!   its last error;
//! - `/module` describes the active module as JSON (digest, name, version, loadedAt,
//!   origin, signer, manifest), the last refused hot-swap candidate (`lastRejection`:
//!   digest, reason, message, origin, at; `null` if none) and the last three modules
//!   made active, newest first (`history`: digest, version, origin, signer, at; pin
//!   one with `--module-digest` to roll back), read from the same holder the
//!   reconciles use, so it shows a hot swap at once;
//! - `/metrics` is the Prometheus text format.

use super::metrics::Metrics;
use crate::module::ActiveModule;
use crate::snapshot::rfc3339;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use std::sync::Arc;

/// What the endpoints read.
#[derive(Clone)]
pub struct HttpState {
    /// The metrics.
    pub metrics: Arc<Metrics>,
    /// The active module.
    pub active: Arc<ActiveModule>,
    /// Whether every watch has listed, or why not.
    pub ready: Arc<dyn Fn() -> Result<(), String> + Send + Sync>,
    /// Whether reconciling goes on, or why not.
    pub healthy: Arc<dyn Fn() -> Result<(), String> + Send + Sync>,
    /// Brings the gauges that are read from elsewhere (the cache sizes) up to date;
    /// called before each scrape.
    pub refresh: Arc<dyn Fn() + Send + Sync>,
}

/// The router of `/metrics`.
pub fn metrics_router(state: HttpState) -> Router {
    Router::new().route("/metrics", get(metrics)).with_state(state)
}

/// The router of `/healthz`, `/readyz` and `/module`.
pub fn probe_router(state: HttpState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/module", get(module))
        .with_state(state)
}

async fn metrics(State(state): State<HttpState>) -> Response {
    (state.refresh)();
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        state.metrics.encode(),
    )
        .into_response()
}

async fn healthz(State(state): State<HttpState>) -> Response {
    match (state.healthy)() {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response(),
    }
}

async fn readyz(State(state): State<HttpState>) -> Response {
    match (state.ready)() {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response(),
    }
}

async fn module(State(state): State<HttpState>) -> Response {
    let current = state.active.current();
    let manifest = current.module.manifest();
    let last_rejection = state.active.last_rejection().map(|r| {
        serde_json::json!({
            "digest": r.digest,
            "reason": r.reason,
            "message": r.message,
            "origin": r.origin,
            "at": rfc3339(r.at),
        })
    });
    let history: Vec<_> = state
        .active
        .history()
        .into_iter()
        .map(|accepted| {
            serde_json::json!({
                "digest": accepted.digest,
                "version": accepted.version,
                "origin": accepted.origin,
                "signer": accepted.signer,
                "at": rfc3339(accepted.at),
            })
        })
        .collect();
    Json(serde_json::json!({
        "digest": current.module.digest(),
        "name": manifest.name,
        "version": manifest.version,
        "loadedAt": rfc3339(current.loaded_at),
        "origin": current.origin,
        "signer": current.signer,
        "manifest": manifest,
        "lastRejection": last_rejection,
        "history": history,
    }))
    .into_response()
}

/// Serves `router` on `listener` until `shutdown` turns true.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|s| *s).await;
        })
        .await
}
