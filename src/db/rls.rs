//! The per-request transaction. It switches to the request role and publishes the
//! verified claims with `set_config(…, true)`: transaction-local, so nothing survives into
//! the next use of the pooled connection, not even after an error (the rollback resets it).

use std::ops::{Deref, DerefMut};

use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::http::auth::AuthUser;
use crate::http::error::ApiError;

#[derive(Clone)]
pub struct Db {
    pool: PgPool,
    /// `statement_timeout` for request transactions, so a runaway query cannot outlive
    /// the handler timeout.
    statement_timeout: String,
}

/// The transaction and its trace span, which lasts as long as the transaction does.
pub struct Tx(Transaction<'static, Postgres>, tracing::Span);

fn span(role: &'static str) -> tracing::Span {
    tracing::info_span!(
        "db.transaction",
        otel.kind = "client",
        db.system = "postgresql",
        db.role = role,
        outcome = tracing::field::Empty,
    )
}

impl Db {
    pub fn new(pool: PgPool, statement_timeout: std::time::Duration) -> Db {
        Db {
            pool,
            statement_timeout: format!("{}ms", statement_timeout.as_millis()),
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// A transaction as `authenticated` with the user's claims: the policies see the
    /// rows of the orgs the user belongs to, and nothing else.
    pub async fn begin_user(&self, user: &AuthUser) -> Result<Tx, ApiError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "SELECT set_config('role', 'authenticated', true),
                    set_config('request.jwt.claims', $1, true),
                    set_config('statement_timeout', $2, true)",
        )
        .bind(&*user.claims)
        .bind(&self.statement_timeout)
        .execute(&mut *tx)
        .await?;
        Ok(Tx(tx, span("authenticated")))
    }

    /// A transaction as `api_worker` scoped to one org, for jobs and webhooks.
    pub async fn begin_worker(&self, org_id: Uuid) -> Result<Tx, ApiError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "SELECT set_config('role', 'api_worker', true),
                    set_config('app.org_id', $1, true),
                    set_config('statement_timeout', $2, true)",
        )
        .bind(org_id.to_string())
        .bind(&self.statement_timeout)
        .execute(&mut *tx)
        .await?;
        Ok(Tx(tx, span("api_worker")))
    }
}

impl Db {
    /// A transaction as `api_worker` scoped to no org: it sees no rows, and may only call
    /// the SECURITY DEFINER helpers of the scheduler.
    pub async fn begin_system(&self) -> Result<Tx, ApiError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "SELECT set_config('role', 'api_worker', true),
                    set_config('statement_timeout', $1, true)",
        )
        .bind(&self.statement_timeout)
        .execute(&mut *tx)
        .await?;
        Ok(Tx(tx, span("api_worker")))
    }
}

impl Tx {
    /// Scopes an `api_worker` transaction (from `begin_system`) to one org, once the org
    /// is known (a webhook learns it from its connection).
    pub async fn set_org(&mut self, org_id: Uuid) -> Result<(), ApiError> {
        sqlx::query("SELECT set_config('app.org_id', $1, true)")
            .bind(org_id.to_string())
            .execute(&mut *self.0)
            .await?;
        Ok(())
    }

    pub async fn commit(self) -> Result<(), ApiError> {
        let Tx(tx, span) = self;
        span.record("outcome", "commit");
        tx.commit().await?;
        Ok(())
    }
}

impl Deref for Tx {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        &self.0
    }
}

impl DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.0
    }
}
