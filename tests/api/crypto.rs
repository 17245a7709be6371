//! Encryption at rest and `agents-api rotate-keys`, run as the real binary against real
//! databases: secrets stored under an old key are re-encrypted under the new one in every
//! org, a second run has nothing to do, a ciphertext moved to another row stops the
//! command with the row named (and its batch untouched), and the command works for a
//! table owner that is not a superuser (through the owner policies of migration 3).

use std::collections::HashMap;

use agents_api::config::EncryptionKey;
use agents_api::crypto::{ACCESS_TOKEN, AI_API_KEY, CLIENT_SECRET, KeyRing, REFRESH_TOKEN};
use base64::Engine as _;
use secrecy::{ExposeSecret, SecretBox};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use crate::support::app::{
    admin_url, admin_url_for, base_env, exec, fresh_database, runtime_url_for,
};
use crate::support::process::{Run, run};

const OLD: (&str, u8) = ("old", 0x11);
const NEW: (&str, u8) = ("new", 0x22);

fn key((id, byte): (&str, u8)) -> EncryptionKey {
    EncryptionKey {
        id: id.to_string(),
        key: SecretBox::new(Box::new([byte; 32])),
    }
}

fn ring(keys: &[(&str, u8)]) -> KeyRing {
    let keys: Vec<EncryptionKey> = keys.iter().copied().map(key).collect();
    KeyRing::new(&keys).expect("a key ring")
}

/// `ENCRYPTION_KEYS` for `keys`, the first one active.
fn keys_var(keys: &[(&str, u8)]) -> String {
    keys.iter()
        .map(|(id, byte)| {
            format!(
                "{id}:{}",
                base64::engine::general_purpose::STANDARD.encode([*byte; 32])
            )
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The environment of `rotate-keys` on `db` through the owner `migration_url`.
fn rotate_env(db: &str, migration_url: String, keys: &[(&str, u8)]) -> HashMap<String, String> {
    let mut env = base_env(db);
    env.insert("DATABASE_MIGRATION_URL".into(), migration_url);
    env.insert("ENCRYPTION_KEYS".into(), keys_var(keys));
    env
}

#[track_caller]
fn assert_report(r: &Run, reencrypted: u64, rows: u64, current: u64) {
    assert!(r.success(), "rotate-keys failed\n{}", r.output());
    let expected = format!(
        "rotate-keys: re-encrypted {reencrypted} secret(s) in {rows} row(s); {current} already current"
    );
    assert_eq!(r.stdout.trim(), expected, "{}", r.output());
}

/// One secret as stored: where it lives and what it must decrypt to.
struct Stored {
    table: &'static str,
    column: &'static str,
    aad: &'static str,
    row: Uuid,
    plaintext: String,
}

/// Inserts, as the PostgreSQL superuser, an org with Kommo credentials and connections
/// whose secrets are sealed by `ring`. A connection gets an access token, and a refresh
/// token when `with_refresh`.
struct Seeder {
    conn: PgConnection,
    stored: Vec<Stored>,
}

impl Seeder {
    async fn connect(db: &str) -> Seeder {
        Seeder {
            conn: PgConnection::connect(&admin_url_for(db))
                .await
                .expect("admin connection"),
            stored: Vec::new(),
        }
    }

    async fn org(&mut self) -> Uuid {
        let id = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO organizations (id, name, slug, created_by) VALUES ($1, 'Acme', $2, $3)",
        )
        .bind(id)
        .bind(format!("acme-{}", id.simple()))
        .bind(Uuid::now_v7())
        .execute(&mut self.conn)
        .await
        .expect("insert an org");
        id
    }

    async fn credentials(&mut self, org: Uuid, ring: &KeyRing) -> Uuid {
        let id = Uuid::now_v7();
        let secret = format!("client-secret-{}", Uuid::new_v4().simple());
        let blob = ring
            .encrypt(secret.as_bytes(), id, CLIENT_SECRET)
            .expect("encrypt");
        sqlx::query(
            "INSERT INTO crm_credentials (id, org_id, provider, client_id, client_secret_enc)
             VALUES ($1, $2, 'kommo', 'client-id', $3)",
        )
        .bind(id)
        .bind(org)
        .bind(blob)
        .execute(&mut self.conn)
        .await
        .expect("insert crm_credentials");
        self.stored.push(Stored {
            table: "crm_credentials",
            column: "client_secret_enc",
            aad: CLIENT_SECRET,
            row: id,
            plaintext: secret,
        });
        id
    }

    async fn connection(&mut self, org: Uuid, ring: &KeyRing, with_refresh: bool) -> Uuid {
        let id = Uuid::now_v7();
        let access = format!("access-token-{}", Uuid::new_v4().simple());
        let refresh = format!("refresh-token-{}", Uuid::new_v4().simple());
        let access_blob = ring
            .encrypt(access.as_bytes(), id, ACCESS_TOKEN)
            .expect("encrypt");
        let refresh_blob = with_refresh.then(|| {
            ring.encrypt(refresh.as_bytes(), id, REFRESH_TOKEN)
                .expect("encrypt")
        });
        sqlx::query(
            "INSERT INTO crm_connections
                 (id, org_id, provider, base_domain, status, access_token_enc, refresh_token_enc)
             VALUES ($1, $2, 'kommo', $3, 'connected', $4, $5)",
        )
        .bind(id)
        .bind(org)
        .bind(format!("acme-{}.kommo.com", id.simple()))
        .bind(access_blob)
        .bind(refresh_blob)
        .execute(&mut self.conn)
        .await
        .expect("insert crm_connections");
        self.stored.push(Stored {
            table: "crm_connections",
            column: "access_token_enc",
            aad: ACCESS_TOKEN,
            row: id,
            plaintext: access,
        });
        if with_refresh {
            self.stored.push(Stored {
                table: "crm_connections",
                column: "refresh_token_enc",
                aad: REFRESH_TOKEN,
                row: id,
                plaintext: refresh,
            });
        }
        id
    }
}

impl Seeder {
    /// An org's own AI provider key (`ai_settings`, one row per org).
    async fn ai_key(&mut self, org: Uuid, ring: &KeyRing) -> Uuid {
        let id = Uuid::now_v7();
        let key = format!("sk-org-{}", Uuid::new_v4().simple());
        let blob = ring
            .encrypt(key.as_bytes(), id, AI_API_KEY)
            .expect("encrypt");
        sqlx::query(
            "INSERT INTO ai_settings (org_id, id, base_url, api_key_enc)
             VALUES ($1, $2, 'https://llm.example.com/v1', $3)",
        )
        .bind(org)
        .bind(id)
        .bind(blob)
        .execute(&mut self.conn)
        .await
        .expect("insert ai_settings");
        self.stored.push(Stored {
            table: "ai_settings",
            column: "api_key_enc",
            aad: AI_API_KEY,
            row: id,
            plaintext: key,
        });
        id
    }
}

/// The stored blob of one secret (read as the superuser, around row-level security).
async fn blob(conn: &mut PgConnection, s: &Stored) -> Vec<u8> {
    let sql = match (s.table, s.column) {
        ("crm_credentials", "client_secret_enc") => {
            "SELECT client_secret_enc FROM crm_credentials WHERE id = $1"
        }
        ("crm_connections", "access_token_enc") => {
            "SELECT access_token_enc FROM crm_connections WHERE id = $1"
        }
        ("crm_connections", "refresh_token_enc") => {
            "SELECT refresh_token_enc FROM crm_connections WHERE id = $1"
        }
        ("ai_settings", "api_key_enc") => "SELECT api_key_enc FROM ai_settings WHERE id = $1",
        other => panic!("no such secret column {other:?}"),
    };
    sqlx::query_scalar(sql)
        .bind(s.row)
        .fetch_one(conn)
        .await
        .expect("read a stored secret")
}

/// Every secret decrypts with a ring that holds only `new`.
async fn assert_all_under_new_key(conn: &mut PgConnection, stored: &[Stored]) {
    let new_only = ring(&[NEW]);
    for s in stored {
        let blob = blob(conn, s).await;
        let secret = new_only
            .decrypt(&blob, s.row, s.aad)
            .unwrap_or_else(|e| panic!("{} {} {}: {e}", s.table, s.row, s.column));
        assert_eq!(secret.expose_secret(), s.plaintext);
        assert!(!new_only.needs_rotation(&blob));
    }
}

#[tokio::test]
async fn rotate_keys_reencrypts_every_orgs_secrets_with_the_active_key() {
    let db = fresh_database().await;
    let (old, new) = (ring(&[OLD]), ring(&[NEW]));
    let mut seed = Seeder::connect(&db).await;
    let acme = seed.org().await;
    let globex = seed.org().await;
    // Under the old key: 2 client secrets, 3 tokens of 2 connections.
    seed.credentials(acme, &old).await;
    seed.credentials(globex, &old).await;
    seed.connection(acme, &old, true).await;
    seed.connection(globex, &old, false).await;
    // An org's AI provider key under the old key.
    seed.ai_key(acme, &old).await;
    // Already under the new key: 2 tokens and an AI key.
    seed.connection(globex, &new, true).await;
    seed.ai_key(globex, &new).await;
    // A connection without tokens (pending) is no secret at all.
    sqlx::query(
        "INSERT INTO crm_connections (org_id, provider, base_domain) VALUES ($1, 'kommo', 'pending.kommo.com')",
    )
    .bind(acme)
    .execute(&mut seed.conn)
    .await
    .expect("insert a pending connection");

    let env = rotate_env(&db, admin_url_for(&db), &[NEW, OLD]);
    let r = run(&env, &["rotate-keys"]);
    assert_report(&r, 6, 5, 3);
    for s in &seed.stored {
        assert!(!r.output().contains(&s.plaintext), "{}", r.output());
    }
    assert_all_under_new_key(&mut seed.conn, &seed.stored).await;

    // Nothing left to do.
    let r = run(&env, &["rotate-keys"]);
    assert_report(&r, 0, 0, 9);
    assert_all_under_new_key(&mut seed.conn, &seed.stored).await;
}

#[tokio::test]
async fn rotate_keys_names_the_row_of_a_ciphertext_copied_from_another_row() {
    let db = fresh_database().await;
    let old = ring(&[OLD]);
    let mut seed = Seeder::connect(&db).await;
    let org = seed.org().await;
    seed.credentials(org, &old).await;
    let source = seed.connection(org, &old, true).await;
    let target = seed.connection(org, &old, true).await;
    // An attacker with write access to the table moves a token to another connection.
    sqlx::query(
        "UPDATE crm_connections SET access_token_enc =
             (SELECT access_token_enc FROM crm_connections WHERE id = $1)
         WHERE id = $2",
    )
    .bind(source)
    .bind(target)
    .execute(&mut seed.conn)
    .await
    .expect("copy a ciphertext");
    let before: Vec<(Uuid, Vec<u8>, Vec<u8>)> = sqlx::query_as(
        "SELECT id, access_token_enc, refresh_token_enc FROM crm_connections ORDER BY id",
    )
    .fetch_all(&mut seed.conn)
    .await
    .expect("read connections");

    let env = rotate_env(&db, admin_url_for(&db), &[NEW, OLD]);
    let r = run(&env, &["rotate-keys"]);
    assert!(
        !r.success(),
        "rotate-keys accepted a moved ciphertext\n{}",
        r.output()
    );
    for needle in ["crm_connections", &target.to_string(), "access_token_enc"] {
        assert!(
            r.stderr.contains(needle),
            "`{needle}` not named\n{}",
            r.output()
        );
    }
    for s in &seed.stored {
        assert!(!r.output().contains(&s.plaintext), "{}", r.output());
    }
    // The failing batch was rolled back: both connections are exactly as they were.
    let after: Vec<(Uuid, Vec<u8>, Vec<u8>)> = sqlx::query_as(
        "SELECT id, access_token_enc, refresh_token_enc FROM crm_connections ORDER BY id",
    )
    .fetch_all(&mut seed.conn)
    .await
    .expect("read connections");
    assert_eq!(before, after);
    // The credentials (an earlier, complete batch) are under the new key.
    let credentials = &seed.stored[0];
    assert!(!ring(&[NEW, OLD]).needs_rotation(&blob(&mut seed.conn, credentials).await));
}

#[tokio::test]
async fn rotate_keys_needs_a_key_and_the_owner_role() {
    let db = fresh_database().await;

    let mut env = rotate_env(&db, admin_url_for(&db), &[NEW]);
    env.remove("ENCRYPTION_KEYS");
    let r = run(&env, &["rotate-keys"]);
    assert!(!r.success(), "{}", r.output());
    assert!(r.stderr.contains("ENCRYPTION_KEYS"), "{}", r.output());

    // The runtime role sees no org's rows: it must not report "nothing to do".
    let env = rotate_env(&db, runtime_url_for(&db), &[NEW, OLD]);
    let r = run(&env, &["rotate-keys"]);
    assert!(
        !r.success(),
        "rotate-keys ran as the runtime role\n{}",
        r.output()
    );
    assert!(r.stderr.contains("owner"), "{}", r.output());
}

/// A table owner that is not a superuser (as in production) sees every org's secrets
/// only through the owner policies; 150 connections take two batches.
#[tokio::test]
async fn rotate_keys_works_for_an_owner_that_is_not_a_superuser() {
    // The template database exists (and with it the runtime roles) before this owner
    // migrates its own database.
    let _ = fresh_database().await;
    let suffix = Uuid::new_v4().simple().to_string();
    let owner = format!("agents_api_owner_{}", &suffix[..12]);
    let password = Uuid::new_v4().simple().to_string();
    let db = format!(
        "agents_api_t_{}_{suffix}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    );
    let mut admin = PgConnection::connect(&admin_url()).await.expect("admin");
    exec(
        &mut admin,
        &format!("CREATE ROLE {owner} LOGIN CREATEROLE PASSWORD '{password}'"),
    )
    .await;
    exec(&mut admin, &format!("CREATE DATABASE {db} OWNER {owner}")).await;
    let mut owner_url = url::Url::parse(&admin_url_for(&db)).expect("a URL");
    let _ = owner_url.set_username(&owner);
    let _ = owner_url.set_password(Some(&password));
    let owner_url = owner_url.to_string();

    let env = rotate_env(&db, owner_url.clone(), &[NEW, OLD]);
    let r = run(&env, &["migrate"]);
    assert!(r.success(), "the owner cannot migrate\n{}", r.output());

    let old = ring(&[OLD]);
    let mut seed = Seeder::connect(&db).await;
    let org = seed.org().await;
    seed.credentials(org, &old).await;
    for _ in 0..150 {
        seed.connection(org, &old, false).await;
    }

    let r = run(&env, &["rotate-keys"]);
    assert_report(&r, 151, 151, 0);
    assert_all_under_new_key(&mut seed.conn, &seed.stored).await;
    let r = run(&env, &["rotate-keys"]);
    assert_report(&r, 0, 0, 151);

    drop(seed);
    exec(&mut admin, &format!("DROP DATABASE {db} WITH (FORCE)")).await;
    exec(&mut admin, &format!("DROP ROLE {owner}")).await;
}
