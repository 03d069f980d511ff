//! Logging: `tracing` output on standard error (standard output is kept for what a command prints, and
//! for a job's events to its worker), filtered by `RUST_LOG` (default `info`); and, with
//! `KILN_OTLP_ENDPOINT`, traces sent over OTLP/HTTP (protobuf) to a collector: every span (each GraphQL
//! request, each use case in `service/`, each job's run in its worker and in its own process) with
//! the log lines inside it as span events.
//!
//! Two formats ([`LogFormat`], `KILN_LOG_FORMAT`):
//! - `text`, for people: coloured only when standard error is a terminal;
//! - `json`, for log collectors: one object per line with `timestamp`, `level`, `message`, the event's
//!   fields and the fields of every span it happened in, all at the top level. A job's work runs in a
//!   span carrying `job_id` (in its worker and in its own process), so every line about a job has it.

use std::fmt;
use std::io::IsTerminal;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Record};
use tracing::{Event, Id, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// For people.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Json => "json",
        }
    }
}

static FORMAT: std::sync::OnceLock<LogFormat> = std::sync::OnceLock::new();

/// The format [`init`] chose: what a job's process is told to use too.
pub fn format() -> LogFormat {
    FORMAT.get().copied().unwrap_or_default()
}

/// The trace pipeline, kept so that [`shutdown`] can send what is still buffered.
static TRACES: std::sync::OnceLock<opentelemetry_sdk::trace::SdkTracerProvider> =
    std::sync::OnceLock::new();
static OTLP_ENDPOINT: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Where traces go, when they do: what a job's process is told too.
pub fn otlp_endpoint() -> Option<String> {
    OTLP_ENDPOINT.get().cloned()
}

/// Starts logging in `format` and, given an OTLP endpoint (`http://collector:4318`), tracing to it
/// (the first call in a process wins). Fails only when the endpoint is not a URL.
pub fn init(format: LogFormat, otlp_endpoint: Option<&str>) -> anyhow::Result<()> {
    let _ = FORMAT.set(format);
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let traces = match otlp_endpoint {
        Some(endpoint) => Some(otlp_layer(endpoint)?),
        None => None,
    };
    let registry = tracing_subscriber::registry().with(filter).with(traces);
    let _ = match format {
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_target(false)
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::stderr().is_terminal()),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(SpanFields)
            .with(
                tracing_subscriber::fmt::layer()
                    .event_format(JsonLines)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    Ok(())
}

/// A layer sending spans to `endpoint` over OTLP/HTTP, batched on a thread of its own.
fn otlp_layer<S>(endpoint: &str) -> anyhow::Result<impl Layer<S>>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    use opentelemetry::trace::TracerProvider;
    use opentelemetry_otlp::WithExportConfig;

    let base = endpoint.trim_end_matches('/');
    url_check(base)?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(format!("{base}/v1/traces"))
        .with_timeout(std::time::Duration::from_secs(10))
        .build()
        .map_err(|e| anyhow::anyhow!("KILN_OTLP_ENDPOINT: {e}"))?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name("kiln")
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build();
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("kiln");
    let _ = TRACES.set(provider);
    let _ = OTLP_ENDPOINT.set(base.to_string());
    Ok(tracing_opentelemetry::layer().with_tracer(tracer))
}

fn url_check(base: &str) -> anyhow::Result<()> {
    let ok = (base.starts_with("http://") || base.starts_with("https://"))
        && base.len() > "https://".len();
    if !ok {
        anyhow::bail!("KILN_OTLP_ENDPOINT must be an http:// or https:// URL (got {base:?})");
    }
    Ok(())
}

/// Sends the spans still buffered (before the process exits).
pub fn shutdown() {
    if let Some(provider) = TRACES.get() {
        let _ = provider.force_flush();
        let _ = provider.shutdown();
    }
}

/// The trace the current span belongs to, when traces are sent: what an internal error's reference
/// adds, so that the error's trace can be found.
pub fn current_trace_id() -> Option<String> {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    TRACES.get()?;
    let context = tracing::Span::current().context();
    let span = context.span();
    let id = span.span_context().trace_id();
    (id != opentelemetry::trace::TraceId::INVALID).then(|| id.to_string())
}

/// The W3C `traceparent` of the current span when traces are sent: handed to a process this one
/// starts for the same work (a job's process, a job's pod) as `TRACEPARENT`, so that its spans join
/// this trace.
pub fn traceparent() -> Option<String> {
    use opentelemetry::propagation::TextMapPropagator;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    TRACES.get()?;
    let mut carrier = std::collections::HashMap::new();
    opentelemetry_sdk::propagation::TraceContextPropagator::new()
        .inject_context(&tracing::Span::current().context(), &mut carrier);
    carrier.remove("traceparent")
}

/// Makes `span` part of the trace a `traceparent` names (from [`traceparent`] in the process that
/// started this one); an unreadable one is ignored.
pub fn continue_trace(span: &tracing::Span, traceparent: &str) {
    use opentelemetry::propagation::TextMapPropagator;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let carrier =
        std::collections::HashMap::from([("traceparent".to_string(), traceparent.to_string())]);
    let context = opentelemetry_sdk::propagation::TraceContextPropagator::new().extract(&carrier);
    let _ = span.set_parent(context);
}

/// A span's fields as JSON, kept in the span's extensions by [`SpanFields`].
struct SpanJson(Map<String, Value>);

/// Records each span's fields (and those recorded later) for [`JsonLines`].
struct SpanFields;

impl<S> Layer<S> for SpanFields
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Map::new();
        attrs.record(&mut JsonVisitor(&mut fields));
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanJson(fields));
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(SpanJson(fields)) = span.extensions_mut().get_mut::<SpanJson>()
        {
            values.record(&mut JsonVisitor(fields));
        }
    }
}

/// Writes an event as one JSON object: the spans' fields (outermost first), then the event's.
struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = Map::new();
        let mut timestamp = String::new();
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        line.insert("timestamp".into(), Value::String(timestamp));
        line.insert(
            "level".into(),
            Value::String(event.metadata().level().to_string()),
        );
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                if let Some(SpanJson(fields)) = span.extensions().get::<SpanJson>() {
                    line.extend(fields.clone());
                }
            }
        }
        event.record(&mut JsonVisitor(&mut line));
        writeln!(writer, "{}", Value::Object(line))
    }
}

/// Collects fields into a JSON object: numbers and booleans as such, everything else as text.
struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl Visit for JsonVisitor<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), Value::String(format!("{value:?}")));
    }
}
