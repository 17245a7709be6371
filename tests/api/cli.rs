//! The command line, run as the real binary: `check-config`, `dev-token`, `openapi`,
//! `migrate` and `serve` (its refusal of a privileged database role, its start-up with
//! the runtime role and its graceful exit on SIGTERM), plus `.env.example` staying in
//! step with the configuration keys.
//!
//! Every process starts with an empty environment (only `PATH`, `APP_CONFIG_DIR` and what
//! the test sets) in a temporary working directory, so no `.env` file is read.

use std::collections::{HashMap, HashSet};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde_json::Value;
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use crate::support::app::{
    JWT_SECRET, admin_url, admin_url_for, base_env, exec, fresh_database, runtime_url_for,
};
use crate::support::process::{Process, free_port, run, serve_env};

/// The twelve tables of spec §4.
const TABLES: &[&str] = &[
    "organizations",
    "organization_members",
    "agents",
    "crm_credentials",
    "crm_connections",
    "crm_pipelines",
    "crm_pipeline_stages",
    "crm_contacts",
    "oauth_states",
    "webhook_events",
    "audit_logs",
    "jobs",
];

// ---------------------------------------------------------------------------------------
// Environments (running the binary: see `crate::support::process`)
// ---------------------------------------------------------------------------------------

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// An environment valid for every command; it names a database but nothing connects to
/// it unless a test says so.
fn valid_env() -> HashMap<String, String> {
    base_env("agents_api_cli_unused")
}

/// A valid production environment: long JWT secret, an encryption key, https URLs.
fn production_env() -> HashMap<String, String> {
    let mut env = valid_env();
    let key = base64::engine::general_purpose::STANDARD.encode([42u8; 32]);
    for (k, v) in [
        ("APP_ENV", "production".to_string()),
        ("ENCRYPTION_KEYS", format!("k1:{key}")),
        ("PUBLIC_BASE_URL", "https://api.example.com".into()),
        ("FRONTEND_URL", "https://app.example.com".into()),
        (
            "OAUTH_REDIRECT_URL",
            "https://api.example.com/v1/kommo/oauth/callback".into(),
        ),
    ] {
        env.insert(k.into(), v);
    }
    env
}

#[track_caller]
fn assert_mentions_all(text: &str, keys: &[&str]) {
    let missing: Vec<&str> = keys.iter().copied().filter(|k| !text.contains(k)).collect();
    assert!(missing.is_empty(), "{missing:?} not named in:\n{text}");
}

// ---------------------------------------------------------------------------------------
// check-config
// ---------------------------------------------------------------------------------------

#[test]
fn check_config_accepts_a_valid_environment() {
    let r = run(&valid_env(), &["check-config"]);
    assert!(
        r.success(),
        "check-config refused a valid environment\n{}",
        r.output()
    );
    assert!(!r.output().contains(JWT_SECRET), "{}", r.output());

    let r = run(&production_env(), &["check-config"]);
    assert!(
        r.success(),
        "check-config refused a valid production environment\n{}",
        r.output()
    );
}

#[test]
fn check_config_names_every_bad_key_at_once() {
    let env: HashMap<String, String> = [
        ("HTTP_ADDR", "nonsense"),
        ("DATABASE_MAX_CONNECTIONS", "0"),
        ("LOG_FORMAT", "xml"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let r = run(&env, &["check-config"]);
    assert!(
        !r.success(),
        "check-config accepted a broken environment\n{}",
        r.output()
    );
    assert_mentions_all(
        &r.stderr,
        &[
            "HTTP_ADDR",
            "DATABASE_MAX_CONNECTIONS",
            "LOG_FORMAT",
            "DATABASE_URL",
            "REDIS_URL",
            "JWT_SECRET",
        ],
    );
}

#[test]
fn check_config_refuses_unsafe_production_settings() {
    let mut env = valid_env();
    env.insert("APP_ENV".into(), "production".into());
    env.insert("CORS_ALLOWED_ORIGINS".into(), "*".into());
    env.insert("JWT_SECRET".into(), "too-short".into());
    env.remove("ENCRYPTION_KEYS");
    let r = run(&env, &["check-config"]);
    assert!(
        !r.success(),
        "production accepted unsafe settings\n{}",
        r.output()
    );
    assert_mentions_all(
        &r.stderr,
        &["CORS_ALLOWED_ORIGINS", "JWT_SECRET", "ENCRYPTION_KEYS"],
    );
}

#[test]
fn check_config_never_prints_secret_values() {
    let db_password = "Db-Pa55word-never-printed";
    let redis_password = "Redis-Pa55word-never-printed";
    let jwt_secret = "short-jwt-never-printed";
    let key_material = base64::engine::general_purpose::STANDARD.encode(b"not-32-bytes-of-key");

    // Production refuses the short JWT secret and the short key; the database URL is of
    // the wrong scheme. Each is reported by name, never by value.
    let mut env = production_env();
    env.insert(
        "DATABASE_URL".into(),
        format!("mysql://app:{db_password}@127.0.0.1:3306/app"),
    );
    env.insert(
        "DATABASE_MIGRATION_URL".into(),
        format!("postgres://owner:{db_password}@127.0.0.1:5432/app"),
    );
    env.insert(
        "REDIS_URL".into(),
        format!("redis://:{redis_password}@127.0.0.1:6379"),
    );
    env.insert("JWT_SECRET".into(), jwt_secret.into());
    env.insert("ENCRYPTION_KEYS".into(), format!("k1:{key_material}"));
    let r = run(&env, &["check-config"]);
    assert!(!r.success(), "{}", r.output());
    assert_mentions_all(
        &r.stderr,
        &["DATABASE_URL", "JWT_SECRET", "ENCRYPTION_KEYS"],
    );
    for secret in [
        db_password,
        redis_password,
        jwt_secret,
        key_material.as_str(),
    ] {
        assert!(
            !r.output().contains(secret),
            "`{secret}` leaked:\n{}",
            r.output()
        );
    }

    // A valid configuration holding the same kinds of secrets prints none of them either.
    let mut env = valid_env();
    env.insert(
        "DATABASE_URL".into(),
        format!("postgres://app:{db_password}@127.0.0.1:5432/app"),
    );
    env.insert(
        "REDIS_URL".into(),
        format!("redis://:{redis_password}@127.0.0.1:6379"),
    );
    let r = run(&env, &["check-config"]);
    assert!(r.success(), "{}", r.output());
    for secret in [db_password, redis_password, JWT_SECRET] {
        assert!(
            !r.output().contains(secret),
            "`{secret}` leaked:\n{}",
            r.output()
        );
    }
}

// ---------------------------------------------------------------------------------------
// dev-token
// ---------------------------------------------------------------------------------------

#[test]
fn dev_token_prints_one_signed_token() {
    let user = Uuid::now_v7();
    let before = now_secs() as i64;
    let r = run(
        &valid_env(),
        &[
            "dev-token",
            "--user",
            &user.to_string(),
            "--email",
            "e@x.com",
            "--ttl",
            "1h",
        ],
    );
    let after = now_secs() as i64;
    assert!(r.success(), "{}", r.output());
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "expected exactly one line\n{}", r.output());
    let token = lines[0].trim();

    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_audience(&["authenticated"]);
    let data = jsonwebtoken::decode::<Value>(
        token,
        &jsonwebtoken::DecodingKey::from_secret(JWT_SECRET.as_bytes()),
        &validation,
    )
    .unwrap_or_else(|e| panic!("the token does not verify with JWT_SECRET: {e}\n{token}"));
    let claims = data.claims;
    assert_eq!(claims["sub"], user.to_string(), "{claims}");
    assert_eq!(claims["email"], "e@x.com", "{claims}");
    assert_eq!(claims["aud"], "authenticated", "{claims}");
    let exp = claims["exp"].as_i64().expect("numeric exp");
    assert!(
        (before + 3600 - 5..=after + 3600 + 5).contains(&exp),
        "exp {exp} is not about now + 3600 ({before}..{after})"
    );
}

#[test]
fn dev_token_rejects_bad_arguments() {
    let user = Uuid::now_v7().to_string();
    for ttl in ["0s", "forever"] {
        let r = run(&valid_env(), &["dev-token", "--user", &user, "--ttl", ttl]);
        assert!(!r.success(), "--ttl {ttl} was accepted\n{}", r.output());
        assert!(r.stdout.trim().is_empty(), "{}", r.output());
    }
    let r = run(&valid_env(), &["dev-token", "--user", "not-a-uuid"]);
    assert!(
        !r.success(),
        "--user not-a-uuid was accepted\n{}",
        r.output()
    );
    assert!(r.stdout.trim().is_empty(), "{}", r.output());
}

#[test]
fn dev_token_is_refused_in_production() {
    let env = production_env();
    // The environment itself is valid: the refusal is dev-token's, not the config's.
    let check = run(&env, &["check-config"]);
    assert!(check.success(), "{}", check.output());

    let r = run(&env, &["dev-token", "--user", &Uuid::now_v7().to_string()]);
    assert!(
        !r.success(),
        "dev-token minted a token in production\n{}",
        r.output()
    );
    assert!(
        r.stdout.trim().is_empty(),
        "a token was printed\n{}",
        r.output()
    );
    assert!(r.stderr.contains("production"), "{}", r.output());
}

// ---------------------------------------------------------------------------------------
// openapi
// ---------------------------------------------------------------------------------------

#[test]
fn openapi_prints_the_document_without_any_configuration() {
    let r = run(&HashMap::new(), &["openapi"]);
    assert!(r.success(), "{}", r.output());
    let doc: Value = serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON: {e}\n{}", r.output()));
    let version = doc["openapi"].as_str().unwrap_or_default();
    assert!(version.starts_with("3.1"), "openapi version {version:?}");
    for path in ["/v1/orgs/{org_id}/agents", "/v1/me"] {
        assert!(
            doc["paths"].get(path).is_some(),
            "{path} missing from paths: {:?}",
            doc["paths"]
                .as_object()
                .map(|p| p.keys().collect::<Vec<_>>())
        );
    }
    let schemes = doc["components"]["securitySchemes"]
        .as_object()
        .expect("components.securitySchemes");
    assert!(
        schemes.values().any(|s| s["type"] == "http"
            && s["scheme"]
                .as_str()
                .is_some_and(|v| v.eq_ignore_ascii_case("bearer"))),
        "no bearer scheme in {schemes:?}"
    );
}

// ---------------------------------------------------------------------------------------
// migrate
// ---------------------------------------------------------------------------------------

/// A new, empty database (not a template copy), named so the harness's stale-database
/// clean-up removes it later.
pub(crate) async fn empty_database() -> String {
    let name = format!("agents_api_t_{}_{}", now_secs(), Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(&admin_url())
        .await
        .expect("connect as the PostgreSQL admin");
    exec(&mut admin, &format!("CREATE DATABASE {name}")).await;
    name
}

pub(crate) async fn drop_database(name: &str) {
    if let Ok(mut admin) = PgConnection::connect(&admin_url()).await {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut admin)
        .await;
    }
}

/// `_sqlx_migrations` holds every migration of the binary exactly once, all successful.
pub(crate) async fn assert_migrations_applied_once(db: &str) {
    let mut conn = PgConnection::connect(&admin_url_for(db))
        .await
        .expect("admin");
    let rows: Vec<(i64, bool)> =
        sqlx::query_as("SELECT version, success FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&mut conn)
            .await
            .expect("read _sqlx_migrations");
    let mut expected: Vec<i64> = agents_api::db::MIGRATOR
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
        .map(|m| m.version)
        .collect();
    expected.sort_unstable();
    expected.dedup();
    let versions: Vec<i64> = rows.iter().map(|(v, _)| *v).collect();
    assert_eq!(versions, expected, "each version exactly once");
    assert!(
        rows.iter().all(|(_, ok)| *ok),
        "a failed migration: {rows:?}"
    );
}

/// The schema spec §4 requires: the twelve tables, RLS enabled and forced on every
/// table, the NOLOGIN roles with `api_runtime` granted the other three, and the auth
/// helpers.
pub(crate) async fn assert_schema(db: &str) {
    let mut conn = PgConnection::connect(&admin_url_for(db))
        .await
        .expect("admin");

    let tables: Vec<(String, bool, bool)> = sqlx::query_as(
        "SELECT c.relname::text, c.relrowsecurity, c.relforcerowsecurity
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
           AND c.relname <> '_sqlx_migrations'",
    )
    .fetch_all(&mut conn)
    .await
    .expect("list tables");
    let present: HashSet<&str> = tables.iter().map(|(t, _, _)| t.as_str()).collect();
    let missing: Vec<&&str> = TABLES.iter().filter(|t| !present.contains(**t)).collect();
    assert!(missing.is_empty(), "tables missing: {missing:?}");
    let unprotected: Vec<&(String, bool, bool)> = tables
        .iter()
        .filter(|(_, enabled, forced)| !(*enabled && *forced))
        .collect();
    assert!(
        unprotected.is_empty(),
        "tables without ENABLE and FORCE ROW LEVEL SECURITY (name, enabled, forced): {unprotected:?}"
    );

    let roles: Vec<(String, bool)> = sqlx::query_as(
        "SELECT rolname::text, rolcanlogin FROM pg_roles
         WHERE rolname IN ('authenticated', 'anon', 'api_worker', 'api_runtime')",
    )
    .fetch_all(&mut conn)
    .await
    .expect("list roles");
    for role in ["authenticated", "anon", "api_worker", "api_runtime"] {
        let found = roles.iter().find(|(r, _)| r == role);
        assert!(found.is_some(), "role {role} missing");
        assert!(
            found.is_some_and(|(_, login)| !login),
            "role {role} must be NOLOGIN"
        );
    }
    let granted: Vec<String> = sqlx::query_scalar(
        "SELECT g.rolname::text FROM pg_auth_members m
         JOIN pg_roles g ON g.oid = m.roleid
         JOIN pg_roles u ON u.oid = m.member
         WHERE u.rolname = 'api_runtime'",
    )
    .fetch_all(&mut conn)
    .await
    .expect("list memberships");
    for role in ["authenticated", "anon", "api_worker"] {
        assert!(
            granted.iter().any(|g| g == role),
            "api_runtime is not a member of {role} (member of {granted:?})"
        );
    }

    let functions: Vec<(String, String)> = sqlx::query_as(
        "SELECT p.proname::text, pg_get_function_result(p.oid)
         FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname = 'auth' AND p.proname IN ('uid', 'jwt') AND p.pronargs = 0",
    )
    .fetch_all(&mut conn)
    .await
    .expect("list functions");
    for (name, result) in [("uid", "uuid"), ("jwt", "jsonb")] {
        assert!(
            functions.iter().any(|(n, r)| n == name && r == result),
            "auth.{name}() returning {result} missing: {functions:?}"
        );
    }
}

#[tokio::test]
async fn migrate_applies_the_schema_and_is_idempotent() {
    let db = empty_database().await;
    let mut env = base_env(&db);
    // The runtime role never migrates: DATABASE_MIGRATION_URL is the owner.
    env.insert("DATABASE_URL".into(), runtime_url_for(&db));
    env.insert("DATABASE_MIGRATION_URL".into(), admin_url_for(&db));

    // It needs only the database settings: no Redis, no JWT secret.
    env.remove("REDIS_URL");
    env.remove("JWT_SECRET");
    for attempt in ["first", "second"] {
        let r = run(&env, &["migrate"]);
        assert!(r.success(), "{attempt} `migrate` failed\n{}", r.output());
    }
    // `serve` still refuses to start without them, naming both.
    let r = run(&env, &["check-config"]);
    assert!(!r.success(), "{}", r.output());
    assert!(
        r.output().contains("REDIS_URL") && r.output().contains("JWT_SECRET"),
        "{}",
        r.output()
    );
    assert_migrations_applied_once(&db).await;
    assert_schema(&db).await;
    drop_database(&db).await;
}

#[tokio::test]
async fn concurrent_migrations_apply_each_version_once() {
    let db = empty_database().await;
    let mut env = base_env(&db);
    // Without DATABASE_MIGRATION_URL, migrate uses DATABASE_URL.
    env.remove("DATABASE_MIGRATION_URL");
    env.insert("DATABASE_URL".into(), admin_url_for(&db));

    let mut processes: Vec<Process> = (0..3).map(|_| Process::spawn(&env, &["migrate"])).collect();
    for (i, process) in processes.iter_mut().enumerate() {
        let status = process.wait_exit().await;
        assert!(
            status.success(),
            "concurrent `migrate` #{i} failed ({status})\n{}",
            process.output()
        );
    }
    assert_migrations_applied_once(&db).await;
    assert_schema(&db).await;
    drop_database(&db).await;
}

// ---------------------------------------------------------------------------------------
// serve
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn serve_refuses_a_superuser_role() {
    let db = fresh_database().await;
    let env = serve_env(&db, admin_url_for(&db), free_port());
    let mut process = Process::spawn(&env, &["serve"]);
    let status = process.wait_exit().await;
    assert!(
        !status.success(),
        "serve started as a superuser\n{}",
        process.output()
    );
    let stderr = process.stderr();
    assert!(stderr.contains("superuser"), "{}", process.output());
    assert!(
        stderr.contains("agents-api runtime-role"),
        "{}",
        process.output()
    );

    // The escape hatch is for development only.
    let mut env = serve_env(&db, admin_url_for(&db), free_port());
    env.insert("ALLOW_PRIVILEGED_DB_ROLE".into(), "true".into());
    let mut process = Process::spawn(&env, &["serve"]);
    let status = process.wait_exit().await;
    assert!(
        !status.success(),
        "serve started as a superuser with APP_ENV=test\n{}",
        process.output()
    );
}

#[tokio::test]
async fn serve_allows_a_privileged_role_in_development_when_asked() {
    let db = fresh_database().await;
    let port = free_port();
    let mut env = serve_env(&db, admin_url_for(&db), port);
    env.insert("APP_ENV".into(), "development".into());
    env.insert("ALLOW_PRIVILEGED_DB_ROLE".into(), "true".into());
    let mut process = Process::spawn(&env, &["serve"]);
    let body = process
        .wait_for_200(&format!("http://127.0.0.1:{port}/health/live"))
        .await;
    assert_eq!(body["status"], "ok", "{body}");
    // Dropping the process kills it.
}

#[tokio::test]
async fn serve_runs_as_the_runtime_role_and_exits_cleanly_on_sigterm() {
    let db = fresh_database().await;
    let port = free_port();
    let env = serve_env(&db, runtime_url_for(&db), port);
    let mut process = Process::spawn(&env, &["serve"]);
    let body = process
        .wait_for_200(&format!("http://127.0.0.1:{port}/health/ready"))
        .await;
    assert_eq!(body["status"], "ok", "{body}");

    process.terminate();
    let status = process.wait_exit().await;
    assert_eq!(
        status.code(),
        Some(0),
        "serve did not exit 0 after SIGTERM ({status})\n{}",
        process.output()
    );
}

// ---------------------------------------------------------------------------------------
// .env.example
// ---------------------------------------------------------------------------------------

#[test]
fn env_example_lists_every_configuration_key() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/.env.example");
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{path} must exist and list every variable: {e}"));
    let listed: HashSet<&str> = text
        .lines()
        .filter_map(|line| {
            let line = line.trim_start();
            let line = line.strip_prefix('#').map(str::trim_start).unwrap_or(line);
            line.split_once('=').map(|(key, _)| key)
        })
        .filter(|key| {
            !key.is_empty()
                && key
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        })
        .collect();
    let missing: Vec<&str> = agents_api::config::KEYS
        .iter()
        .copied()
        .filter(|key| !listed.contains(key))
        .collect();
    assert!(missing.is_empty(), "{path} does not list {missing:?}");
}

/// `runtime-role` creates the server's login role, needs only the database settings,
/// quotes whatever name it is given, and repairs a role that was made privileged.
#[tokio::test]
async fn runtime_role_creates_and_repairs_the_login_role() {
    let db = empty_database().await;
    let mut env = base_env(&db);
    env.insert("DATABASE_MIGRATION_URL".into(), admin_url_for(&db));
    env.remove("REDIS_URL");
    env.remove("JWT_SECRET");
    assert!(run(&env, &["migrate"]).success());
    let name = format!("rt_{}\"quoted", Uuid::new_v4().simple());
    env.insert("RUNTIME_ROLE_PASSWORD".into(), "it's secret".into());
    let facts = |name: String| async move {
        let mut admin = PgConnection::connect(&admin_url()).await.unwrap();
        sqlx::query_as::<_, (bool, bool, bool, bool)>(
            "SELECT r.rolcanlogin, r.rolsuper, r.rolbypassrls,
                    pg_has_role(r.oid, 'api_runtime', 'MEMBER')
             FROM pg_roles r WHERE r.rolname = $1",
        )
        .bind(name)
        .fetch_one(&mut admin)
        .await
        .unwrap()
    };
    for attempt in ["first", "second"] {
        let r = run(&env, &["runtime-role", &name]);
        assert!(r.success(), "{attempt}: {}", r.output());
        assert_eq!(
            facts(name.clone()).await,
            (true, false, false, true),
            "{attempt}"
        );
    }
    // Made privileged by hand, it is brought back.
    let mut admin = PgConnection::connect(&admin_url()).await.unwrap();
    let quoted = name.replace('"', "\"\"");
    exec(
        &mut admin,
        &format!("ALTER ROLE \"{quoted}\" SUPERUSER BYPASSRLS"),
    )
    .await;
    exec(&mut admin, &format!("REVOKE api_runtime FROM \"{quoted}\"")).await;
    assert!(run(&env, &["runtime-role", &name]).success());
    assert_eq!(facts(name.clone()).await, (true, false, false, true));
    exec(&mut admin, &format!("DROP ROLE \"{quoted}\"")).await;
    drop_database(&db).await;
}

/// A `.env` file in the working directory fills in what the environment does not set;
/// the real environment wins. (It is read, never written into the process environment.)
#[test]
fn a_dotenv_file_fills_in_and_the_environment_wins() {
    let dir = crate::support::process::TempDir::new();
    std::fs::write(
        dir.path().join(".env"),
        format!(
            "# local settings\nJWT_SECRET=\"{JWT_SECRET}\"\nREDIS_URL=redis://127.0.0.1:6379\nHTTP_ADDR=127.0.0.1:1111\n"
        ),
    )
    .unwrap();
    let mut env = base_env("dotenv");
    env.remove("JWT_SECRET");
    env.remove("REDIS_URL");
    env.insert("HTTP_ADDR".into(), "127.0.0.1:2222".into());
    let out = crate::support::process::command(dir.path(), &env, &["check-config"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("HTTP_ADDR=127.0.0.1:2222"), "{stdout}");
}
