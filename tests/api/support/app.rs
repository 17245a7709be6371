//! The test harness: every test gets the real application on a random port, its own
//! database (a copy of a migrated template) reached through an unprivileged runtime role,
//! and its own Redis key prefix.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use agents_api::config::Config;
use agents_api::state::AppState;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::{Connection, PgConnection};
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub const JWT_SECRET: &str = "test-secret-that-is-long-enough-for-hs256-0123456789";
pub const RUNTIME_ROLE: &str = "agents_api_test";

pub fn admin_url() -> String {
    std::env::var("TEST_DATABASE_ADMIN_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// The PostgreSQL with pgvector (`scripts/pgvector.sh`, which the test command starts)
/// for the tests of vector and hybrid search. The suite's main server may lack it.
pub fn pgvector_admin_url() -> String {
    std::env::var("TEST_PGVECTOR_ADMIN_URL").unwrap_or_else(|_| {
        panic!(
            "TEST_PGVECTOR_ADMIN_URL is not set: the vector-search tests need a PostgreSQL with \
             pgvector; run them through ./scripts/test.sh, or `scripts/pgvector.sh start` and \
             export TEST_PGVECTOR_ADMIN_URL=$(scripts/pgvector.sh url)"
        )
    })
}

/// `admin_url()` with another database.
pub fn admin_url_for(db: &str) -> String {
    url_on(&admin_url(), db, false)
}

pub fn runtime_url_for(db: &str) -> String {
    url_on(&admin_url(), db, true)
}

/// The URL of database `db` on the server of `admin`, as the admin or the runtime role.
fn url_on(admin: &str, db: &str, runtime: bool) -> String {
    let mut url = url::Url::parse(admin).expect("the admin URL is a URL");
    url.set_path(db);
    if runtime {
        let _ = url.set_username(RUNTIME_ROLE);
        let _ = url.set_password(None);
    }
    url.to_string()
}

static TEMPLATE: OnceCell<String> = OnceCell::const_new();
static PGVECTOR_TEMPLATE: OnceCell<String> = OnceCell::const_new();

async fn template() -> String {
    template_on(&admin_url()).await
}

/// The migrated template database of the server of `admin`, built once per migration set
/// (its name carries a hash of the migrations) and shared by every test and every run.
/// Built by `agents-api migrate`'s own function, so the embedding index comes too.
async fn template_on(admin_url: &str) -> String {
    let cell = if admin_url == self::admin_url() {
        &TEMPLATE
    } else {
        &PGVECTOR_TEMPLATE
    };
    cell.get_or_init(|| async {
        let mut hasher = Sha256::new();
        for m in agents_api::db::MIGRATOR.iter() {
            hasher.update(m.version.to_le_bytes());
            hasher.update(&*m.checksum);
        }
        let name = format!("agents_api_tpl_{}", &hex::encode(hasher.finalize())[..12]);
        let mut admin = PgConnection::connect(admin_url)
            .await
            .unwrap_or_else(|e| panic!("connect as the PostgreSQL admin ({admin_url}): {e}"));
        // Several test processes may start at once.
        sqlx::query("SELECT pg_advisory_lock(7243001)")
            .execute(&mut admin)
            .await
            .expect("lock");
        drop_stale_databases(&mut admin).await;
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                .bind(&name)
                .fetch_one(&mut admin)
                .await
                .expect("query pg_database");
        if !exists {
            let building = format!("{name}_building");
            exec(
                &mut admin,
                &format!("DROP DATABASE IF EXISTS {building} WITH (FORCE)"),
            )
            .await;
            exec(&mut admin, &format!("CREATE DATABASE {building}")).await;
            let config = config_from(&base_env_on(admin_url, &building));
            agents_api::db::migrate(&config)
                .await
                .expect("migrate the template");
            exec(
                &mut admin,
                &format!("ALTER DATABASE {building} RENAME TO {name}"),
            )
            .await;
        }
        agents_api::db::ensure_runtime_role(&mut admin, RUNTIME_ROLE, None)
            .await
            .expect("the runtime role");
        sqlx::query("SELECT pg_advisory_unlock(7243001)")
            .execute(&mut admin)
            .await
            .expect("unlock");
        name
    })
    .await
    .clone()
}

/// Test databases are named with their creation time; those of runs over an hour ago
/// are dropped so repeated local runs do not pile up.
async fn drop_stale_databases(admin: &mut PgConnection) {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT datname::text FROM pg_database WHERE datname LIKE 'agents_api_t\\_%'",
    )
    .fetch_all(&mut *admin)
    .await
    .unwrap_or_default();
    let cutoff = now_secs().saturating_sub(3600);
    for name in names {
        let created: u64 = name
            .trim_start_matches("agents_api_t_")
            .split('_')
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if created < cutoff {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&mut *admin)
            .await;
        }
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub async fn exec(conn: &mut PgConnection, sql: &str) {
    sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
        .execute(conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// Makes sure the runtime login role exists (it is created with the template), for
/// tests that migrate an empty database of their own and then serve from it.
pub async fn ensure_runtime_role() {
    template().await;
}

/// A fresh, migrated database of its own.
pub async fn fresh_database() -> String {
    fresh_database_on(&admin_url()).await
}

/// A fresh, migrated database of its own on the server of `admin_url`.
pub async fn fresh_database_on(admin_url: &str) -> String {
    let template = template_on(admin_url).await;
    let name = format!("agents_api_t_{}_{}", now_secs(), Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(admin_url).await.expect("admin");
    exec(
        &mut admin,
        &format!("CREATE DATABASE {name} TEMPLATE {template}"),
    )
    .await;
    name
}

/// The environment a test app starts with; tests override single keys.
pub fn base_env(db: &str) -> HashMap<String, String> {
    base_env_on(&admin_url(), db)
}

/// `base_env` for database `db` on the server of `admin_url`.
pub fn base_env_on(admin_url: &str, db: &str) -> HashMap<String, String> {
    [
        ("APP_ENV", "test".to_string()),
        ("HTTP_ADDR", "127.0.0.1:0".into()),
        ("METRICS_ADDR", String::new()),
        ("DATABASE_URL", url_on(admin_url, db, true)),
        ("DATABASE_MIGRATION_URL", url_on(admin_url, db, false)),
        ("DATABASE_MAX_CONNECTIONS", "5".into()),
        ("REDIS_URL", redis_url()),
        ("JWT_SECRET", JWT_SECRET.into()),
        ("LOG_FORMAT", "pretty".into()),
        // Tests poll; the rate-limit tests set their own, small limits.
        ("RATE_LIMIT_USER_PER_MIN", "1000000".into()),
        ("RATE_LIMIT_ANON_PER_MIN", "1000000".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

pub fn config_from(env: &HashMap<String, String>) -> Config {
    Config::load(None, |k| env.get(k).cloned()).unwrap_or_else(|e| panic!("{e}"))
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub db_name: String,
    /// The admin URL of the server the database is on.
    pub db_server: String,
    pub env: HashMap<String, String>,
    pub state: AppState,
    pub client: reqwest::Client,
    stop: CancellationToken,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

pub struct Response {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Response {
    /// Asserts the status, printing the body when it is not the expected one.
    #[track_caller]
    pub fn expect(self, status: u16) -> Response {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            self.text
        );
        self
    }

    /// Asserts a problem+json error with the given status and code.
    #[track_caller]
    pub fn expect_problem(self, status: u16, code: &str) -> Response {
        let r = self.expect(status);
        assert_eq!(
            r.headers.get("content-type").and_then(|v| v.to_str().ok()),
            Some("application/problem+json"),
            "{}",
            r.text
        );
        assert_eq!(r.body["code"], code, "{}", r.text);
        assert_eq!(r.body["status"], status, "{}", r.text);
        assert!(r.body["request_id"].is_string(), "{}", r.text);
        r
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The fields named in a validation problem.
    pub fn error_fields(&self) -> Vec<String> {
        self.body["errors"]
            .as_array()
            .map(|errors| {
                errors
                    .iter()
                    .filter_map(|e| e["field"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }
}

type EditEnv<'a> = Box<dyn FnOnce(&mut HashMap<String, String>) + 'a>;
type EditState<'a> = Box<dyn FnOnce(&mut AppState) + 'a>;

/// How a test app is made: `TestApp::builder().with_kommo(&fake).with_jobs().env(k, v)
/// .spawn()`. Each app gets a fresh database and a Redis key prefix of its own.
#[must_use]
pub struct TestAppBuilder<'a> {
    env: Vec<(String, String)>,
    configure: Vec<EditEnv<'a>>,
    adjust: Option<EditState<'a>>,
    jobs: bool,
    pgvector: bool,
}

impl<'a> TestAppBuilder<'a> {
    /// Job workers and the scheduler run too, with short job timings.
    pub fn with_jobs(self) -> TestAppBuilder<'a> {
        self.jobs(true)
    }

    pub fn jobs(mut self, on: bool) -> TestAppBuilder<'a> {
        self.jobs = on;
        self
    }

    /// Points the app at `fake`, with the integration's client registered there, keys
    /// to store secrets and the URLs the OAuth flow needs.
    pub fn with_kommo(self, fake: &crate::support::fake_kommo::FakeKommo) -> TestAppBuilder<'a> {
        use crate::support::kommo::{
            CLIENT_ID, CLIENT_SECRET, FRONTEND_URL, REDIRECT_URI, TEST_KEY,
        };
        fake.register_client(CLIENT_ID, CLIENT_SECRET, REDIRECT_URI);
        self.env("KOMMO_BASE_URL", &fake.base_url_template)
            .env("ENCRYPTION_KEYS", &format!("test:{TEST_KEY}"))
            .env("FRONTEND_URL", FRONTEND_URL)
            .env("OAUTH_REDIRECT_URL", REDIRECT_URI)
            .env("PUBLIC_BASE_URL", crate::support::kommo::PUBLIC_BASE_URL)
            .env("KOMMO_AUTHORIZE_URL", "https://www.kommo.com/oauth")
            .env("KOMMO_CHATS_BASE_URL", &fake.chats_base_url())
    }

    /// The database is on the PostgreSQL with pgvector (`TEST_PGVECTOR_ADMIN_URL`).
    pub fn with_pgvector(mut self) -> TestAppBuilder<'a> {
        self.pgvector = true;
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> TestAppBuilder<'a> {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    pub fn envs(mut self, pairs: &[(&str, &str)]) -> TestAppBuilder<'a> {
        for (key, value) in pairs {
            self = self.env(key, value);
        }
        self
    }

    /// Edits the environment after every other setting (to remove keys, or compute them).
    pub fn configure(
        mut self,
        f: impl FnOnce(&mut HashMap<String, String>) + 'a,
    ) -> TestAppBuilder<'a> {
        self.configure.push(Box::new(f));
        self
    }

    /// Replaces parts of the built state before the app starts.
    pub fn adjust_state(mut self, f: impl FnOnce(&mut AppState) + 'a) -> TestAppBuilder<'a> {
        self.adjust = Some(Box::new(f));
        self
    }

    pub async fn spawn(self) -> TestApp {
        let server = if self.pgvector {
            pgvector_admin_url()
        } else {
            admin_url()
        };
        let db_name = fresh_database_on(&server).await;
        let mut env = base_env_on(&server, &db_name);
        env.insert(
            "REDIS_KEY_PREFIX".into(),
            format!("test:{}:", Uuid::new_v4().simple()),
        );
        if self.jobs {
            env.insert("JOB_HEARTBEAT_SECS".into(), "1".into());
            env.insert("JOB_RETRY_BASE_MS".into(), "100".into());
        }
        env.extend(self.env);
        for f in self.configure {
            f(&mut env);
        }
        let adjust = self.adjust.unwrap_or_else(|| Box::new(|_| {}));
        TestApp::start(db_name, server, env, adjust, self.jobs).await
    }
}

/// What a poll of `eventually` saw: the value (`Some`/`Ok`) or not yet (`None`, or `Err`
/// with what was seen instead).
pub trait Probe<T> {
    fn seen(self) -> Result<T, String>;
}

impl<T> Probe<T> for Option<T> {
    fn seen(self) -> Result<T, String> {
        self.ok_or_else(|| "nothing yet".into())
    }
}

impl<T> Probe<T> for Result<T, String> {
    fn seen(self) -> Result<T, String> {
        self
    }
}

/// Polls `probe` every 20 ms until it yields a value, for at most `patience`; the panic
/// names `what` and the last thing `probe` saw.
pub async fn eventually<T, P, F, Fut>(what: &str, patience: Duration, mut probe: F) -> T
where
    P: Probe<T>,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = P>,
{
    let started = std::time::Instant::now();
    loop {
        match probe().await.seen() {
            Ok(value) => return value,
            Err(last) if started.elapsed() >= patience => {
                panic!(
                    "{what}: not so after {:?}; last seen: {last}",
                    started.elapsed()
                )
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

impl TestApp {
    pub fn builder<'a>() -> TestAppBuilder<'a> {
        TestAppBuilder {
            env: Vec::new(),
            configure: Vec::new(),
            adjust: None,
            jobs: false,
            pgvector: false,
        }
    }

    /// Another replica: same database, same Redis prefix, its own process state.
    pub async fn replica(&self, with_jobs: bool) -> TestApp {
        TestApp::start(
            self.db_name.clone(),
            self.db_server.clone(),
            self.env.clone(),
            Box::new(|_| {}),
            with_jobs,
        )
        .await
    }

    async fn start(
        db_name: String,
        db_server: String,
        env: HashMap<String, String>,
        adjust: EditState<'_>,
        with_jobs: bool,
    ) -> TestApp {
        show_logs_when_asked();
        // The composition `serve` runs; an app without jobs is an API-only replica.
        let mut app_env = env.clone();
        if !with_jobs {
            app_env.insert("JOB_CONCURRENCY".into(), "0".into());
        }
        let config = config_from(&app_env);
        let listeners = agents_api::app::Listeners {
            http: tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind"),
            metrics: None,
        };
        let mut app = agents_api::app::App::build(config, listeners)
            .await
            .expect("the app");
        adjust(app.state_mut());
        let addr = app.http_addr().expect("addr");
        let state = app.state().clone();
        let stop = CancellationToken::new();
        tokio::spawn(app.run(stop.clone().cancelled_owned()));
        TestApp {
            addr,
            db_name,
            db_server,
            env,
            state,
            client: reqwest::Client::new(),
            stop,
        }
    }

    /// Starts the app's graceful shutdown (as SIGTERM does), without waiting for it.
    pub fn shutdown(&self) {
        self.stop.cancel();
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// A valid access token for `user`.
    pub fn token(&self, user: Uuid) -> String {
        sign_hs256(&claims_for(user), JWT_SECRET)
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Response {
        let mut request = self.client.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        into_response(request.send().await.expect("request")).await
    }

    pub async fn get(&self, path: &str, user: Uuid) -> Response {
        self.send(Method::GET, path, Some(&self.token(user)), None)
            .await
    }

    pub async fn post(&self, path: &str, user: Uuid, body: Value) -> Response {
        self.send(Method::POST, path, Some(&self.token(user)), Some(body))
            .await
    }

    pub async fn put(&self, path: &str, user: Uuid, body: Value) -> Response {
        self.send(Method::PUT, path, Some(&self.token(user)), Some(body))
            .await
    }

    pub async fn patch(&self, path: &str, user: Uuid, body: Value) -> Response {
        self.send(Method::PATCH, path, Some(&self.token(user)), Some(body))
            .await
    }

    pub async fn delete(&self, path: &str, user: Uuid) -> Response {
        self.send(Method::DELETE, path, Some(&self.token(user)), None)
            .await
    }

    /// A new org owned by `owner`; returns its id.
    pub async fn create_org(&self, owner: Uuid) -> Uuid {
        let r = self
            .post("/v1/orgs", owner, json!({"name": "Test Org"}))
            .await
            .expect(201);
        r.body["id"].as_str().expect("id").parse().expect("uuid")
    }

    pub async fn add_member(&self, org: Uuid, owner: Uuid, user: Uuid, role: &str) {
        self.put(
            &format!("/v1/orgs/{org}/members/{user}"),
            owner,
            json!({"role": role}),
        )
        .await
        .expect(201);
    }

    /// An org with an owner, an admin and a member.
    pub async fn org_with_roles(&self) -> OrgUsers {
        let owner = Uuid::now_v7();
        let admin = Uuid::now_v7();
        let member = Uuid::now_v7();
        let org = self.create_org(owner).await;
        self.add_member(org, owner, admin, "admin").await;
        self.add_member(org, owner, member, "member").await;
        OrgUsers {
            org,
            owner,
            admin,
            member,
        }
    }

    pub async fn create_agent(&self, org: Uuid, user: Uuid, name: &str) -> Value {
        self.post(
            &format!("/v1/orgs/{org}/agents"),
            user,
            json!({"name": name, "model": "gpt-4o-mini", "instructions": "Sell politely."}),
        )
        .await
        .expect(201)
        .body
    }

    /// A superuser connection to this test's database (bypasses RLS: for set-up and
    /// checks only).
    pub async fn admin_db(&self) -> PgConnection {
        PgConnection::connect(&url_on(&self.db_server, &self.db_name, false))
            .await
            .expect("admin connection")
    }
}

pub struct OrgUsers {
    pub org: Uuid,
    pub owner: Uuid,
    pub admin: Uuid,
    pub member: Uuid,
}

pub async fn into_response(response: reqwest::Response) -> Response {
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Response {
        status,
        headers,
        body,
        text,
    }
}

pub fn claims_for(user: Uuid) -> Value {
    let now = now_secs() as i64;
    json!({
        "sub": user.to_string(),
        "aud": "authenticated",
        "role": "authenticated",
        "email": format!("{}@example.com", user.simple()),
        "iat": now,
        "exp": now + 3600,
    })
}

pub fn sign_hs256(claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign")
}

/// `TEST_LOG=1` prints the apps' logs (level from `RUST_LOG`, default `info`) with the
/// test output; without it the tests stay quiet.
fn show_logs_when_asked() {
    static LOGS: std::sync::Once = std::sync::Once::new();
    if std::env::var_os("TEST_LOG").is_none() {
        return;
    }
    LOGS.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    });
}
