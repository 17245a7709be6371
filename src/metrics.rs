//! Prometheus metrics, served only on `METRICS_ADDR` (a listener of its own, so they are
//! never public by accident). The registry is the one global of the service. Labels are
//! route templates and fixed words, never raw paths, ids or tokens.

use std::sync::LazyLock;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::state::AppState;

pub static REGISTRY: LazyLock<Registry> = LazyLock::new(|| {
    let registry = Registry::new();
    #[cfg(target_os = "linux")]
    let _ = registry.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    ));
    registry
});

fn register<T: prometheus::core::Collector + Clone + 'static>(metric: T) -> T {
    // Registering the same name twice can only be a programming error caught by tests;
    // the metric still works unregistered.
    let _ = REGISTRY.register(Box::new(metric.clone()));
    metric
}

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

pub static HTTP_REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register(
        IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests by route template and status",
            ),
            &["method", "route", "status"],
        )
        .expect("static metric definition"),
    )
});

pub static HTTP_DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    register(
        HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "HTTP request latency by route template",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["method", "route"],
        )
        .expect("static metric definition"),
    )
});

pub static HTTP_IN_FLIGHT: LazyLock<IntGauge> = LazyLock::new(|| {
    register(
        IntGauge::new("http_requests_in_flight", "HTTP requests being served")
            .expect("static metric definition"),
    )
});

pub static DB_POOL: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register(
        IntGaugeVec::new(
            Opts::new("db_pool_connections", "Database pool connections by state"),
            &["state"],
        )
        .expect("static metric definition"),
    )
});

pub static JOBS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register(
        IntCounterVec::new(
            Opts::new("jobs_total", "Job attempts by type and outcome"),
            &["type", "outcome"],
        )
        .expect("static metric definition"),
    )
});

pub static JOB_DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    register(
        HistogramVec::new(
            HistogramOpts::new("job_duration_seconds", "Job attempt duration by type")
                .buckets(LATENCY_BUCKETS.to_vec()),
            &["type"],
        )
        .expect("static metric definition"),
    )
});

pub static KOMMO_CALLS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register(
        IntCounterVec::new(
            Opts::new(
                "kommo_requests_total",
                "Calls to Kommo by endpoint and outcome",
            ),
            &["endpoint", "outcome"],
        )
        .expect("static metric definition"),
    )
});

pub static RATE_LIMITED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register(
        IntCounterVec::new(
            Opts::new(
                "rate_limit_rejections_total",
                "Requests refused by a rate limit",
            ),
            &["class"],
        )
        .expect("static metric definition"),
    )
});

pub static RATE_LIMIT_FALLBACK: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register(
        IntCounterVec::new(
            Opts::new(
                "rate_limit_fallback_total",
                "Rate-limit decisions taken in-process because Redis was unavailable",
            ),
            &["class"],
        )
        .expect("static metric definition"),
    )
});

pub static WEBHOOKS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register(
        IntCounterVec::new(
            Opts::new("webhooks_total", "Kommo webhooks by outcome"),
            &["outcome"],
        )
        .expect("static metric definition"),
    )
});

pub static AI_REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register(
        IntCounterVec::new(
            Opts::new(
                "ai_requests_total",
                "Calls to the model provider by kind (chat, chat_stream, embed) and outcome",
            ),
            &["kind", "outcome"],
        )
        .expect("static metric definition"),
    )
});

pub static AI_DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    register(
        HistogramVec::new(
            HistogramOpts::new(
                "ai_request_duration_seconds",
                "Model provider call latency (retries included) by kind",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["kind"],
        )
        .expect("static metric definition"),
    )
});

pub static AI_TOKENS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register(
        IntCounterVec::new(
            Opts::new(
                "ai_tokens_total",
                "Tokens the model provider reported, by kind and direction (prompt, completion)",
            ),
            &["kind", "direction"],
        )
        .expect("static metric definition"),
    )
});

pub static AGENT_REPLIES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register(
        IntCounterVec::new(
            Opts::new(
                "agent_replies_total",
                "What agent:reply did with a set of inbound messages: answered, off_hours, \
                 deferred, handed_off, unrouted, quota, ignored, failed",
            ),
            &["outcome"],
        )
        .expect("static metric definition"),
    )
});

pub fn observe_agent_reply(outcome: &str) {
    AGENT_REPLIES.with_label_values(&[outcome]).inc();
}

pub fn observe_http(method: &str, route: &str, status: u16, latency: Duration) {
    HTTP_REQUESTS
        .with_label_values(&[method, route, &status.to_string()])
        .inc();
    HTTP_DURATION
        .with_label_values(&[method, route])
        .observe(latency.as_secs_f64());
}

pub fn observe_job(job_type: &str, outcome: &str, duration: Duration) {
    JOBS.with_label_values(&[job_type, outcome]).inc();
    JOB_DURATION
        .with_label_values(&[job_type])
        .observe(duration.as_secs_f64());
}

/// Kommo endpoints with their numeric ids replaced, so a label never carries an id.
pub fn observe_kommo(path: &str, outcome: &str) {
    let endpoint: Vec<&str> = path
        .split('?')
        .next()
        .unwrap_or("")
        .split('/')
        .map(|segment| {
            if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) {
                "{id}"
            } else {
                segment
            }
        })
        .collect();
    KOMMO_CALLS
        .with_label_values(&[&endpoint.join("/"), outcome])
        .inc();
}

pub fn observe_ai(
    kind: &str,
    outcome: &str,
    latency: Duration,
    prompt_tokens: u64,
    completion_tokens: u64,
) {
    AI_REQUESTS.with_label_values(&[kind, outcome]).inc();
    AI_DURATION
        .with_label_values(&[kind])
        .observe(latency.as_secs_f64());
    if prompt_tokens > 0 {
        AI_TOKENS
            .with_label_values(&[kind, "prompt"])
            .inc_by(prompt_tokens);
    }
    if completion_tokens > 0 {
        AI_TOKENS
            .with_label_values(&[kind, "completion"])
            .inc_by(completion_tokens);
    }
}

pub static EVENT_STREAMS: LazyLock<IntGauge> = LazyLock::new(|| {
    register(
        IntGauge::new(
            "events_streams_open",
            "Server-sent event streams open on this process",
        )
        .expect("static metric definition"),
    )
});

pub static EVENTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register(
        IntCounterVec::new(
            Opts::new(
                "events_published_total",
                "Live events by outcome: published, failed (Redis refused or did not answer), \
                 dropped (the publish queue was full)",
            ),
            &["outcome"],
        )
        .expect("static metric definition"),
    )
});

/// Touches every metric so each appears (at zero) from the first scrape on.
pub fn init() {
    LazyLock::force(&HTTP_REQUESTS);
    LazyLock::force(&HTTP_DURATION);
    LazyLock::force(&HTTP_IN_FLIGHT);
    LazyLock::force(&DB_POOL);
    LazyLock::force(&JOBS);
    LazyLock::force(&JOB_DURATION);
    LazyLock::force(&KOMMO_CALLS);
    LazyLock::force(&RATE_LIMITED);
    LazyLock::force(&RATE_LIMIT_FALLBACK);
    LazyLock::force(&AI_REQUESTS);
    LazyLock::force(&AI_DURATION);
    LazyLock::force(&AI_TOKENS);
    LazyLock::force(&WEBHOOKS);
    LazyLock::force(&AGENT_REPLIES);
    LazyLock::force(&EVENT_STREAMS);
    LazyLock::force(&EVENTS);
}

/// The router of the metrics listener: `GET /metrics` and nothing else.
pub fn router(state: AppState) -> Router {
    init();
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(state)
}

async fn scrape(State(state): State<AppState>) -> impl IntoResponse {
    let pool = state.db.pool();
    DB_POOL
        .with_label_values(&["size"])
        .set(i64::from(pool.size()));
    DB_POOL
        .with_label_values(&["idle"])
        .set(state.db.idle_connections() as i64);
    DB_POOL
        .with_label_values(&["max"])
        .set(i64::from(state.config.database_max_connections));
    let mut buffer = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&REGISTRY.gather(), &mut buffer) {
        tracing::warn!(error = %e, "could not encode metrics");
    }
    (
        [(CONTENT_TYPE, TextEncoder::new().format_type().to_string())],
        buffer,
    )
}
