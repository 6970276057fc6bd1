//! OpenTelemetry export of the host's tracing spans (feature `otel`).
//!
//! Off unless the standard variable `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set: then the spans of the
//! `toolhost` crates at `info` and above (`TOOLHOST_OTEL_LOG` changes that,
//! as `TOOLHOST_LOG` does for the log) are sent over OTLP/HTTP (protobuf)
//! in batches from a thread of their own, named by `OTEL_SERVICE_NAME`
//! (default `toolhost`). The exporter's other `OTEL_*` variables apply as
//! the OpenTelemetry SDK reads them.
//!
//! Must not touch: the log on stderr (its filter stays `TOOLHOST_LOG`), or
//! anything of a call: a span carries the tool, scope, caller and outcome,
//! never arguments or results.

use opentelemetry::trace::TracerProvider as _;
use tracing_subscriber::Layer;

/// The exporter while the process runs: dropped (`Export::finish`), it
/// sends what is left.
pub(crate) struct Export(opentelemetry_sdk::trace::SdkTracerProvider);

impl Export {
    /// Send the spans still buffered (at exit).
    pub(crate) fn finish(self) {
        if let Err(e) = self.0.shutdown() {
            eprintln!("warning: OpenTelemetry export did not finish: {e}");
        }
    }
}

/// The layer that exports spans, if an endpoint is configured.
pub(crate) fn layer<S>() -> Option<(impl Layer<S>, Export)>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let set = |v: &str| std::env::var_os(v).is_some_and(|v| !v.is_empty());
    if !set("OTEL_EXPORTER_OTLP_ENDPOINT") && !set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
        return None;
    }
    let exporter = match opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
    {
        Ok(e) => e,
        Err(e) => {
            eprintln!("warning: OpenTelemetry export is off: {e}");
            return None;
        }
    };
    let mut resource = opentelemetry_sdk::Resource::builder();
    if !set("OTEL_SERVICE_NAME") {
        resource = resource.with_service_name("toolhost");
    }
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    let filter = tracing_subscriber::EnvFilter::try_from_env("TOOLHOST_OTEL_LOG")
        .unwrap_or_else(|_| "toolhost=info".into());
    let layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("toolhost"))
        .with_filter(filter);
    Some((layer, Export(provider)))
}
