//! Row-level security proven at the database itself, not through the API's own WHERE
//! clauses: the runtime role with one user's claims cannot see or touch another org's
//! rows, jobs' `api_worker` sees one org, and nothing leaks through the pool.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::json;
use sqlx::{Connection, PgConnection, Row};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use uuid::Uuid;

use crate::support::app::{RUNTIME_ROLE, TestApp, claims_for, runtime_url_for};

/// Starts a transaction as `authenticated` with `user`'s claims, the way the server does.
async fn as_user(conn: &mut PgConnection, user: Uuid) {
    sqlx::query("BEGIN").execute(&mut *conn).await.unwrap();
    sqlx::query(
        "SELECT set_config('role', 'authenticated', true),
                set_config('request.jwt.claims', $1, true)",
    )
    .bind(claims_for(user).to_string())
    .execute(&mut *conn)
    .await
    .unwrap();
}

async fn runtime_conn(app: &TestApp) -> PgConnection {
    PgConnection::connect(&runtime_url_for(&app.db_name))
        .await
        .unwrap()
}

async fn agent_org_ids(conn: &mut PgConnection) -> Vec<Uuid> {
    sqlx::query_scalar("SELECT org_id FROM agents")
        .fetch_all(&mut *conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn database_refuses_other_orgs_rows() {
    let app = TestApp::builder().spawn().await;
    let (alice, bob) = (Uuid::now_v7(), Uuid::now_v7());
    let org_a = app.create_org(alice).await;
    let org_b = app.create_org(bob).await;
    app.create_agent(org_a, alice, "Alpha one").await;
    app.create_agent(org_a, alice, "Alpha two").await;
    app.create_agent(org_b, bob, "Bravo one").await;

    let mut conn = runtime_conn(&app).await;
    as_user(&mut conn, bob).await;
    // No WHERE clause at all: the policies alone keep org A out.
    let seen = agent_org_ids(&mut conn).await;
    assert_eq!(seen, vec![org_b]);
    let orgs: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM organizations")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert_eq!(orgs, vec![org_b]);
    let members: Vec<Uuid> = sqlx::query_scalar("SELECT org_id FROM organization_members")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert_eq!(members, vec![org_b]);

    // Writes aimed at org A touch nothing or are refused.
    let updated = sqlx::query("UPDATE agents SET name = 'hijacked' WHERE org_id = $1")
        .bind(org_a)
        .execute(&mut conn)
        .await
        .unwrap();
    assert_eq!(updated.rows_affected(), 0);
    let deleted = sqlx::query("DELETE FROM agents WHERE org_id = $1")
        .bind(org_a)
        .execute(&mut conn)
        .await
        .unwrap();
    assert_eq!(deleted.rows_affected(), 0);
    let insert = sqlx::query(
        "INSERT INTO agents (org_id, name, model, channels) VALUES ($1, 'Planted', 'm', '{chat}')",
    )
    .bind(org_a)
    .execute(&mut conn)
    .await;
    let err = insert.expect_err("inserting into another org must fail");
    assert_eq!(
        err.as_database_error().and_then(|e| e.code()).as_deref(),
        Some("42501"),
        "{err}"
    );
    sqlx::query("ROLLBACK").execute(&mut conn).await.unwrap();

    // Bob cannot make himself a member of org A either.
    as_user(&mut conn, bob).await;
    let joined = sqlx::query(
        "INSERT INTO organization_members (org_id, user_id, role) VALUES ($1, $2, 'owner')",
    )
    .bind(org_a)
    .bind(bob)
    .execute(&mut conn)
    .await;
    assert!(
        joined.is_err(),
        "self-invitation into another org must fail"
    );
    sqlx::query("ROLLBACK").execute(&mut conn).await.unwrap();
}

/// The definer functions the policies call are PL/pgSQL: a SQL function that cannot be
/// inlined (a definer one cannot) is parsed and planned again by every statement that
/// calls it, which made `auth.org_ids` cost as much as the rest of a small read. Every
/// policy's functions are named in full (`auth.…`), so their names are found in the
/// policies' expressions.
#[tokio::test]
async fn the_functions_policies_call_keep_their_plans() {
    let app = TestApp::builder().spawn().await;
    let mut admin = app.admin_db().await;
    let called: Vec<(String, String)> = sqlx::query_as(
        "SELECT DISTINCT p.proname::text, l.lanname::text
         FROM pg_policy pol
              JOIN pg_proc p ON p.prosecdef
              JOIN pg_namespace n ON n.oid = p.pronamespace AND n.nspname = 'auth'
              JOIN pg_language l ON l.oid = p.prolang
         WHERE concat_ws(' ', pg_get_expr(pol.polqual, pol.polrelid),
                         pg_get_expr(pol.polwithcheck, pol.polrelid))
               LIKE '%auth.' || p.proname || '(%'
         ORDER BY 1",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    let names: Vec<&str> = called.iter().map(|(name, _)| name.as_str()).collect();
    assert!(names.contains(&"org_ids"), "{called:?}");
    assert!(names.contains(&"org_has_members"), "{called:?}");
    for (name, language) in &called {
        assert_eq!(language, "plpgsql", "auth.{name} is called by a policy");
    }
    let webhook: String = sqlx::query_scalar(
        "SELECT l.lanname::text FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
         WHERE p.oid = 'auth.webhook_connection(uuid)'::regprocedure",
    )
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!(
        webhook, "plpgsql",
        "every webhook calls auth.webhook_connection"
    );
}

#[tokio::test]
async fn without_claims_the_runtime_role_sees_nothing() {
    let app = TestApp::builder().spawn().await;
    let alice = Uuid::now_v7();
    let org = app.create_org(alice).await;
    app.create_agent(org, alice, "Alpha").await;
    let mut conn = runtime_conn(&app).await;
    // Neither as the login role itself nor as `authenticated` without claims.
    assert!(agent_org_ids(&mut conn).await.is_empty());
    sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
    sqlx::query("SELECT set_config('role', 'authenticated', true)")
        .execute(&mut conn)
        .await
        .unwrap();
    assert!(agent_org_ids(&mut conn).await.is_empty());
    sqlx::query("ROLLBACK").execute(&mut conn).await.unwrap();
}

#[tokio::test]
async fn members_cannot_write_at_the_database_either() {
    let app = TestApp::builder().spawn().await;
    let users = app.org_with_roles().await;
    let agent = app.create_agent(users.org, users.admin, "Alpha").await;
    let mut conn = runtime_conn(&app).await;
    as_user(&mut conn, users.member).await;
    assert_eq!(agent_org_ids(&mut conn).await, vec![users.org]);
    let updated = sqlx::query("UPDATE agents SET name = 'renamed' WHERE id = $1")
        .bind(agent["id"].as_str().unwrap().parse::<Uuid>().unwrap())
        .execute(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        updated.rows_affected(),
        0,
        "a member's update must match no row"
    );
    sqlx::query("ROLLBACK").execute(&mut conn).await.unwrap();
}

#[tokio::test]
async fn api_worker_sees_only_its_org() {
    let app = TestApp::builder().spawn().await;
    let (alice, bob) = (Uuid::now_v7(), Uuid::now_v7());
    let org_a = app.create_org(alice).await;
    let org_b = app.create_org(bob).await;
    app.create_agent(org_a, alice, "Alpha").await;
    app.create_agent(org_b, bob, "Bravo").await;

    let mut tx = app.state.db.begin_worker(org_a.into()).await.unwrap();
    let seen: Vec<Uuid> = sqlx::query_scalar("SELECT org_id FROM agents")
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    assert_eq!(seen, vec![org_a]);
    let moved = sqlx::query("UPDATE agents SET org_id = $1")
        .bind(org_b)
        .execute(&mut *tx)
        .await;
    assert!(moved.is_err(), "a job must not move rows into another org");
    drop(tx);

    // Without app.org_id, api_worker sees nothing.
    let mut conn = runtime_conn(&app).await;
    sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
    sqlx::query("SELECT set_config('role', 'api_worker', true)")
        .execute(&mut conn)
        .await
        .unwrap();
    assert!(agent_org_ids(&mut conn).await.is_empty());
    sqlx::query("ROLLBACK").execute(&mut conn).await.unwrap();
}

#[tokio::test]
async fn audit_logs_are_append_only_for_runtime_roles() {
    let app = TestApp::builder().spawn().await;
    let owner = Uuid::now_v7();
    let org = app.create_org(owner).await;
    let mut conn = runtime_conn(&app).await;
    as_user(&mut conn, owner).await;
    sqlx::query(
        "INSERT INTO audit_logs (org_id, actor_user_id, action, entity) VALUES ($1, $2, 'test', 'org')",
    )
    .bind(org)
    .bind(owner)
    .execute(&mut conn)
    .await
    .unwrap();
    let visible: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_logs WHERE action = 'test'")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(visible, 1);
    sqlx::query("COMMIT").execute(&mut conn).await.unwrap();

    for statement in [
        "UPDATE audit_logs SET action = 'rewritten'",
        "DELETE FROM audit_logs",
    ] {
        for role in ["authenticated", "api_worker"] {
            sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
            sqlx::query(
                "SELECT set_config('role', $1, true), set_config('request.jwt.claims', $2, true),
                        set_config('app.org_id', $3, true)",
            )
            .bind(role)
            .bind(claims_for(owner).to_string())
            .bind(org.to_string())
            .execute(&mut conn)
            .await
            .unwrap();
            let err = sqlx::query(statement)
                .execute(&mut conn)
                .await
                .expect_err("audit rows are append-only");
            assert_eq!(
                err.as_database_error().and_then(|e| e.code()).as_deref(),
                Some("42501"),
                "{role}: {statement}: {err}"
            );
            sqlx::query("ROLLBACK").execute(&mut conn).await.unwrap();
        }
    }
}

#[tokio::test]
async fn nothing_leaks_through_the_pool() {
    // One pooled connection, so the request and the check share it.
    let app = TestApp::builder()
        .configure(|env| {
            env.insert("DATABASE_MAX_CONNECTIONS".into(), "1".into());
        })
        .spawn()
        .await;
    let alice = Uuid::now_v7();
    let org = app.create_org(alice).await;
    app.get(&format!("/v1/orgs/{org}/agents"), alice)
        .await
        .expect(200);
    // A request that fails inside its transaction must not leak either.
    app.get(&format!("/v1/orgs/{org}/agents/{}", Uuid::now_v7()), alice)
        .await
        .expect(404);
    app.post(
        &format!("/v1/orgs/{org}/agents"),
        alice,
        json!({"name": "Alpha", "model": "m", "connection_id": Uuid::now_v7()}),
    )
    .await
    .expect(422);

    // The connection the last request used, as the next request would get it.
    let mut conn = app.state.db.connection().await.unwrap();
    let row = sqlx::query(
        "SELECT current_user::text AS who,
                current_setting('role') AS role,
                coalesce(current_setting('request.jwt.claims', true), '') AS claims,
                coalesce(current_setting('app.org_id', true), '') AS org,
                auth.uid() AS uid",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    assert_eq!(row.get::<String, _>("who"), RUNTIME_ROLE);
    assert_eq!(row.get::<String, _>("role"), "none");
    assert_eq!(row.get::<String, _>("claims"), "");
    assert_eq!(row.get::<String, _>("org"), "");
    assert_eq!(row.get::<Option<Uuid>, _>("uid"), None);
    let agents: i64 = sqlx::query_scalar("SELECT count(*) FROM agents")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(agents, 0);
}

/// Forwards TCP on a local port to PostgreSQL: for each connection, `up` copies what
/// the client sends and `down` what the server answers.
async fn postgres_proxy<Up, UpFuture, Down, DownFuture>(up: Up, down: Down) -> u16
where
    Up: Fn(OwnedReadHalf, OwnedWriteHalf) -> UpFuture + Send + 'static,
    UpFuture: std::future::Future<Output = ()> + Send + 'static,
    Down: Fn(OwnedReadHalf, OwnedWriteHalf) -> DownFuture + Send + 'static,
    DownFuture: std::future::Future<Output = ()> + Send + 'static,
{
    let upstream_url = url::Url::parse(&crate::support::app::admin_url()).unwrap();
    let upstream = format!(
        "{}:{}",
        upstream_url.host_str().unwrap(),
        upstream_url.port().unwrap_or(5432)
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                continue;
            };
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            tokio::spawn(up(client_read, server_write));
            tokio::spawn(down(server_read, client_write));
        }
    });
    port
}

/// Copies one direction of a proxied connection as it comes.
async fn copy(mut from: OwnedReadHalf, mut to: OwnedWriteHalf) {
    let _ = tokio::io::copy(&mut from, &mut to).await;
}

/// Forwards TCP to PostgreSQL, holding every chunk of the server's answers for `delay`:
/// a database far enough away that a future can be dropped while it waits for one.
async fn slow_postgres(delay: std::time::Duration) -> u16 {
    postgres_proxy(copy, move |mut server_read, mut client_write| async move {
        let mut buffer = vec![0u8; 64 * 1024];
        while let Ok(n) = server_read.read(&mut buffer).await {
            if n == 0 {
                break;
            }
            tokio::time::sleep(delay).await;
            if client_write.write_all(&buffer[..n]).await.is_err() {
                break;
            }
        }
    })
    .await
}

/// A request future is dropped when its client hangs up, at any await point: inside
/// `BEGIN` included. The transaction it had opened must end before its connection serves
/// anyone else (sqlx's own transaction left it open, and the next request ran in it).
#[tokio::test]
async fn an_abandoned_transaction_never_reaches_the_next_user() {
    let app = TestApp::builder().spawn().await;
    let alice = Uuid::now_v7();
    let org = app.create_org(alice).await;
    let user = agents_api::http::auth::AuthUser {
        id: alice.into(),
        email: None,
        claims: claims_for(alice).to_string().into(),
    };
    // One connection, 20 ms from the database: each round trip is a window to hang up in.
    let delay = std::time::Duration::from_millis(20);
    let port = slow_postgres(delay).await;
    let mut url = url::Url::parse(&runtime_url_for(&app.db_name)).unwrap();
    url.set_port(Some(port)).unwrap();
    let pool = agents_api::db::pool_options()
        .max_connections(1)
        .connect(url.as_str())
        .await
        .unwrap();
    let db = agents_api::db::Db::new(pool, std::time::Duration::from_secs(5));
    for attempt in 0..24u64 {
        // The pool's check before handing out a connection takes one round trip; then
        // BEGIN (and the membership check), then COMMIT: hang up somewhere along them.
        let patience = std::time::Duration::from_millis(5 + attempt % 12 * 7);
        if attempt < 12 {
            let _ = tokio::time::timeout(patience, db.begin_user(&user)).await;
        } else {
            let _ = tokio::time::timeout(patience, async {
                let (tx, _) = db.begin_member(&user, org.into()).await?;
                tx.commit().await
            })
            .await;
        }
        // Outside a transaction each statement is its own, with its own id. The
        // connection is the one the next transaction would get.
        let mut conn = db.connection().await.unwrap();
        let mut xids = Vec::new();
        for _ in 0..2 {
            let xid: i64 = sqlx::query_scalar("SELECT txid_current()")
                .fetch_one(&mut *conn)
                .await
                .unwrap();
            xids.push(xid);
        }
        assert_ne!(
            xids[0], xids[1],
            "attempt {attempt}: the pooled connection was still inside an abandoned transaction"
        );
        let role: String = sqlx::query_scalar("SELECT current_setting('role')")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(role, "none", "attempt {attempt}");
    }
}

/// The pool does not ping a connection before handing it out (one round trip per
/// request saved): a connection that died while idle — the database restarted or failed
/// over — must cost no request an error; the transaction begins on another connection.
#[tokio::test]
async fn connections_that_died_idle_cost_no_request() {
    let app = TestApp::builder()
        .configure(|env| {
            env.insert("DATABASE_MAX_CONNECTIONS".into(), "3".into());
        })
        .spawn()
        .await;
    let alice = Uuid::now_v7();
    let org = app.create_org(alice).await;
    let path = format!("/v1/orgs/{org}/agents");
    // Open up to three connections, then leave them idle.
    let (a, b, c) = tokio::join!(
        app.get(&path, alice),
        app.get(&path, alice),
        app.get(&path, alice)
    );
    for response in [a, b, c] {
        response.expect(200);
    }
    let mut admin = app.admin_db().await;
    let killed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND usename = $1) t",
    )
    .bind(RUNTIME_ROLE)
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert!(killed >= 1, "no pooled connection to kill");
    for _ in 0..4 {
        app.get(&path, alice).await.expect(200);
    }
}

/// Every SECURITY DEFINER function pins `search_path` with `pg_temp` last and is not
/// executable through PUBLIC.
#[tokio::test]
async fn definer_functions_pin_their_search_path_and_refuse_public() {
    let app = TestApp::builder().spawn().await;
    let mut admin = app.admin_db().await;
    let rows = sqlx::query(
        "SELECT p.oid::regprocedure::text AS name,
                coalesce('search_path=pg_catalog, public, pg_temp' = ANY (p.proconfig), false) AS pinned,
                EXISTS (SELECT 1 FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
                        WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE') AS public_execute
         FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname = 'auth' AND p.prosecdef",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert!(rows.len() >= 10, "only {} definer functions", rows.len());
    for row in rows {
        let name: String = row.get("name");
        assert!(
            row.get::<bool, _>("pinned"),
            "{name} has a loose search_path"
        );
        assert!(
            !row.get::<bool, _>("public_execute"),
            "{name} is executable by PUBLIC"
        );
    }
}

/// A temporary table named like ours no longer stands in for it: the count trigger writes
/// the real `agent_counts`, so the session cannot shift the counts it reads.
#[tokio::test]
async fn a_temporary_table_cannot_stand_in_for_agent_counts() {
    let app = TestApp::builder().spawn().await;
    let users = app.org_with_roles().await;
    let mut conn = runtime_conn(&app).await;
    sqlx::query(
        "CREATE TEMP TABLE agent_counts (org_id uuid, status text, n bigint, PRIMARY KEY (org_id, status))",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    sqlx::query("GRANT ALL ON pg_temp.agent_counts TO PUBLIC")
        .execute(&mut conn)
        .await
        .unwrap();
    as_user(&mut conn, users.admin).await;
    sqlx::query(
        "INSERT INTO agents (id, org_id, name, model, status, channels) VALUES (gen_random_uuid(), $1, 'Temp', 'gpt-4o-mini', 'draft', ARRAY['chat'])",
    )
    .bind(users.org)
    .execute(&mut conn)
    .await
    .unwrap();
    sqlx::query("COMMIT").execute(&mut conn).await.unwrap();
    let planted: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_temp.agent_counts")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        planted, 0,
        "the trigger wrote the session's temporary table"
    );
    let listed = app
        .get(&format!("/v1/orgs/{}/agents", users.org), users.member)
        .await
        .expect(200);
    assert_eq!(listed.body["total"], 1, "{}", listed.text);
}

/// Forwards TCP to PostgreSQL and counts the client's Sync messages, which the pool sends
/// to ping a connection returned to it (the simple queries `Db` sends have none).
async fn sync_counting_postgres() -> (u16, Arc<AtomicUsize>) {
    let syncs = Arc::new(AtomicUsize::new(0));
    let counted = syncs.clone();
    let up = move |mut client_read: OwnedReadHalf, mut server_write: OwnedWriteHalf| {
        let syncs = counted.clone();
        async move {
            // Untyped messages (an SSL request, the startup message) until the startup
            // message; then a type byte and a length before each.
            let (mut pending, mut started) = (Vec::new(), false);
            let mut buffer = vec![0u8; 64 * 1024];
            while let Ok(n) = client_read.read(&mut buffer).await {
                if n == 0 || server_write.write_all(&buffer[..n]).await.is_err() {
                    break;
                }
                pending.extend_from_slice(&buffer[..n]);
                loop {
                    let at = usize::from(started);
                    let Some(length) = pending.get(at..at + 4) else {
                        break;
                    };
                    let length = u32::from_be_bytes(length.try_into().unwrap()) as usize;
                    if pending.len() < at + length {
                        break;
                    }
                    if started && pending[0] == b'S' {
                        syncs.fetch_add(1, Ordering::SeqCst);
                    }
                    // 80877103: the SSL request, which the startup message follows.
                    started = started || pending[4..8] != 80877103u32.to_be_bytes();
                    pending.drain(..at + length);
                }
            }
        }
    };
    (postgres_proxy(up, copy).await, syncs)
}

/// A connection whose transaction ended cleanly (committed, or rolled back after its
/// request was dropped) is kept for the next transaction instead of going back to sqlx's
/// pool, which pings every connection returned to it: a round trip per request.
#[tokio::test]
async fn a_finished_transaction_keeps_its_connection_without_a_round_trip() {
    let app = TestApp::builder().spawn().await;
    let alice = Uuid::now_v7();
    let org = app.create_org(alice).await;
    let user = agents_api::http::auth::AuthUser {
        id: alice.into(),
        email: None,
        claims: claims_for(alice).to_string().into(),
    };
    let (port, syncs) = sync_counting_postgres().await;
    let mut url = url::Url::parse(&runtime_url_for(&app.db_name)).unwrap();
    url.set_port(Some(port)).unwrap();
    url.query_pairs_mut().append_pair("sslmode", "disable");
    let pool = agents_api::db::pool_options()
        .max_connections(2)
        .connect(url.as_str())
        .await
        .unwrap();
    let db = agents_api::db::Db::new(pool, std::time::Duration::from_secs(5));
    let cycle = || async {
        let (tx, role) = db.begin_member(&user, org.into()).await.unwrap();
        assert_eq!(role, Some(agents_api::domain::Role::Owner));
        tx.commit().await.unwrap();
        // Dropped open: rolled back in a task of its own, then kept.
        drop(db.begin_user(&user).await.unwrap());
    };
    cycle().await;
    let before = syncs.load(Ordering::SeqCst);
    for _ in 0..10 {
        cycle().await;
    }
    let after = syncs.load(Ordering::SeqCst);
    let mut conn = db.connection().await.unwrap();
    let role: String = sqlx::query_scalar("SELECT current_setting('role')")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(role, "none");
    assert_eq!(
        after - before,
        0,
        "connections went back to the pool (a ping each)"
    );
}

/// `Tx::commit_with` sends a statement and `COMMIT` together: when the statement fails,
/// the aborted transaction must roll back, and the connection (kept for the next
/// transaction) must begin the next one cleanly, with nothing of the first left. A
/// session-level setting made in the transaction is the witness: a rollback undoes it.
#[tokio::test]
async fn a_statement_sent_with_its_commit_that_fails_rolls_back() {
    use agents_api::db::Execute;
    let app = TestApp::builder().spawn().await;
    let org = app.create_org(Uuid::now_v7()).await;
    let pool = agents_api::db::pool_options()
        .max_connections(1)
        .connect(&runtime_url_for(&app.db_name))
        .await
        .unwrap();
    let db = agents_api::db::Db::new(pool, std::time::Duration::from_secs(5));
    let mark = |value: &'static str| {
        let db = db.clone();
        async move {
            let mut tx = db.begin_worker(org.into()).await.unwrap();
            sqlx::query("SELECT set_config('agents_api.test_mark', $1, false)")
                .bind(value)
                .execute(&mut *tx)
                .await
                .unwrap();
            tx
        }
    };
    let seen = || {
        let db = db.clone();
        async move {
            let mut tx = db.begin_worker(org.into()).await.unwrap();
            let mark: Option<String> =
                sqlx::query_scalar("SELECT current_setting('agents_api.test_mark', true)")
                    .fetch_one(&mut *tx)
                    .await
                    .unwrap();
            tx.commit().await.unwrap();
            mark.unwrap_or_default()
        }
    };

    let failed = mark("failed")
        .await
        .commit_with(Execute::new("agents_api_no_such_statement"))
        .await;
    assert!(failed.is_err(), "{failed:?}");
    assert_eq!(seen().await, "", "the failed batch's transaction committed");

    // The same (only) connection takes the next batch, which commits.
    let rows = mark("committed")
        .await
        .commit_with(Execute::new("agents_api_settings_0").text(Some("api_worker")))
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "the statement's row comes back");
    assert_eq!(seen().await, "committed");
}
