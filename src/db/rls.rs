//! The per-request transaction. It switches to the request role and publishes the
//! verified claims with `set_config(…, true)`: transaction-local, so nothing survives into
//! the next use of the pooled connection, not even after an error (the rollback resets it).
//!
//! `Tx` runs `BEGIN`/`COMMIT` itself rather than through `sqlx::Transaction`, for two
//! reasons. A request future is dropped when its client hangs up; sqlx's transaction does
//! not roll back a `BEGIN` interrupted that way, so the connection went back to the pool
//! inside an open transaction, and the next request's statements ran in it. Here the
//! `Tx` exists before `BEGIN` is sent, `COMMIT` cannot be interrupted (it runs in a task of
//! its own), and a `Tx` dropped while open — during `BEGIN` too — rolls back before its
//! connection returns to the pool. And `BEGIN`,
//! the settings and (for an org route) the membership check travel as one simple query:
//! one round trip where they took three.

use std::fmt::Write as _;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use sqlx::pool::PoolConnection;
use sqlx::{AssertSqlSafe, Column as _, PgConnection, PgPool, Postgres, Row};

use crate::db::error::{Error, Result};
use crate::domain::AuthUser;
use crate::domain::{ConnectionId, OrgId, Role};

#[derive(Clone)]
pub struct Db {
    pool: PgPool,
    /// `statement_timeout` for request transactions, so a runaway query cannot outlive
    /// the handler timeout.
    statement_timeout: String,
    warm: Arc<Warm>,
}

/// Connections whose last transaction ended in a known state (its answer read whole, its
/// `COMMIT` or `ROLLBACK` done), kept for the next transaction instead of going back to
/// sqlx's pool: sqlx pings every connection returned to it, a round trip, a task and a
/// backend's wake-up per request (~8 % of the agents list's server time in `perf`, its
/// sends to PostgreSQL being ~12 % with the query's). The last one kept is handed out
/// first. `permits` (the pool's size) bounds the connections in use, as the pool would,
/// so that taking one from the pool never waits for one kept here. A connection that
/// ended any other way (a request dropped mid-statement, an error that may have broken
/// it) goes back to the pool, whose ping drains or closes it.
struct Warm {
    idle: Mutex<Vec<PoolConnection<Postgres>>>,
    permits: Arc<Semaphore>,
}

/// A connection, the permit that counts it as in use, and where it goes back to.
struct Lease {
    conn: PoolConnection<Postgres>,
    permit: OwnedSemaphorePermit,
    warm: Arc<Warm>,
}

impl Warm {
    /// After `Db::close` a connection goes back to the pool, which is closing: kept here,
    /// it would hold the pool's close up forever (checked under the lock `close` holds
    /// while it closes and drains).
    fn keep(&self, conn: PoolConnection<Postgres>) {
        if let Ok(mut idle) = self.idle.lock()
            && !self.permits.is_closed()
        {
            idle.push(conn);
        }
    }

    fn take(&self) -> Option<PoolConnection<Postgres>> {
        self.idle.lock().ok().and_then(|mut idle| idle.pop())
    }
}

impl Lease {
    /// Back to `warm` for the next transaction; the permit goes after it.
    fn keep(self) {
        let Lease { conn, permit, warm } = self;
        warm.keep(conn);
        drop(permit);
    }

    /// Ends the transaction with `sql` (`ROLLBACK`). The connection is kept when it
    /// succeeds, closed when the connection failed under it; when the server refused the
    /// statement, the pool's ping checks the connection.
    async fn end(mut self, sql: &'static str) -> sqlx::Result<()> {
        let result = sqlx::raw_sql(sql).execute(&mut *self.conn).await.map(drop);
        match &result {
            Ok(()) => self.keep(),
            Err(error) if !connection_survives(error) => self.conn.close_on_drop(),
            Err(_) => {}
        }
        result
    }
}

/// An open transaction on a pooled connection, and its trace span, which lasts as long
/// as the transaction does.
pub struct Tx {
    /// Always `Some` while the `Tx` is alive: only `commit`, `finish` and `drop` take it.
    lease: Option<Lease>,
    span: tracing::Span,
    /// Whether the statements that began it left a transaction open (`BEGIN`), which a
    /// dropped `Tx` rolls back. Without `BEGIN` a simple query is a transaction by
    /// itself, over (committed, or rolled back by its error) when its answer is read.
    open: bool,
}

fn span(role: &'static str) -> tracing::Span {
    tracing::info_span!(
        "db.transaction",
        otel.kind = "client",
        db.system = "postgresql",
        db.role = role,
        outcome = tracing::field::Empty,
    )
}

/// The membership check of `begin_member`, prepared once per connection (`prepare`): it
/// travels inside the simple query that opens the transaction, where a plain SELECT
/// would be planned anew every time (~100 µs of the database's CPU, more than the round
/// trip it saves). The plan follows the role: PostgreSQL replans it if it was made for
/// another one.
const MEMBER_ROLE: &str = "agents_api_member_role";

/// A webhook's connection (its org, token digest and Kommo account), looked up by
/// `begin_webhook` inside the simple query that opens the transaction, and the
/// transaction scoped to its org: prepared once per connection, as `MEMBER_ROLE`.
const WEBHOOK_CONNECTION: &str = "agents_api_webhook_connection";

/// The statements that make a transaction's role and local settings, one per count of
/// settings (`SETTINGS` + n: role, then n names and values), prepared once per
/// connection (`prepare`). Sent as a plain `SELECT set_config(…)`, that statement was
/// parsed and planned anew by every transaction: ~20 µs of the database's CPU per
/// request, measured on the agents list's batch.
const SETTINGS: &str = "agents_api_settings_";

/// The most settings a prepared statement of `SETTINGS` takes; more fall back to a plain
/// `SELECT`.
const PREPARED_SETTINGS: usize = 4;

fn prepare_settings_sql() -> String {
    let mut sql = String::new();
    for n in 0..=PREPARED_SETTINGS {
        let types = vec!["text"; 1 + 2 * n].join(", ");
        let _ = write!(
            sql,
            "PREPARE {SETTINGS}{n} ({types}) AS SELECT set_config('role', $1, true)"
        );
        for i in 0..n {
            let _ = write!(sql, ", set_config(${}, ${}, true)", 2 + 2 * i, 3 + 2 * i);
        }
        sql.push_str(";\n");
    }
    sql
}

pub(super) async fn prepare(conn: &mut PgConnection) -> sqlx::Result<()> {
    sqlx::raw_sql(AssertSqlSafe(format!(
        "{}
         PREPARE agents_api_member_role (uuid, uuid) AS
         SELECT role AS member_role FROM organization_members
         WHERE org_id = $1 AND user_id = $2;
         PREPARE agents_api_webhook_connection (uuid) AS
         SELECT org_id AS webhook_org_id, webhook_token_hash AS webhook_digest,
                account_id AS webhook_account_id,
                set_config('app.org_id', org_id::text, true) AS webhook_scoped
         FROM auth.webhook_connection($1);
         {}
         {}",
        prepare_settings_sql(),
        super::agents::PREPARE_LIST_PAGE,
        super::webhooks::PREPARE_INSERT_DELIVERY
    )))
    .execute(conn)
    .await?;
    Ok(())
}

/// An `EXECUTE` of a statement prepared per connection, written into a simple query.
/// Text travels as hex decoded by the server (as in `begin_sql`), so no value can end
/// the literal it is in; uuids and integers print as hex, dashes and digits only.
pub struct Execute(String);

impl Execute {
    pub fn new(statement: &str) -> Execute {
        Execute(format!("EXECUTE {statement}("))
    }

    fn next(&mut self) {
        if !self.0.ends_with('(') {
            self.0.push_str(", ");
        }
    }

    pub fn uuid(mut self, value: Option<uuid::Uuid>) -> Execute {
        self.next();
        match value {
            Some(value) => {
                let _ = write!(self.0, "'{value}'::uuid");
            }
            None => self.0.push_str("NULL::uuid"),
        }
        self
    }

    pub fn text(mut self, value: Option<&str>) -> Execute {
        self.next();
        match value {
            Some(value) => {
                let _ = write!(
                    self.0,
                    "convert_from(decode('{}', 'hex'), 'UTF8')",
                    hex::encode(value)
                );
            }
            None => self.0.push_str("NULL::text"),
        }
        self
    }

    pub fn bytes(mut self, value: &[u8]) -> Execute {
        self.next();
        let _ = write!(self.0, "decode('{}', 'hex')", hex::encode(value));
        self
    }

    pub fn int(mut self, value: i64) -> Execute {
        self.next();
        let _ = write!(self.0, "{value}");
        self
    }

    fn sql(mut self) -> String {
        // Without arguments the statement is named alone: `EXECUTE s()` is a syntax error.
        if self.0.ends_with('(') {
            self.0.pop();
            self.0.push(';');
        } else {
            self.0.push_str(");");
        }
        self.0
    }
}

/// The statement that opens a transaction as `role` with transaction-local `settings`.
fn begin_sql(role: &str, settings: &[(&str, &str)]) -> String {
    format!("BEGIN; {}", settings_sql(role, settings))
}

/// The statement that makes the transaction's `role` and local `settings`. Values are
/// spelled as hex and decoded by the server, so no value (claims are client-supplied
/// JSON, however verified) can end the literal it travels in.
fn settings_sql(role: &str, settings: &[(&str, &str)]) -> String {
    let prepared = settings.len() <= PREPARED_SETTINGS;
    let mut sql = if prepared {
        format!("EXECUTE {SETTINGS}{}('{role}'", settings.len())
    } else {
        format!("SELECT set_config('role', '{role}', true)")
    };
    for (name, value) in settings {
        let value = hex::encode(value);
        let value = format!("convert_from(decode('{value}', 'hex'), 'UTF8')");
        let _ = if prepared {
            write!(sql, ", '{name}', {value}")
        } else {
            write!(sql, ", set_config('{name}', {value}, true)")
        };
    }
    sql.push_str(if prepared { ");" } else { ";" });
    sql
}

/// Whether an error leaves the connection usable: the server answered (and ended or
/// aborted the statement), as opposed to the connection failing under it. A server that
/// ended the session says so first (SQLSTATE 57P01–57P03: a terminated backend, a
/// shutdown; class 08: connection exception). 57014, a cancelled statement, is not one.
fn connection_survives(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(e) => !e
            .code()
            .is_some_and(|code| code.starts_with("57P") || code.starts_with("08")),
        _ => false,
    }
}

impl Db {
    pub fn new(pool: PgPool, statement_timeout: std::time::Duration) -> Db {
        let size = pool.options().get_max_connections() as usize;
        Db {
            pool,
            statement_timeout: format!("{}ms", statement_timeout.as_millis()),
            warm: Arc::new(Warm {
                idle: Mutex::new(Vec::with_capacity(size)),
                permits: Arc::new(Semaphore::new(size)),
            }),
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Idle connections: the pool's and those kept for the next transaction.
    pub fn idle_connections(&self) -> usize {
        self.pool.num_idle() + self.warm.idle.lock().map_or(0, |idle| idle.len())
    }

    /// A connection with no transaction open (for health checks and tests); dropped, it
    /// goes back to the pool.
    pub async fn connection(&self) -> Result<Tx> {
        self.tx("none", false).await
    }

    /// A `Tx` as `role` on a leased connection, before anything is sent on it.
    async fn tx(&self, role: &'static str, open: bool) -> Result<Tx> {
        Ok(Tx {
            lease: Some(self.lease().await?),
            span: span(role),
            open,
        })
    }

    /// Closes every connection; transactions begun afterwards fail.
    pub async fn close(&self) {
        let kept = {
            let mut idle = self
                .warm
                .idle
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            self.warm.permits.close();
            std::mem::take(&mut *idle)
        };
        drop(kept);
        self.pool.close().await;
    }

    /// A connection for a transaction: the last one kept, or one from the pool, once the
    /// connections in use are fewer than the pool's size (waiting as the pool would, up
    /// to its acquire timeout).
    async fn lease(&self) -> Result<Lease> {
        let permit = match tokio::time::timeout(
            self.pool.options().get_acquire_timeout(),
            self.warm.permits.clone().acquire_owned(),
        )
        .await
        {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => return Err(sqlx::Error::PoolClosed.into()),
            Err(_) => return Err(sqlx::Error::PoolTimedOut.into()),
        };
        let conn = match self.warm.take() {
            Some(conn) => conn,
            None => self.pool.acquire().await?,
        };
        Ok(Lease {
            conn,
            permit,
            warm: self.warm.clone(),
        })
    }

    /// Runs `sql` (which opens the transaction) on a pooled connection. The `Tx` exists
    /// before the statement is sent, so a caller dropped half-way (a client that hung up)
    /// drops it and it rolls back: sqlx first drains whatever the interrupted statement
    /// still owes (and sends what it had buffered), and no transaction is left open.
    ///
    /// The pool hands out idle connections without pinging them first (`connect`): that
    /// would be one more round trip per request. A connection that died while idle (a
    /// database restart or failover) fails here, before anything ran, so it is closed and
    /// the transaction begun on another one — as many times as the pool has connections.
    async fn begin(
        &self,
        role: &'static str,
        sql: String,
    ) -> Result<(Tx, Vec<sqlx::postgres::PgRow>)> {
        self.run(role, &sql, true).await
    }

    /// `begin`'s work: runs `sql` (which leaves a transaction `open`, or is one by
    /// itself) on a pooled connection, retried on another one when an idle one had died.
    async fn run(
        &self,
        role: &'static str,
        sql: &str,
        open: bool,
    ) -> Result<(Tx, Vec<sqlx::postgres::PgRow>)> {
        let mut retries = self.pool.options().get_max_connections();
        loop {
            let mut tx = self.tx(role, open).await?;
            match sqlx::raw_sql(AssertSqlSafe(sql)).fetch_all(&mut *tx).await {
                Ok(rows) => return Ok((tx, rows)),
                Err(error) if !connection_survives(&error) && retries > 0 => {
                    tracing::info!(%error, "a pooled connection had died; beginning on another");
                    tx.discard();
                    retries -= 1;
                }
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// A transaction as `authenticated` with the user's claims: the policies see the
    /// rows of the orgs the user belongs to, and nothing else.
    pub async fn begin_user(&self, user: &AuthUser) -> Result<Tx> {
        Ok(self
            .begin("authenticated", self.user_begin_sql(user, &[]))
            .await?
            .0)
    }

    /// `begin_user`, and the user's role in `org_id` (`None` when they are not a member),
    /// read under their claims in the same round trip.
    pub async fn begin_member(&self, user: &AuthUser, org_id: OrgId) -> Result<(Tx, Option<Role>)> {
        self.begin_member_with(user, org_id, &[]).await
    }

    /// `begin_member` with more transaction-local settings (`extra`: trusted names and
    /// values, such as `SEARCH_SETTINGS`).
    pub async fn begin_member_with(
        &self,
        user: &AuthUser,
        org_id: OrgId,
        extra: &[(&str, &str)],
    ) -> Result<(Tx, Option<Role>)> {
        let mut sql = self.user_begin_sql(user, extra);
        // Uuids print as hex and dashes only.
        let _ = write!(sql, " EXECUTE {MEMBER_ROLE}('{org_id}', '{}');", user.id);
        let (tx, rows) = self.begin("authenticated", sql).await?;
        let role = rows
            .iter()
            .find_map(|row| row.try_get::<Role, _>("member_role").ok());
        Ok((tx, role))
    }

    /// A read as the member, whole in one round trip: the settings, the membership check
    /// and `read` travel as one simple query with no `BEGIN`, which PostgreSQL runs as
    /// one implicit transaction (the local settings last until its end; an error rolls
    /// it back and skips the rest). Returns the caller's role (`None`: not a member, and
    /// `read` saw no row of the org under the policies) and `read`'s rows, in the text
    /// format. The batch's rows are told apart by their first column's name: `read`'s
    /// must not begin with a `set_config` or `member_role` column.
    ///
    /// For the hot read routes: a transaction held across handler code costs a round
    /// trip per statement and one for `COMMIT`, and the database spends about as much on
    /// each round trip as on the statements of a small read. Nothing is left to roll
    /// back when the request is dropped half-way: sqlx drains the answer before the
    /// connection is used again.
    pub async fn read_as_member(
        &self,
        user: &AuthUser,
        org_id: OrgId,
        read: Execute,
    ) -> Result<(Option<Role>, Vec<sqlx::postgres::PgRow>)> {
        let sql = format!(
            "{} EXECUTE {MEMBER_ROLE}('{org_id}', '{}'); {}",
            self.user_settings_sql(user, &[]),
            user.id,
            read.sql()
        );
        let (tx, rows) = self.run("authenticated", &sql, false).await?;
        tx.finish();
        let mut role = None;
        let mut read_rows = Vec::new();
        for row in rows {
            match row.columns().first().map(|c| c.name()) {
                Some("set_config") => {}
                Some("member_role") => role = row.try_get::<Role, _>(0).ok(),
                _ => read_rows.push(row),
            }
        }
        Ok((role, read_rows))
    }

    fn user_begin_sql(&self, user: &AuthUser, extra: &[(&str, &str)]) -> String {
        format!("BEGIN; {}", self.user_settings_sql(user, extra))
    }

    fn user_settings_sql(&self, user: &AuthUser, extra: &[(&str, &str)]) -> String {
        let mut settings = vec![
            ("request.jwt.claims", &*user.claims),
            ("statement_timeout", self.statement_timeout.as_str()),
        ];
        settings.extend_from_slice(extra);
        settings_sql("authenticated", &settings)
    }

    /// A transaction as `api_worker` scoped to one org, for jobs and webhooks.
    pub async fn begin_worker(&self, org_id: OrgId) -> Result<Tx> {
        self.begin_worker_with(org_id, &[]).await
    }

    /// `begin_worker` whose commit does not wait for the WAL to reach the disk: for job
    /// bookkeeping that a crash of PostgreSQL may undo safely. A success lost that way
    /// leaves its job running until the lease lapses, and it runs again (handlers are
    /// idempotent: delivery is at least once); a claim lost leaves it queued, and the
    /// sweep pushes it again; a renewal lost only shortens a lease.
    pub async fn begin_bookkeeping(&self, org_id: OrgId) -> Result<Tx> {
        self.begin_worker_with(org_id, &[("synchronous_commit", "off")])
            .await
    }

    /// `begin_worker` with more transaction-local settings (as `begin_member_with`).
    pub async fn begin_worker_with(&self, org_id: OrgId, extra: &[(&str, &str)]) -> Result<Tx> {
        let org = org_id.to_string();
        let mut settings = vec![
            ("app.org_id", org.as_str()),
            ("statement_timeout", self.statement_timeout.as_str()),
        ];
        settings.extend_from_slice(extra);
        let sql = begin_sql("api_worker", &settings);
        Ok(self.begin("api_worker", sql).await?.0)
    }

    /// `begin_system`, and the webhook connection `connection_id` read in the same round
    /// trip: its org (to which the transaction is then scoped), token digest and Kommo
    /// account; `None` when there is no such connection with a webhook token. The caller
    /// checks the token before it writes anything; a refusal rolls the transaction back.
    pub async fn begin_webhook(
        &self,
        connection_id: ConnectionId,
    ) -> Result<(Tx, Option<WebhookConnection>)> {
        let mut sql = begin_sql(
            "api_worker",
            &[("statement_timeout", &self.statement_timeout)],
        );
        // A uuid prints as hex and dashes only.
        let _ = write!(sql, " EXECUTE {WEBHOOK_CONNECTION}('{connection_id}');");
        let (tx, rows) = self.begin("api_worker", sql).await?;
        let connection = rows.iter().find_map(|row| {
            Some(WebhookConnection {
                org_id: OrgId(row.try_get("webhook_org_id").ok()?),
                token_digest: row.try_get("webhook_digest").ok()?,
                account_id: row.try_get("webhook_account_id").ok()?,
            })
        });
        Ok((tx, connection))
    }

    /// A transaction as `api_worker` scoped to no org: it sees no rows, and may only call
    /// the SECURITY DEFINER helpers (the scheduler's; a webhook's connection lookup, which
    /// scopes the transaction to the connection's org).
    pub async fn begin_system(&self) -> Result<Tx> {
        let sql = begin_sql(
            "api_worker",
            &[("statement_timeout", &self.statement_timeout)],
        );
        Ok(self.begin("api_worker", sql).await?.0)
    }
}

/// What `Db::begin_webhook` reads of a webhook's connection.
#[derive(Debug)]
pub struct WebhookConnection {
    pub org_id: OrgId,
    /// SHA-256 of the webhook token.
    pub token_digest: Vec<u8>,
    pub account_id: Option<i64>,
}

impl Tx {
    /// Keeps the connection of a transaction that ended with the statements that began
    /// it (`open: false`), its answer read whole.
    fn finish(mut self) {
        if let Some(lease) = self.lease.take() {
            lease.keep();
        }
        self.span.record("outcome", "commit");
    }

    /// Closes the connection instead of returning it to the pool.
    fn discard(mut self) {
        if let Some(mut lease) = self.lease.take() {
            lease.conn.close_on_drop();
        }
    }

    /// Runs `last` and commits, in one round trip, as `commit` does: `last`'s rows. A
    /// write that ends a handler's transaction need not wait for its answer before
    /// sending `COMMIT`: the round trip saved is one of the webhook route's three.
    pub async fn commit_with(self, last: Execute) -> Result<Vec<sqlx::postgres::PgRow>> {
        self.end_in_task(format!("{} COMMIT;", last.sql())).await
    }

    /// Commits in a task of its own: once a handler commits, its writes land even if
    /// the client hangs up meanwhile, and the connection never returns mid-`COMMIT`.
    pub async fn commit(self) -> Result<()> {
        self.end_in_task("COMMIT".to_string()).await.map(drop)
    }

    /// Runs `sql`, which ends with `COMMIT`, in a task of its own. When it fails and the
    /// connection survives, `ROLLBACK` follows: a failed statement skips the rest of the
    /// batch and leaves the transaction aborted (after a failed `COMMIT` it is over, and
    /// the `ROLLBACK` only warns); then the connection is kept.
    async fn end_in_task(mut self, sql: String) -> Result<Vec<sqlx::postgres::PgRow>> {
        let Some(mut lease) = self.lease.take() else {
            return Ok(Vec::new());
        };
        let span = self.span.clone();
        let ran = tokio::spawn(async move {
            let ran = sqlx::raw_sql(AssertSqlSafe(sql))
                .fetch_all(&mut *lease.conn)
                .await;
            match &ran {
                Ok(_) => lease.keep(),
                Err(error) if connection_survives(error) => {
                    let _ = lease.end("ROLLBACK").await;
                }
                Err(_) => lease.conn.close_on_drop(),
            }
            ran
        })
        .await;
        match ran {
            Ok(Ok(rows)) => {
                span.record("outcome", "commit");
                Ok(rows)
            }
            Ok(Err(error)) => {
                span.record("outcome", "error");
                Err(error.into())
            }
            Err(join) => {
                tracing::error!(error = %join, "the task committing a transaction stopped");
                Err(Error::Aborted("committing"))
            }
        }
    }
}

impl Drop for Tx {
    /// An uncommitted transaction (an error, or a request its client left) rolls back
    /// before its connection is reused. sqlx drains whatever the connection still owes
    /// from an interrupted statement before it sends the `ROLLBACK`.
    fn drop(&mut self) {
        let Some(mut lease) = self.lease.take() else {
            return;
        };
        self.span.record("outcome", "rollback");
        if !self.open {
            // Nothing to roll back; the pool's ping drains what an interrupted query
            // still owes before the connection is handed out again.
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(lease.end("ROLLBACK"));
            }
            Err(_) => lease.conn.close_on_drop(),
        }
    }
}

impl Deref for Tx {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        self.lease
            .as_ref()
            .map(|lease| &*lease.conn)
            .expect("a Tx holds its connection until commit or drop")
    }
}

impl DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut PgConnection {
        self.lease
            .as_mut()
            .map(|lease| &mut *lease.conn)
            .expect("a Tx holds its connection until commit or drop")
    }
}

#[cfg(test)]
mod tests {
    use super::{Execute, PREPARED_SETTINGS, begin_sql, prepare_settings_sql, settings_sql};

    #[test]
    fn execute_arguments_cannot_end_their_literals() {
        let id = uuid::Uuid::nil();
        let sql = Execute::new("s")
            .uuid(Some(id))
            .uuid(None)
            .text(Some("'); DROP TABLE agents; --"))
            .text(None)
            .int(-3)
            .sql();
        assert_eq!(
            sql,
            "EXECUTE s('00000000-0000-0000-0000-000000000000'::uuid, NULL::uuid, \
             convert_from(decode('27293b2044524f50205441424c45206167656e74733b202d2d', 'hex'), 'UTF8'), \
             NULL::text, -3);"
        );
        assert_eq!(Execute::new("t").sql(), "EXECUTE t;");
    }

    #[test]
    fn values_travel_as_hex() {
        let sql = begin_sql(
            "authenticated",
            &[("request.jwt.claims", "{\"a\":\"'; DROP\"}")],
        );
        assert_eq!(
            sql,
            "BEGIN; EXECUTE agents_api_settings_1('authenticated', 'request.jwt.claims', \
             convert_from(decode('7b2261223a22273b2044524f50227d', 'hex'), 'UTF8'));"
        );
        // More settings than a prepared statement takes: set one by one, hex all the same.
        let many = [("a.b", "'"); PREPARED_SETTINGS + 1];
        let sql = settings_sql("api_worker", &many);
        assert!(sql.starts_with("SELECT set_config('role', 'api_worker', true), "));
        assert_eq!(
            sql.matches("set_config('a.b', convert_from(decode('27', 'hex'), 'UTF8'), true)")
                .count(),
            PREPARED_SETTINGS + 1
        );
    }

    #[test]
    fn every_count_of_settings_has_its_statement() {
        let sql = prepare_settings_sql();
        assert!(sql.contains(
            "PREPARE agents_api_settings_0 (text) AS SELECT set_config('role', $1, true);"
        ));
        assert!(sql.contains(
            "PREPARE agents_api_settings_2 (text, text, text, text, text) AS \
             SELECT set_config('role', $1, true), set_config($2, $3, true), set_config($4, $5, true);"
        ));
        assert_eq!(sql.matches("PREPARE").count(), PREPARED_SETTINGS + 1);
    }
}
