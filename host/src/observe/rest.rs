//! client-go's API request metrics, recorded by a layer on the kube [`Client`]'s
//! service stack (see [`connect`](crate::cluster::connect)):
//! `rest_client_requests_total{code,method}` and
//! `rest_client_request_duration_seconds{verb}`.
//!
//! As in client-go, a request that got no response (connection refused, timeout)
//! counts with `code="<error>"`, and the duration runs until the response's headers,
//! so a watch counts the time to open it, not how long it stays open. Label values
//! are the HTTP method and status code only, never a path, so cardinality is bounded.
//!
//! [`Client`]: kube::Client

use http::{Request, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

/// Labels of one API request's result.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The HTTP status code, or `<error>` when no response came.
    pub code: String,
    /// The HTTP method.
    pub method: String,
}

/// Labels of one API request's duration.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerbLabels {
    /// The HTTP method, as client-go's `verb` label holds it.
    pub verb: String,
}

/// The API request metrics; clones share their values.
#[derive(Debug, Clone)]
pub struct RestClientMetrics {
    requests: Family<RequestLabels, Counter>,
    duration: Family<VerbLabels, Histogram>,
}

impl Default for RestClientMetrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            // 1 ms to about 65 s, doubling.
            duration: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.001, 2.0, 17))),
        }
    }
}

impl RestClientMetrics {
    /// Registers the families, without a prefix, as client-go names them.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "rest_client_requests",
            "Number of HTTP requests to the API server, partitioned by status code and method",
            self.requests.clone(),
        );
        registry.register(
            "rest_client_request_duration_seconds",
            "Request latency in seconds, until the response headers, by verb",
            self.duration.clone(),
        );
    }

    /// The layer that records into these metrics.
    pub fn layer(&self) -> RestClientLayer {
        RestClientLayer { metrics: self.clone() }
    }

    /// Requests counted with `code` and `method`, for tests.
    pub fn requests(&self, code: &str, method: &str) -> u64 {
        self.requests.get_or_create(&RequestLabels { code: code.to_owned(), method: method.to_owned() }).get()
    }

    fn record(&self, method: &str, code: String, started: Instant) {
        self.requests.get_or_create(&RequestLabels { code, method: method.to_owned() }).inc();
        self.duration
            .get_or_create(&VerbLabels { verb: method.to_owned() })
            .observe(started.elapsed().as_secs_f64());
    }
}

/// A [`tower::Layer`] recording [`RestClientMetrics`].
#[derive(Debug, Clone)]
pub struct RestClientLayer {
    metrics: RestClientMetrics,
}

impl<S> tower::Layer<S> for RestClientLayer {
    type Service = RestClientService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RestClientService { inner, metrics: self.metrics.clone() }
    }
}

/// The service [`RestClientLayer`] wraps around the client's stack.
#[derive(Debug, Clone)]
pub struct RestClientService<S> {
    inner: S,
    metrics: RestClientMetrics,
}

impl<S, B, R> tower::Service<Request<B>> for RestClientService<S>
where
    S: tower::Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let method = request.method().as_str().to_owned();
        let metrics = self.metrics.clone();
        let started = Instant::now();
        let response = self.inner.call(request);
        Box::pin(async move {
            let result = response.await;
            let code = match &result {
                Ok(response) => response.status().as_u16().to_string(),
                Err(_) => "<error>".to_owned(),
            };
            metrics.record(&method, code, started);
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use tower::{Layer as _, Service as _};

    /// Answers every request with the status its path names; `/fail` errs.
    #[derive(Clone)]
    struct Echo;

    impl tower::Service<Request<()>> for Echo {
        type Response = Response<()>;
        type Error = &'static str;
        type Future = Pin<Box<dyn Future<Output = Result<Response<()>, &'static str>> + Send>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: Request<()>) -> Self::Future {
            let path = request.uri().path().trim_start_matches('/').to_owned();
            Box::pin(async move {
                let status: u16 = path.parse().map_err(|_| "no response")?;
                Response::builder().status(status).body(()).map_err(|_| "bad status")
            })
        }
    }

    fn request(method: &str, path: &str) -> Request<()> {
        Request::builder().method(method).uri(path).body(()).expect("a request")
    }

    #[tokio::test]
    async fn responses_count_by_code_and_method_and_failures_as_error() -> Result<(), Infallible> {
        let metrics = RestClientMetrics::default();
        let mut service = metrics.layer().layer(Echo);
        assert!(service.call(request("GET", "/200")).await.is_ok());
        assert!(service.call(request("GET", "/200")).await.is_ok());
        assert!(service.call(request("PATCH", "/429")).await.is_ok());
        assert!(service.call(request("DELETE", "/fail")).await.is_err());
        assert_eq!(metrics.requests("200", "GET"), 2);
        assert_eq!(metrics.requests("429", "PATCH"), 1);
        assert_eq!(metrics.requests("<error>", "DELETE"), 1);
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
        assert!(text.contains("rest_client_requests_total{code=\"429\",method=\"PATCH\"} 1"), "{text}");
        assert!(text.contains("rest_client_request_duration_seconds_count{verb=\"GET\"} 2"), "{text}");
        Ok(())
    }
}
