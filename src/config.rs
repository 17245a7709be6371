//! Typed configuration, layered as the spec says: `config/default.toml`, then
//! `config/<APP_ENV>.toml`, then environment variables. Every key is parsed and checked
//! once at start-up, and every problem is reported together so an operator fixes them in
//! one go instead of one restart per mistake.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use base64::Engine as _;
use ipnet::IpNet;
use secrecy::{ExposeSecret, SecretBox, SecretString};
use url::Url;

/// The keys `agents-api migrate` needs valid.
const MIGRATION_KEYS: &[&str] = &[
    "APP_ENV",
    "DATABASE_URL",
    "DATABASE_MIGRATION_URL",
    "LOG_FORMAT",
];

/// Every key the service reads, upper case as in the environment. `.env.example` lists
/// each of them (a test keeps the two in step).
pub const KEYS: &[&str] = &[
    "APP_ENV",
    "HTTP_ADDR",
    "HTTP_MAX_CONNECTIONS",
    "METRICS_ADDR",
    "DATABASE_URL",
    "DATABASE_MIGRATION_URL",
    "DATABASE_MAX_CONNECTIONS",
    "REDIS_URL",
    "REDIS_KEY_PREFIX",
    "JWT_SECRET",
    "JWT_JWKS_URL",
    "JWT_AUDIENCE",
    "JWT_ISSUER",
    "CORS_ALLOWED_ORIGINS",
    "ENCRYPTION_KEYS",
    "KOMMO_BASE_URL",
    "KOMMO_AUTHORIZE_URL",
    "KOMMO_CHATS_BASE_URL",
    "OAUTH_REDIRECT_URL",
    "FRONTEND_URL",
    "PUBLIC_BASE_URL",
    "TRUSTED_PROXIES",
    "WEBHOOK_ALLOWED_CIDRS",
    "RATE_LIMIT_ANON_PER_MIN",
    "RATE_LIMIT_USER_PER_MIN",
    "RATE_LIMIT_WEBHOOK_PER_MIN",
    "REQUEST_TIMEOUT_SECS",
    "BODY_READ_TIMEOUT_SECS",
    "BODY_LIMIT_BYTES",
    "WEBHOOK_BODY_LIMIT_BYTES",
    "ASSET_MAX_BYTES",
    "ASSET_STORE_URL",
    "AI_BASE_URL",
    "AI_API_KEY",
    "AI_CHAT_MODEL",
    "AI_EMBEDDING_MODEL",
    "AI_EMBEDDING_DIMENSIONS",
    "AI_TIMEOUT_SECS",
    "AI_REQUESTS_PER_MIN",
    "AI_DAILY_TOKEN_QUOTA",
    "SHUTDOWN_GRACE_SECS",
    "SHUTDOWN_DRAIN_DELAY_SECS",
    "JOB_CONCURRENCY",
    "JOB_HEARTBEAT_SECS",
    "JOB_RETRY_BASE_MS",
    "RETENTION_WEBHOOK_DAYS",
    "RETENTION_JOBS_DAYS",
    "EVENTS_RETENTION_SECS",
    "EVENTS_HEARTBEAT_SECS",
    "EVENTS_MAX_STREAMS_PER_USER",
    "SENTRY_DSN",
    "SENTRY_ENVIRONMENT",
    "SENTRY_TRACES_SAMPLE_RATE",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "LOG_FORMAT",
    "ALLOW_PRIVILEGED_DB_ROLE",
];

const EMBEDDED_LAYERS: &[(&str, &str)] = &[
    ("default", include_str!("../config/default.toml")),
    ("development", include_str!("../config/development.toml")),
    ("test", include_str!("../config/test.toml")),
    ("production", include_str!("../config/production.toml")),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppEnv {
    Development,
    Test,
    Production,
}

impl AppEnv {
    pub fn as_str(self) -> &'static str {
        match self {
            AppEnv::Development => "development",
            AppEnv::Test => "test",
            AppEnv::Production => "production",
        }
    }
}

impl FromStr for AppEnv {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "development" => Ok(AppEnv::Development),
            "test" => Ok(AppEnv::Test),
            "production" => Ok(AppEnv::Production),
            _ => Err("must be one of development, test, production".into()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

/// One AES-256 key of `ENCRYPTION_KEYS`; its bytes never appear in `Debug` output.
pub struct EncryptionKey {
    pub id: String,
    pub key: SecretBox<[u8; 32]>,
}

impl Clone for EncryptionKey {
    fn clone(&self) -> Self {
        EncryptionKey {
            id: self.id.clone(),
            key: SecretBox::new(Box::new(*self.key.expose_secret())),
        }
    }
}

impl fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EncryptionKey({}: [REDACTED])", self.id)
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub app_env: AppEnv,
    pub http_addr: SocketAddr,
    /// Open connections beyond this are refused at accept.
    pub http_max_connections: usize,
    pub metrics_addr: Option<SocketAddr>,
    pub database_url: SecretString,
    pub database_migration_url: SecretString,
    pub database_max_connections: u32,
    pub redis_url: SecretString,
    /// Prepended to every Redis key, so deployments sharing one Redis stay apart.
    pub redis_key_prefix: String,
    pub jwt_secret: Option<SecretString>,
    pub jwt_jwks_url: Option<Url>,
    pub jwt_audience: Option<String>,
    pub jwt_issuer: Option<String>,
    pub cors_allowed_origins: Vec<String>,
    pub encryption_keys: Vec<EncryptionKey>,
    pub kommo_base_url: String,
    pub kommo_authorize_url: Url,
    /// The Kommo Chats API (amojo) origin that chat replies are posted to.
    pub kommo_chats_base_url: Url,
    pub oauth_redirect_url: Option<Url>,
    pub frontend_url: Option<Url>,
    pub public_base_url: Option<Url>,
    pub trusted_proxies: Vec<IpNet>,
    pub webhook_allowed_cidrs: Vec<IpNet>,
    pub rate_limit_anon_per_min: u32,
    pub rate_limit_user_per_min: u32,
    pub rate_limit_webhook_per_min: u32,
    pub request_timeout: Duration,
    /// How long a client may take to send its body; a slower one gets 408.
    pub body_read_timeout: Duration,
    pub body_limit_bytes: usize,
    pub webhook_body_limit_bytes: usize,
    /// The largest knowledge file an upload may carry (413 beyond).
    pub asset_max_bytes: usize,
    /// Where uploaded files' bytes go (`file://` or `s3://`); `None` keeps them in
    /// PostgreSQL.
    pub asset_store_url: Option<Url>,
    /// The model provider (spec §11); `None` without `AI_BASE_URL`.
    pub ai: Option<AiConfig>,
    pub ai_timeout: Duration,
    pub ai_requests_per_min: u32,
    /// Tokens per org and day; 0 is no quota.
    pub ai_daily_token_quota: u64,
    pub ai_chat_model: String,
    pub ai_embedding_model: String,
    pub ai_embedding_dimensions: u32,
    pub shutdown_grace: Duration,
    pub shutdown_drain_delay: Duration,
    pub job_concurrency: usize,
    /// How often a worker proves it is alive; a worker silent for 3 beats is presumed
    /// dead and its job is taken over.
    pub job_heartbeat: Duration,
    /// The first retry delay; each further attempt doubles it (with jitter).
    pub job_retry_base: Duration,
    /// Days webhook deliveries and events are kept; 0 keeps them.
    pub retention_webhook_days: u32,
    /// Days finished jobs are kept; 0 keeps them.
    pub retention_jobs_days: u32,
    /// Live events younger than this are kept for `Last-Event-ID` resumption.
    pub events_retention: Duration,
    /// A comment on every open event stream this often (proxies close idle streams).
    pub events_heartbeat: Duration,
    /// Event streams one user may hold open at once, across replicas.
    pub events_max_streams_per_user: u32,
    pub sentry_dsn: Option<SecretString>,
    pub sentry_environment: Option<String>,
    pub sentry_traces_sample_rate: f32,
    pub otel_exporter_otlp_endpoint: Option<String>,
    pub log_format: LogFormat,
    pub allow_privileged_db_role: bool,
}

/// The service-wide provider: an OpenAI-compatible endpoint and its key.
#[derive(Clone)]
pub struct AiConfig {
    pub base_url: Url,
    pub api_key: Option<SecretString>,
}

impl fmt::Debug for AiConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AiConfig")
            .field("base_url", &self.base_url.as_str())
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

/// All configuration problems found at once.
#[derive(Debug)]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "invalid configuration ({} problem(s)):",
            self.problems.len()
        )?;
        for p in &self.problems {
            writeln!(f, "  - {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads the process environment and the files under `APP_CONFIG_DIR` (default
    /// `./config`).
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_lookup(|key| std::env::var(key).ok())
    }

    /// `from_env` with another source of variables (the environment and a `.env` file).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let dir = PathBuf::from(lookup("APP_CONFIG_DIR").unwrap_or_else(|| "config".into()));
        Config::load(Some(&dir), lookup)
    }

    /// What `agents-api migrate` reads: only the database and logging settings must be
    /// valid (it needs no Redis, JWT or Kommo settings); the rest keep placeholders.
    pub fn from_lookup_for_migration(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let dir = PathBuf::from(lookup("APP_CONFIG_DIR").unwrap_or_else(|| "config".into()));
        Config::load_for_migration(Some(&dir), lookup)
    }

    /// `load`, holding only the problems of `MIGRATION_KEYS` (and of the files) against it.
    pub fn load_for_migration(
        config_dir: Option<&Path>,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let (config, problems) = Config::parse(config_dir, lookup);
        let problems: Vec<String> = problems
            .into_iter()
            .filter(|p| {
                p.starts_with("config/")
                    || MIGRATION_KEYS.iter().any(|key| {
                        p.strip_prefix(key)
                            .is_some_and(|rest| rest.starts_with(':'))
                    })
            })
            .collect();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError { problems })
        }
    }

    /// Layers defaults, the environment's file and `lookup` (the environment, or a map
    /// in tests). A file missing on disk falls back to the copy compiled into the binary.
    pub fn load(
        config_dir: Option<&Path>,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let (config, problems) = Config::parse(config_dir, lookup);
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError { problems })
        }
    }

    /// Every key parsed (a placeholder where it could not be), and every problem found.
    fn parse(
        config_dir: Option<&Path>,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> (Config, Vec<String>) {
        let mut problems = Vec::new();
        let mut raw: BTreeMap<String, String> = BTreeMap::new();

        let app_env_raw = lookup("APP_ENV").unwrap_or_else(|| "development".into());
        let env_layer = match app_env_raw.parse::<AppEnv>() {
            Ok(env) => Some(env.as_str()),
            Err(_) => None,
        };
        for layer in ["default"].into_iter().chain(env_layer) {
            if let Err(e) = read_layer(config_dir, layer, &mut raw) {
                problems.push(e);
            }
        }
        for key in KEYS {
            if let Some(value) = lookup(key) {
                raw.insert((*key).to_string(), value);
            }
        }
        raw.insert("APP_ENV".into(), app_env_raw);

        let mut p = Parser {
            raw: &raw,
            problems,
        };
        let ai_base_url = p.optional("AI_BASE_URL", parse_http_url);
        let ai_api_key = p.optional("AI_API_KEY", |s| Ok(SecretString::from(s.to_string())));
        let config = Config {
            app_env: p.required("APP_ENV", |s| s.parse()),
            http_addr: p.required("HTTP_ADDR", parse_addr),
            http_max_connections: p
                .required("HTTP_MAX_CONNECTIONS", |s| parse_range(s, 1, 1_000_000)),
            metrics_addr: p.optional("METRICS_ADDR", parse_addr),
            database_url: p.required("DATABASE_URL", parse_postgres_url),
            database_migration_url: match p.optional("DATABASE_MIGRATION_URL", parse_postgres_url) {
                Some(url) => url,
                None => p.required("DATABASE_URL", parse_postgres_url_quiet),
            },
            database_max_connections: p
                .required("DATABASE_MAX_CONNECTIONS", |s| parse_range(s, 1, 1000)),
            redis_url: p.required("REDIS_URL", parse_redis_url),
            redis_key_prefix: p.required("REDIS_KEY_PREFIX", parse_key_prefix),
            jwt_secret: p.optional("JWT_SECRET", |s| Ok(SecretString::from(s.to_string()))),
            jwt_jwks_url: p.optional("JWT_JWKS_URL", parse_http_url),
            jwt_audience: p.optional("JWT_AUDIENCE", |s| Ok(s.to_string())),
            jwt_issuer: p.optional("JWT_ISSUER", |s| Ok(s.to_string())),
            cors_allowed_origins: p
                .optional("CORS_ALLOWED_ORIGINS", parse_origins)
                .unwrap_or_default(),
            encryption_keys: p
                .optional("ENCRYPTION_KEYS", parse_encryption_keys)
                .unwrap_or_default(),
            kommo_base_url: p.required("KOMMO_BASE_URL", parse_kommo_base_url),
            kommo_authorize_url: p.required("KOMMO_AUTHORIZE_URL", parse_http_url),
            kommo_chats_base_url: p.required("KOMMO_CHATS_BASE_URL", parse_base_url),
            oauth_redirect_url: p.optional("OAUTH_REDIRECT_URL", parse_http_url),
            frontend_url: p.optional("FRONTEND_URL", parse_http_url),
            public_base_url: p.optional("PUBLIC_BASE_URL", parse_http_url),
            trusted_proxies: p
                .optional("TRUSTED_PROXIES", parse_cidrs)
                .unwrap_or_default(),
            webhook_allowed_cidrs: p
                .optional("WEBHOOK_ALLOWED_CIDRS", parse_cidrs)
                .unwrap_or_default(),
            rate_limit_anon_per_min: p
                .required("RATE_LIMIT_ANON_PER_MIN", |s| parse_range(s, 1, 1_000_000)),
            rate_limit_user_per_min: p
                .required("RATE_LIMIT_USER_PER_MIN", |s| parse_range(s, 1, 1_000_000)),
            rate_limit_webhook_per_min: p.required("RATE_LIMIT_WEBHOOK_PER_MIN", |s| {
                parse_range(s, 1, 1_000_000)
            }),
            request_timeout: p.required("REQUEST_TIMEOUT_SECS", |s| parse_secs(s, 1, 3600)),
            body_read_timeout: p.required("BODY_READ_TIMEOUT_SECS", |s| parse_secs(s, 1, 3600)),
            body_limit_bytes: p.required("BODY_LIMIT_BYTES", |s| parse_range(s, 1024, 1 << 30)),
            webhook_body_limit_bytes: p.required("WEBHOOK_BODY_LIMIT_BYTES", |s| {
                parse_range(s, 1024, 1 << 30)
            }),
            asset_max_bytes: p.required("ASSET_MAX_BYTES", |s| parse_range(s, 1024, 1 << 30)),
            asset_store_url: p.optional("ASSET_STORE_URL", parse_asset_store_url),
            ai: ai_base_url.map(|base_url| AiConfig {
                base_url,
                api_key: ai_api_key,
            }),
            ai_timeout: p.required("AI_TIMEOUT_SECS", |s| parse_secs(s, 1, 3600)),
            ai_requests_per_min: p
                .required("AI_REQUESTS_PER_MIN", |s| parse_range(s, 1, 1_000_000)),
            ai_daily_token_quota: p
                .required("AI_DAILY_TOKEN_QUOTA", |s| parse_range(s, 0, u64::MAX)),
            ai_chat_model: p.required("AI_CHAT_MODEL", parse_model_name),
            ai_embedding_model: p.required("AI_EMBEDDING_MODEL", parse_model_name),
            ai_embedding_dimensions: p
                .required("AI_EMBEDDING_DIMENSIONS", |s| parse_range(s, 2, 16_000)),
            shutdown_grace: p.required("SHUTDOWN_GRACE_SECS", |s| parse_secs(s, 0, 3600)),
            shutdown_drain_delay: p
                .required("SHUTDOWN_DRAIN_DELAY_SECS", |s| parse_secs(s, 0, 3600)),
            job_concurrency: p.required("JOB_CONCURRENCY", |s| parse_range(s, 0, 256)),
            job_heartbeat: p.required("JOB_HEARTBEAT_SECS", |s| parse_secs(s, 1, 600)),
            job_retry_base: p.required("JOB_RETRY_BASE_MS", |s| {
                parse_range(s, 1u64, 3_600_000).map(Duration::from_millis)
            }),
            retention_webhook_days: p
                .required("RETENTION_WEBHOOK_DAYS", |s| parse_range(s, 0, 36_500)),
            retention_jobs_days: p.required("RETENTION_JOBS_DAYS", |s| parse_range(s, 0, 36_500)),
            // At least the 5 minutes the API promises to resumed streams.
            events_retention: p.required("EVENTS_RETENTION_SECS", |s| parse_secs(s, 300, 86_400)),
            events_heartbeat: p.required("EVENTS_HEARTBEAT_SECS", |s| parse_secs(s, 1, 300)),
            events_max_streams_per_user: p
                .required("EVENTS_MAX_STREAMS_PER_USER", |s| parse_range(s, 1, 1000)),
            sentry_dsn: p.optional("SENTRY_DSN", |s| {
                parse_http_url(s).map(|_| SecretString::from(s.to_string()))
            }),
            sentry_environment: p.optional("SENTRY_ENVIRONMENT", |s| Ok(s.to_string())),
            sentry_traces_sample_rate: p
                .optional("SENTRY_TRACES_SAMPLE_RATE", parse_fraction)
                .unwrap_or(0.0),
            otel_exporter_otlp_endpoint: p.optional("OTEL_EXPORTER_OTLP_ENDPOINT", |s| {
                parse_http_url(s).map(|_| s.to_string())
            }),
            log_format: p.required("LOG_FORMAT", |s| match s {
                "json" => Ok(LogFormat::Json),
                "pretty" => Ok(LogFormat::Pretty),
                _ => Err("must be json or pretty".into()),
            }),
            allow_privileged_db_role: p
                .optional("ALLOW_PRIVILEGED_DB_ROLE", parse_bool)
                .unwrap_or(false),
        };
        let mut problems = p.problems;
        config.check_rules(&mut problems);
        problems.dedup();
        (config, problems)
    }

    /// Rules across keys, and the settings production refuses.
    fn check_rules(&self, problems: &mut Vec<String>) {
        if self.jwt_secret.is_none() && self.jwt_jwks_url.is_none() {
            problems.push(
                "JWT_SECRET: required (or JWT_JWKS_URL) so that access tokens can be verified"
                    .into(),
            );
        }
        if self.app_env != AppEnv::Production {
            return;
        }
        if self.cors_allowed_origins.iter().any(|o| o == "*") {
            problems.push("CORS_ALLOWED_ORIGINS: `*` is refused in production".into());
        }
        if let Some(secret) = &self.jwt_secret
            && secret.expose_secret().len() < 32
        {
            problems.push("JWT_SECRET: must be at least 32 bytes in production".into());
        }
        if self.encryption_keys.is_empty() {
            problems.push(
                "ENCRYPTION_KEYS: required in production (kid:base64 of 32 random bytes)".into(),
            );
        }
        if self.allow_privileged_db_role {
            problems.push("ALLOW_PRIVILEGED_DB_ROLE: refused in production".into());
        }
        for (key, value) in [
            ("PUBLIC_BASE_URL", &self.public_base_url),
            ("FRONTEND_URL", &self.frontend_url),
            ("OAUTH_REDIRECT_URL", &self.oauth_redirect_url),
        ] {
            match value {
                None => problems.push(format!("{key}: required in production")),
                Some(url) if url.scheme() != "https" => {
                    problems.push(format!("{key}: must be an https URL in production"))
                }
                Some(_) => {}
            }
        }
    }

    pub fn is_production(&self) -> bool {
        self.app_env == AppEnv::Production
    }
}

fn read_layer(
    dir: Option<&Path>,
    name: &str,
    raw: &mut BTreeMap<String, String>,
) -> Result<(), String> {
    let file = dir.map(|d| d.join(format!("{name}.toml")));
    let text = match file.as_ref().map(std::fs::read_to_string) {
        Some(Ok(text)) => text,
        Some(Err(e)) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(format!("config/{name}.toml: cannot be read: {e}"));
        }
        _ => EMBEDDED_LAYERS
            .iter()
            .find(|(layer, _)| *layer == name)
            .map(|(_, text)| (*text).to_string())
            .unwrap_or_default(),
    };
    let table: toml::Table =
        toml::from_str(&text).map_err(|e| format!("config/{name}.toml: {e}"))?;
    for (key, value) in table {
        let upper = key.to_ascii_uppercase();
        if !KEYS.contains(&upper.as_str()) {
            return Err(format!("config/{name}.toml: unknown key `{key}`"));
        }
        let value = match value {
            toml::Value::String(s) => s,
            other => other.to_string(),
        };
        raw.insert(upper, value);
    }
    Ok(())
}

struct Parser<'a> {
    raw: &'a BTreeMap<String, String>,
    problems: Vec<String>,
}

impl Parser<'_> {
    /// A key that must be present and valid; a placeholder stands in for a bad value so
    /// parsing can go on and report every other key too.
    fn required<T: Placeholder>(
        &mut self,
        key: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> T {
        match self
            .raw
            .get(key)
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
        {
            None => {
                self.problems.push(format!("{key}: required"));
                T::placeholder()
            }
            Some(value) => parse(value).unwrap_or_else(|e| {
                self.problems.push(format!("{key}: {e}"));
                T::placeholder()
            }),
        }
    }

    /// A key that may be absent or empty.
    fn optional<T>(
        &mut self,
        key: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let value = self
            .raw
            .get(key)
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())?;
        match parse(value) {
            Ok(v) => Some(v),
            Err(e) => {
                self.problems.push(format!("{key}: {e}"));
                None
            }
        }
    }
}

trait Placeholder {
    fn placeholder() -> Self;
}

macro_rules! placeholder_default {
    ($($t:ty),*) => { $(impl Placeholder for $t { fn placeholder() -> Self { Default::default() } })* };
}
placeholder_default!(u32, u64, usize, String, Duration);

impl Placeholder for AppEnv {
    fn placeholder() -> Self {
        AppEnv::Development
    }
}
impl Placeholder for LogFormat {
    fn placeholder() -> Self {
        LogFormat::Json
    }
}
impl Placeholder for SocketAddr {
    fn placeholder() -> Self {
        SocketAddr::from(([127, 0, 0, 1], 0))
    }
}
impl Placeholder for SecretString {
    fn placeholder() -> Self {
        SecretString::from(String::new())
    }
}
impl Placeholder for Url {
    fn placeholder() -> Self {
        Url::parse("http://invalid.invalid/").unwrap_or_else(|_| unreachable!())
    }
}

fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse()
        .map_err(|_| format!("`{s}` is not an address like 127.0.0.1:8080"))
}

fn parse_range<T>(s: &str, min: T, max: T) -> Result<T, String>
where
    T: FromStr + PartialOrd + fmt::Display + Copy,
{
    let value: T = s
        .parse()
        .map_err(|_| format!("`{s}` is not a whole number"))?;
    if value < min || value > max {
        return Err(format!("{value} is outside {min}..={max}"));
    }
    Ok(value)
}

/// A model name as providers spell them (`gpt-4o-mini`, `openai/gpt-4o`, `llama3:8b`).
pub fn parse_model_name(s: &str) -> Result<String, String> {
    let ok = (1..=200).contains(&s.len())
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'/' | b'@' | b'-')
        });
    if ok {
        Ok(s.to_string())
    } else {
        Err("must be 1 to 200 of A-Z a-z 0-9 . _ : / @ -".into())
    }
}

fn parse_secs(s: &str, min: u64, max: u64) -> Result<Duration, String> {
    parse_range(s, min, max).map(Duration::from_secs)
}

fn parse_bool(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(format!("`{s}` is not true or false")),
    }
}

fn parse_fraction(s: &str) -> Result<f32, String> {
    let v: f32 = s.parse().map_err(|_| format!("`{s}` is not a number"))?;
    if !(0.0..=1.0).contains(&v) {
        return Err(format!("{v} is outside 0..=1"));
    }
    Ok(v)
}

fn parse_http_url(s: &str) -> Result<Url, String> {
    let url = Url::parse(s).map_err(|e| format!("not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err("must be an http(s) URL with a host".into());
    }
    Ok(url)
}

/// An object store this build supports: a local directory or an S3 bucket (and prefix).
/// Credentials never belong in it: S3 takes them from the `AWS_*` variables, and the
/// value is echoed in no message in case someone tried.
fn parse_asset_store_url(s: &str) -> Result<Url, String> {
    const FORMS: &str = "must be file:///absolute/directory or s3://bucket/prefix (empty keeps files in PostgreSQL)";
    let url = Url::parse(s).map_err(|_| format!("not a URL: {FORMS}"))?;
    let supported = match url.scheme() {
        "file" => url.host_str().is_none_or(str::is_empty) && url.path() != "/",
        "s3" | "s3a" => url.host_str().is_some_and(|bucket| !bucket.is_empty()),
        other => return Err(format!("scheme `{other}` is not supported: {FORMS}")),
    };
    if !supported {
        return Err(FORMS.into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials: S3 reads them from AWS_* variables".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("must have no query or fragment: {FORMS}"));
    }
    let (_, prefix) = object_store::ObjectStoreScheme::parse(&url)
        .map_err(|e| format!("the path is not usable as an object prefix ({e})"))?;
    // Keys add `/{org_id}/{asset_id}` (74 characters) to the prefix and must fit the
    // 1000 characters of `knowledge_assets.storage`.
    if prefix.as_ref().len() > 900 {
        return Err("the path must be at most 900 characters".into());
    }
    Ok(url)
}

fn parse_postgres_url(s: &str) -> Result<SecretString, String> {
    match Url::parse(s) {
        Ok(url) if matches!(url.scheme(), "postgres" | "postgresql") => {
            Ok(SecretString::from(s.to_string()))
        }
        // The value may hold a password, so it is never echoed back.
        _ => Err("must be a postgres:// URL".into()),
    }
}

/// Used for the `DATABASE_MIGRATION_URL` fallback: `DATABASE_URL` already reported its
/// own problem.
fn parse_postgres_url_quiet(s: &str) -> Result<SecretString, String> {
    Ok(SecretString::from(s.to_string()))
}

fn parse_redis_url(s: &str) -> Result<SecretString, String> {
    match Url::parse(s) {
        Ok(url) if matches!(url.scheme(), "redis" | "rediss") => {
            Ok(SecretString::from(s.to_string()))
        }
        _ => Err("must be a redis:// or rediss:// URL".into()),
    }
}

fn parse_key_prefix(s: &str) -> Result<String, String> {
    let ok = s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'-' | b'_' | b'.'));
    if ok {
        Ok(s.to_string())
    } else {
        Err("must be at most 64 of A-Z a-z 0-9 : - _ .".into())
    }
}

fn parse_origins(s: &str) -> Result<Vec<String>, String> {
    let mut origins = Vec::new();
    for origin in s.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        if origin == "*" {
            origins.push(origin.to_string());
            continue;
        }
        let url = Url::parse(origin).map_err(|_| format!("`{origin}` is not an origin"))?;
        let canonical = url.origin().ascii_serialization();
        if canonical != origin.trim_end_matches('/') || url.path() != "/" {
            return Err(format!(
                "`{origin}` is not an exact origin like https://app.example.com"
            ));
        }
        origins.push(canonical);
    }
    Ok(origins)
}

fn parse_cidrs(s: &str) -> Result<Vec<IpNet>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(|c| {
            c.parse::<IpNet>()
                .or_else(|_| c.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| format!("`{c}` is not a CIDR like 10.0.0.0/8"))
        })
        .collect()
}

fn parse_encryption_keys(s: &str) -> Result<Vec<EncryptionKey>, String> {
    let mut keys: Vec<EncryptionKey> = Vec::new();
    for (i, entry) in s
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .enumerate()
    {
        let (id, b64) = entry
            .split_once(':')
            .ok_or_else(|| format!("entry {} is not kid:base64", i + 1))?;
        if id.is_empty()
            || id.len() > 32
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(format!(
                "entry {}: key id must be 1-32 of [A-Za-z0-9_-]",
                i + 1
            ));
        }
        if keys.iter().any(|k| k.id == id) {
            return Err(format!("key id `{id}` appears twice"));
        }
        // Neither the value nor its decoding error is echoed: both would leak key material.
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| format!("key `{id}` is not valid base64"))?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| format!("key `{id}` must decode to exactly 32 bytes"))?;
        keys.push(EncryptionKey {
            id: id.to_string(),
            key: SecretBox::new(Box::new(key)),
        });
    }
    Ok(keys)
}

/// An http(s) URL that request paths are appended to, so a query or fragment would end
/// up in the middle of every URL built from it.
fn parse_base_url(s: &str) -> Result<Url, String> {
    let url = parse_http_url(s)?;
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must have no query or fragment".into());
    }
    Ok(url)
}

fn parse_kommo_base_url(s: &str) -> Result<String, String> {
    if !s.contains("{base_domain}") {
        return Err("must contain the placeholder {base_domain}".into());
    }
    parse_http_url(&s.replace("{base_domain}", "acme.kommo.com"))?;
    Ok(s.trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::load(None, |k| map.get(k).cloned())
    }

    const MINIMAL: &[(&str, &str)] = &[
        ("DATABASE_URL", "postgres://u@localhost/db"),
        ("REDIS_URL", "redis://127.0.0.1:6379"),
        ("JWT_SECRET", "dev-secret"),
    ];

    #[test]
    fn defaults_fill_everything_but_secrets() {
        let config = load(MINIMAL).expect("valid");
        assert_eq!(config.app_env, AppEnv::Development);
        assert_eq!(config.http_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(config.database_max_connections, 16);
        assert_eq!(config.request_timeout, Duration::from_secs(30));
        assert_eq!(config.log_format, LogFormat::Pretty);
        assert_eq!(config.jwt_audience.as_deref(), Some("authenticated"));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let err = load(&[
            ("HTTP_ADDR", "nonsense"),
            ("DATABASE_MAX_CONNECTIONS", "0"),
            ("LOG_FORMAT", "xml"),
        ])
        .expect_err("invalid");
        let text = err.to_string();
        for key in [
            "HTTP_ADDR",
            "DATABASE_URL",
            "REDIS_URL",
            "JWT_SECRET",
            "DATABASE_MAX_CONNECTIONS",
            "LOG_FORMAT",
        ] {
            assert!(text.contains(key), "{key} missing from {text}");
        }
    }

    #[test]
    fn production_refuses_unsafe_settings() {
        let mut vars = MINIMAL.to_vec();
        vars.extend([
            ("APP_ENV", "production"),
            ("CORS_ALLOWED_ORIGINS", "*"),
            ("ALLOW_PRIVILEGED_DB_ROLE", "true"),
        ]);
        let text = load(&vars).expect_err("unsafe").to_string();
        for key in [
            "CORS_ALLOWED_ORIGINS",
            "JWT_SECRET",
            "ENCRYPTION_KEYS",
            "ALLOW_PRIVILEGED_DB_ROLE",
            "PUBLIC_BASE_URL",
        ] {
            assert!(text.contains(key), "{key} missing from {text}");
        }
    }

    #[test]
    fn encryption_keys_are_parsed_and_never_printed() {
        let mut vars = MINIMAL.to_vec();
        let key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        let value = format!("k2:{key},k1:{key}");
        vars.push(("ENCRYPTION_KEYS", &value));
        let config = load(&vars).expect("valid");
        assert_eq!(config.encryption_keys.len(), 2);
        assert_eq!(config.encryption_keys[0].id, "k2");
        assert!(!format!("{config:?}").contains(&key));

        let mut bad = MINIMAL.to_vec();
        bad.push(("ENCRYPTION_KEYS", "k1:c2hvcnQ="));
        assert!(
            load(&bad)
                .expect_err("short")
                .to_string()
                .contains("32 bytes")
        );
    }

    #[test]
    fn kommo_chats_base_url_is_a_bare_http_url() {
        let with = |value: &str| {
            let mut vars = MINIMAL.to_vec();
            vars.push(("KOMMO_CHATS_BASE_URL", value));
            load(&vars)
        };
        let config = load(MINIMAL).expect("valid");
        assert_eq!(
            config.kommo_chats_base_url.as_str(),
            "https://amojo.kommo.com/"
        );
        let config = with("http://127.0.0.1:9/amojo").expect("a path prefix is fine");
        assert_eq!(
            config.kommo_chats_base_url.as_str(),
            "http://127.0.0.1:9/amojo"
        );
        for bad in [
            "",
            "amojo.kommo.com",
            "ftp://amojo.kommo.com",
            "https://amojo.kommo.com/?x=1",
            "https://amojo.kommo.com/#x",
        ] {
            let text = with(bad).expect_err(bad).to_string();
            assert!(text.contains("KOMMO_CHATS_BASE_URL"), "{bad}: {text}");
        }
    }

    #[test]
    fn asset_store_url_is_a_supported_object_store_or_empty() {
        let with = |value: &str| {
            let mut vars = MINIMAL.to_vec();
            vars.push(("ASSET_STORE_URL", value));
            load(&vars)
        };
        assert!(load(MINIMAL).expect("valid").asset_store_url.is_none());
        assert!(with("").expect("empty").asset_store_url.is_none());
        for good in [
            "file:///var/lib/agents-api/assets",
            "file:///var/lib/agents-api/assets/",
            "s3://bucket",
            "s3://bucket/agents-api/assets",
        ] {
            let config = with(good).unwrap_or_else(|e| panic!("{good}: {e}"));
            assert_eq!(
                config.asset_store_url.map(String::from).as_deref(),
                Some(good)
            );
        }
        for (bad, says) in [
            ("not a url", "not a URL"),
            ("gs://bucket/prefix", "scheme `gs` is not supported"),
            (
                "https://example.com/assets",
                "scheme `https` is not supported",
            ),
            ("file:///", "file:///absolute/directory"),
            ("file://host/dir", "file:///absolute/directory"),
            ("s3:///prefix", "s3://bucket/prefix"),
            (
                "s3://AKIA:hunter2@bucket/prefix",
                "must not carry credentials",
            ),
            ("s3://bucket/prefix?region=x", "no query"),
        ] {
            let text = with(bad).expect_err(bad).to_string();
            assert!(text.contains("ASSET_STORE_URL"), "{bad}: {text}");
            assert!(text.contains(says), "{bad}: {text}");
            assert!(!text.contains("hunter2"), "{bad}: {text}");
        }
    }

    #[test]
    fn origins_must_be_exact() {
        assert!(parse_origins("https://app.example.com, http://localhost:3000").is_ok());
        assert!(parse_origins("https://app.example.com/path").is_err());
        assert!(parse_origins("app.example.com").is_err());
    }
}
