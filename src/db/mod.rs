//! PostgreSQL: the pool of the runtime role, the row-level-security transaction every
//! request and job runs in, migrations, and the queries of each resource.

pub mod agent_routes;
pub mod agents;
pub mod ai;
pub mod audit;
pub mod conversations;
pub mod crm;
pub mod error;
pub mod graph;
pub mod jobs;
pub mod knowledge;
pub mod members;
pub mod oauth;
pub mod orgs;
mod rls;
pub mod vectors;
pub mod webhooks;

use std::time::Duration;

use anyhow::Context as _;
use secrecy::ExposeSecret;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, ConnectOptions, PgPool};

use crate::config::{AppEnv, Config};

pub use error::{Error, Result};
pub use rls::{Db, Execute, Tx, WebhookConnection};

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// How long a request may wait for a pooled connection before it answers 503.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

pub fn connect(config: &Config) -> anyhow::Result<PgPool> {
    let options: PgConnectOptions = config
        .database_url
        .expose_secret()
        .parse::<PgConnectOptions>()?
        .application_name("agents-api")
        // Statements carry claims and ids; they are traced as spans elsewhere, not logged.
        .disable_statement_logging();
    let pool = pool_options()
        .max_connections(config.database_max_connections)
        .min_connections(1.min(config.database_max_connections))
        .acquire_timeout(ACQUIRE_TIMEOUT)
        // sqlx pings every connection when it returns to the pool; pinging it again when
        // it leaves costs each request another round trip. `Db::begin` retries on another
        // connection when an idle one turns out dead.
        .test_before_acquire(false)
        .connect_lazy_with(options);
    Ok(pool)
}

/// The options every runtime pool needs: each new connection prepares the statements
/// that `Db` runs inside simple queries (see `rls::MEMBER_ROLE`).
pub fn pool_options() -> PgPoolOptions {
    PgPoolOptions::new().after_connect(|conn, _meta| {
        Box::pin(async move {
            rls::prepare(conn).await?;
            Ok(())
        })
    })
}

/// One connection as the owner role (`DATABASE_MIGRATION_URL`), for the commands that
/// administer the database: `migrate`, `rotate-keys`, `runtime-role`.
pub async fn owner_pool(config: &Config, command: &str) -> anyhow::Result<PgPool> {
    let options: PgConnectOptions = config
        .database_migration_url
        .expose_secret()
        .parse()
        .context("DATABASE_MIGRATION_URL")?;
    PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(30))
        .connect_with(
            options
                .application_name(&format!("agents-api {command}"))
                .disable_statement_logging(),
        )
        .await
        .context("connecting with DATABASE_MIGRATION_URL")
}

/// Applies `migrations/` as the owner role. sqlx holds a PostgreSQL advisory lock while
/// it migrates, so replicas starting together apply each migration exactly once.
pub async fn migrate(config: &Config) -> anyhow::Result<()> {
    let pool = owner_pool(config, "migrate").await?;
    MIGRATOR.run(&pool).await?;
    let indexed =
        vectors::ensure_index(&mut *pool.acquire().await?, config.ai_embedding_dimensions)
            .await
            .context("creating the embedding index")?;
    if !indexed {
        tracing::warn!(
            "pgvector is not installed in this database: knowledge search is full-text only"
        );
    }
    pool.close().await;
    Ok(())
}

/// Creates the server's login role `name` in `api_runtime`, or brings an existing one
/// back to that: LOGIN, never superuser or BYPASSRLS (which `serve` refuses), with
/// `password` when given. The one place this SQL is written; dev.sh, schemathesis.sh,
/// the compose stack and the tests all call it. Run after `migrate` (which makes the
/// group) as the owner, who needs CREATEROLE.
pub async fn ensure_runtime_role(
    conn: &mut sqlx::PgConnection,
    name: &str,
    password: Option<&str>,
) -> anyhow::Result<()> {
    use sqlx::Connection as _;
    let mut tx = conn.begin().await?;
    let exists = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = $1) AS "exists!""#,
        name
    )
    .fetch_one(&mut *tx)
    .await?;
    // format() quotes the name and the password, so neither can break the statement.
    let statements = sqlx::query_scalar!(
        r#"SELECT unnest(CASE WHEN $3::bool THEN ARRAY[
                    format('ALTER ROLE %I LOGIN NOSUPERUSER NOBYPASSRLS', $1::text),
                    format('GRANT api_runtime TO %I', $1)]
                ELSE ARRAY[format('CREATE ROLE %I LOGIN IN ROLE api_runtime', $1)] END
              || CASE WHEN $2::text IS NULL THEN ARRAY[]::text[]
                      ELSE ARRAY[format('ALTER ROLE %I PASSWORD %L', $1, $2)] END)
           AS "statement!""#,
        name,
        password,
        exists,
    )
    .fetch_all(&mut *tx)
    .await?;
    for statement in statements {
        sqlx::raw_sql(AssertSqlSafe(statement))
            .execute(&mut *tx)
            .await
            .with_context(|| format!("setting up the runtime role {name}"))?;
    }
    tx.commit().await?;
    Ok(())
}

#[derive(Debug)]
struct RoleFacts {
    rolname: String,
    rolsuper: bool,
    rolbypassrls: bool,
    owns_tables: bool,
    in_runtime_group: bool,
}

/// Refuses a runtime role that would let a bug read around row-level security: a
/// superuser, a BYPASSRLS role or the owner of the tables (or a member of the owner).
pub async fn check_runtime_role(pool: &PgPool, config: &Config) -> anyhow::Result<()> {
    let facts = sqlx::query_as!(
        RoleFacts,
        r#"SELECT r.rolname::text AS "rolname!", r.rolsuper AS "rolsuper!",
                  r.rolbypassrls AS "rolbypassrls!",
                  EXISTS (SELECT 1 FROM pg_tables t
                          WHERE t.schemaname = 'public'
                            AND pg_has_role(current_user, t.tableowner, 'MEMBER'))
                    AS "owns_tables!",
                  EXISTS (SELECT 1 FROM pg_roles g WHERE g.rolname = 'api_runtime')
                    AND pg_has_role(current_user, 'api_runtime', 'MEMBER') AS "in_runtime_group!"
           FROM pg_roles r WHERE r.rolname = current_user"#
    )
    .fetch_one(pool)
    .await?;
    let mut problems = Vec::new();
    if facts.rolsuper {
        problems.push("is a superuser");
    }
    if facts.rolbypassrls {
        problems.push("has BYPASSRLS");
    }
    if facts.owns_tables {
        problems.push("owns the tables (or is a member of their owner)");
    }
    if !facts.in_runtime_group {
        problems.push("is not a member of api_runtime (run `agents-api migrate` first)");
    }
    if problems.is_empty() {
        return Ok(());
    }
    let allowed = config.app_env == AppEnv::Development && config.allow_privileged_db_role;
    let message = format!(
        "the DATABASE_URL role `{}` {}. Row-level security needs an unprivileged login role; \
         create one as the owner with\n  RUNTIME_ROLE_PASSWORD='…' agents-api runtime-role agents_api\n\
         and point DATABASE_URL at it (DATABASE_MIGRATION_URL keeps the owner for migrations).",
        facts.rolname,
        problems.join(", ")
    );
    if allowed {
        tracing::warn!(
            "{message} Continuing because ALLOW_PRIVILEGED_DB_ROLE=true in development."
        );
        return Ok(());
    }
    anyhow::bail!(message)
}
