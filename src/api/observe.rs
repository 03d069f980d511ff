//! Each GraphQL request counted in the process's metrics: its operation name (as the document names
//! the operation that ran, whether or not the client sent `operationName`), its outcome (`ok` or the
//! first error's code) and its time, parse and validation errors included; and a span for each request
//! (`GraphQL request`, with its `operation` and `outcome`), which traces carry.

use std::sync::{Arc, Mutex};

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextExecute, NextRequest,
};
use async_graphql::{Response, Value};

use crate::metrics::Metrics;

/// The extension; one [`Observed`] per request.
pub struct RequestMetrics(pub Arc<Metrics>);

impl ExtensionFactory for RequestMetrics {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(Observed {
            metrics: self.0.clone(),
            operation: Mutex::new(None),
        })
    }
}

struct Observed {
    metrics: Arc<Metrics>,
    operation: Mutex<Option<String>>,
}

#[async_trait::async_trait]
impl Extension for Observed {
    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        use tracing::Instrument;
        let started = std::time::Instant::now();
        // The request's span: every use case it calls is a span inside it.
        let span = tracing::info_span!(
            "graphql",
            otel.name = "GraphQL request",
            operation = tracing::field::Empty,
            outcome = tracing::field::Empty,
        );
        let response = next.run(ctx).instrument(span.clone()).await;
        let outcome = response.errors.first().map_or("ok".to_string(), |e| {
            match e.extensions.as_ref().and_then(|x| x.get("code")) {
                Some(Value::String(code)) => code.clone(),
                Some(Value::Enum(code)) => code.to_string(),
                _ => "error".to_string(),
            }
        });
        let operation = self.operation.lock().expect("operation lock").take();
        span.record("outcome", outcome.as_str());
        if let Some(name) = &operation {
            span.record("operation", name.as_str());
        }
        self.metrics
            .graphql_request(operation.as_deref(), &outcome, started.elapsed());
        response
    }

    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> Response {
        *self.operation.lock().expect("operation lock") = operation_name.map(str::to_string);
        next.run(ctx, operation_name).await
    }
}
