//! Logs, traces and error reports. Logs are JSON lines in production, readable lines in
//! development, with the level from `RUST_LOG`. Traces go over OTLP/HTTP when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set, honouring and propagating W3C `traceparent`.
//! Sentry receives 5xx and failed jobs when `SENTRY_DSN` is set (per-request hubs and
//! transactions come from sentry-tower in `http::router`); it is initialised before
//! the async runtime, as its docs require.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{KeyValue, global};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use secrecy::ExposeSecret;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, fmt};

use crate::config::{Config, LogFormat};

/// Keeps the exporters alive; `shutdown` flushes what is still buffered.
pub struct Telemetry {
    tracer_provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    pub fn shutdown(self) {
        if let Some(provider) = self.tracer_provider
            && let Err(e) = provider.shutdown()
        {
            eprintln!("could not flush traces: {e}");
        }
    }
}

/// Sentry, before the runtime exists. The guard flushes pending events when dropped.
pub fn init_sentry(config: &Config) -> Option<sentry::ClientInitGuard> {
    let dsn = config.sentry_dsn.as_ref()?;
    let environment = config
        .sentry_environment
        .clone()
        .unwrap_or_else(|| config.app_env.as_str().to_string());
    let options = sentry::ClientOptions::new()
        .dsn(dsn.expose_secret())
        .release(concat!("agents-api@", env!("CARGO_PKG_VERSION")))
        .environment(environment)
        .traces_sample_rate(config.sentry_traces_sample_rate)
        // Request bodies, headers and user data stay out of reports.
        .send_default_pii(false);
    Some(sentry::init(options))
}

/// Logging, and tracing export when configured. Call inside the runtime.
/// `log_filter` is `RUST_LOG` (from the environment or `.env`).
pub fn init(config: &Config, log_filter: Option<&str>) -> Telemetry {
    let filter = || {
        log_filter
            .and_then(|f| EnvFilter::try_new(f).ok())
            .unwrap_or_else(|| EnvFilter::new("info,sqlx=warn,tower_http=warn,opentelemetry=warn"))
    };
    let logs = match config.log_format {
        LogFormat::Json => fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_target(false)
            .with_filter(filter())
            .boxed(),
        LogFormat::Pretty => fmt::layer()
            .compact()
            .with_target(false)
            .with_filter(filter())
            .boxed(),
    };
    let tracer_provider = config
        .otel_exporter_otlp_endpoint
        .as_deref()
        .and_then(|endpoint| {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
                .build();
            match exporter {
                Ok(exporter) => Some(
                    SdkTracerProvider::builder()
                        .with_batch_exporter(exporter)
                        .with_resource(
                            Resource::builder()
                                .with_service_name("agents-api")
                                .with_attribute(KeyValue::new(
                                    "deployment.environment",
                                    config.app_env.as_str(),
                                ))
                                .build(),
                        )
                        .build(),
                ),
                Err(e) => {
                    eprintln!("OTLP exporter not started: {e}");
                    None
                }
            }
        });
    let traces = tracer_provider.as_ref().map(|provider| {
        global::set_text_map_propagator(TraceContextPropagator::new());
        global::set_tracer_provider(provider.clone());
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("agents-api"))
            .with_filter(EnvFilter::new("info"))
    });
    // A second init (tests starting several apps in one process) is harmless.
    let _ = tracing_subscriber::registry()
        .with(logs)
        .with(traces)
        .try_init();
    Telemetry { tracer_provider }
}

/// Reports a server-side failure to Sentry (a no-op without `SENTRY_DSN`).
pub fn report(message: &str, request_id: Option<&str>, job: Option<(&str, &str)>) {
    sentry::with_scope(
        |scope| {
            if let Some(id) = request_id {
                scope.set_tag("request_id", id);
            }
            if let Some((job_id, job_type)) = job {
                scope.set_tag("job_id", job_id);
                scope.set_tag("job_type", job_type);
            }
        },
        || sentry::capture_message(message, sentry::Level::Error),
    );
}

/// `traceparent` in and out: reads a W3C trace context from request headers.
pub struct HeaderExtractor<'a>(pub &'a axum::http::HeaderMap);

impl opentelemetry::propagation::Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Writes the current trace context into outgoing request headers.
pub struct HeaderInjector<'a>(pub &'a mut reqwest::header::HeaderMap);

impl opentelemetry::propagation::Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            reqwest::header::HeaderName::from_bytes(key.as_bytes()),
            reqwest::header::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// The W3C context a request arrived with (empty without a propagator or header).
pub fn incoming_context(headers: &axum::http::HeaderMap) -> opentelemetry::Context {
    global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)))
}

/// Headers carrying the current span's trace context to another service.
pub fn outgoing_headers() -> reqwest::header::HeaderMap {
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let mut headers = reqwest::header::HeaderMap::new();
    let context = tracing::Span::current().context();
    global::get_text_map_propagator(|p| {
        p.inject_context(&context, &mut HeaderInjector(&mut headers))
    });
    headers
}

/// The text a panic carried (`panic!` with a literal or a formatted message).
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}
