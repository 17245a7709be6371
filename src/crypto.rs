//! Encryption at rest of the secrets the service stores: CRM client secrets and Kommo
//! access and refresh tokens (spec §4), with the keys of `ENCRYPTION_KEYS`.
//!
//! Each value is sealed with AES-256-GCM under a random 96-bit nonce, with
//! `"{row_id}:{column}"` as associated data, so a ciphertext copied to another row or
//! another column no longer decrypts. The stored blob describes itself:
//!
//! ```text
//! [version = 1][kid length][kid bytes][nonce, 12 bytes][ciphertext + 16-byte tag]
//! ```
//!
//! The first key of the ring encrypts; every key decrypts, chosen by the id embedded in
//! the blob. Retiring a key is: put a new key first, run `agents-api rotate-keys`
//! ([`rotate_all`]), then drop the old key from `ENCRYPTION_KEYS`.
//!
//! Nothing here puts key material or plaintext in an error, a log line or a `Debug`.

use std::fmt;

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{Aead, KeyInit, Nonce, Payload};
use anyhow::Context as _;
use rand::TryRngCore as _;
use rand::rngs::OsRng;
use secrecy::zeroize::Zeroize as _;
use secrecy::{ExposeSecret, SecretString};

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::config::{Config, EncryptionKey};

/// The associated-data names of the encrypted columns (`table.column` without `_enc`).
pub const CLIENT_SECRET: &str = "crm_credentials.client_secret";
pub const ACCESS_TOKEN: &str = "crm_connections.access_token";
pub const REFRESH_TOKEN: &str = "crm_connections.refresh_token";
pub const AI_API_KEY: &str = "ai_settings.api_key";
pub const CHAT_SECRET: &str = "crm_connections.chat_secret";

/// The format byte that starts every blob; a new layout gets a new number.
const VERSION: u8 = 1;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("no encryption key configured: set ENCRYPTION_KEYS (kid:base64 of 32 random bytes)")]
    NoKey,
    #[error("the stored secret is not a ciphertext of a known format")]
    Malformed,
    #[error("the stored secret was encrypted with key `{0}`, which is not in ENCRYPTION_KEYS")]
    UnknownKey(String),
    #[error(
        "the stored secret does not decrypt with key `{0}` (it belongs to another row or column, or was altered)"
    )]
    Undecryptable(String),
    #[error("the decrypted secret is not UTF-8 text")]
    NotUtf8,
    #[error("encryption failed")]
    Encrypt,
    #[error("the operating system's random number generator failed")]
    Random,
}

/// The keys of `ENCRYPTION_KEYS`, ready to use: the first encrypts, all decrypt.
#[derive(Clone)]
pub struct KeyRing {
    keys: Vec<RingKey>,
}

#[derive(Clone)]
struct RingKey {
    id: String,
    cipher: Aes256Gcm,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|k| k.id.as_str()).collect();
        write!(f, "KeyRing({} [REDACTED])", ids.join(", "))
    }
}

impl KeyRing {
    /// A ring of `keys`, the first one active. Errors when there is no key: a caller that
    /// stores secrets cannot do without one.
    pub fn new(keys: &[EncryptionKey]) -> Result<KeyRing, CryptoError> {
        if keys.is_empty() {
            return Err(CryptoError::NoKey);
        }
        let keys = keys
            .iter()
            .map(|k| RingKey {
                id: k.id.clone(),
                cipher: Aes256Gcm::new(k.key.expose_secret().into()),
            })
            .collect();
        Ok(KeyRing { keys })
    }

    pub fn from_config(config: &Config) -> Result<KeyRing, CryptoError> {
        KeyRing::new(&config.encryption_keys)
    }

    /// The id of the key new ciphertexts are made with.
    pub fn active_key_id(&self) -> &str {
        &self.active().id
    }

    fn active(&self) -> &RingKey {
        // `new` refuses an empty ring.
        &self.keys[0]
    }

    /// Seals `plaintext` for `column` (e.g. [`ACCESS_TOKEN`]) of the row `row_id`.
    pub fn encrypt(
        &self,
        plaintext: &[u8],
        row_id: Uuid,
        column: &str,
    ) -> Result<Vec<u8>, CryptoError> {
        let key = self.active();
        let mut nonce = [0u8; NONCE_LEN];
        OsRng
            .try_fill_bytes(&mut nonce)
            .map_err(|_| CryptoError::Random)?;
        let aad = associated_data(row_id, column);
        let sealed = key
            .cipher
            .encrypt(
                &Nonce::<Aes256Gcm>::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| CryptoError::Encrypt)?;
        // Config limits ids to 32 ASCII characters; the length byte holds up to 255.
        let kid_len = u8::try_from(key.id.len()).map_err(|_| CryptoError::Encrypt)?;
        let mut blob = Vec::with_capacity(2 + key.id.len() + NONCE_LEN + sealed.len());
        blob.push(VERSION);
        blob.push(kid_len);
        blob.extend_from_slice(key.id.as_bytes());
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&sealed);
        Ok(blob)
    }

    /// Opens a blob made by [`KeyRing::encrypt`] for the same row and column, with the
    /// key whose id it carries.
    pub fn decrypt(
        &self,
        blob: &[u8],
        row_id: Uuid,
        column: &str,
    ) -> Result<SecretString, CryptoError> {
        let envelope = Envelope::parse(blob)?;
        let key = self
            .keys
            .iter()
            .find(|k| k.id == envelope.kid)
            .ok_or_else(|| CryptoError::UnknownKey(envelope.kid.to_string()))?;
        let aad = associated_data(row_id, column);
        let mut plaintext = key
            .cipher
            .decrypt(
                &Nonce::<Aes256Gcm>::from(envelope.nonce),
                Payload {
                    msg: envelope.sealed,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| CryptoError::Undecryptable(key.id.clone()))?;
        // Copied into the secret's own allocation; the working buffer is wiped either way.
        let secret = std::str::from_utf8(&plaintext)
            .map(SecretString::from)
            .map_err(|_| CryptoError::NotUtf8);
        plaintext.zeroize();
        secret
    }

    /// Whether `blob` was made with a key other than the active one (or in an older or
    /// unreadable format), so that `rotate-keys` should re-encrypt it.
    pub fn needs_rotation(&self, blob: &[u8]) -> bool {
        match Envelope::parse(blob) {
            Ok(envelope) => envelope.kid != self.active_key_id(),
            Err(_) => true,
        }
    }
}

fn associated_data(row_id: Uuid, column: &str) -> String {
    format!("{row_id}:{column}")
}

/// The parts of a stored blob, borrowed from it.
struct Envelope<'a> {
    kid: &'a str,
    nonce: [u8; NONCE_LEN],
    sealed: &'a [u8],
}

impl<'a> Envelope<'a> {
    fn parse(blob: &'a [u8]) -> Result<Envelope<'a>, CryptoError> {
        let (&version, rest) = blob.split_first().ok_or(CryptoError::Malformed)?;
        if version != VERSION {
            return Err(CryptoError::Malformed);
        }
        let (&kid_len, rest) = rest.split_first().ok_or(CryptoError::Malformed)?;
        let kid_len = usize::from(kid_len);
        if kid_len == 0 || rest.len() < kid_len + NONCE_LEN + TAG_LEN {
            return Err(CryptoError::Malformed);
        }
        let (kid, rest) = rest.split_at(kid_len);
        // Only ids that `ENCRYPTION_KEYS` could hold, so an error never echoes odd bytes.
        let kid = std::str::from_utf8(kid)
            .ok()
            .filter(|id| {
                id.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            })
            .ok_or(CryptoError::Malformed)?;
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let nonce = <[u8; NONCE_LEN]>::try_from(nonce).map_err(|_| CryptoError::Malformed)?;
        Ok(Envelope { kid, nonce, sealed })
    }
}

// ---------------------------------------------------------------------------------------
// rotate-keys
// ---------------------------------------------------------------------------------------

/// Rows locked and rewritten per transaction.
const BATCH: i64 = 100;

/// The encrypted columns of one table. Both statements are fixed text: the secrets of a
/// row travel as one `bytea[]`, in the order of `columns`.
struct SecretTable {
    table: &'static str,
    /// `(stored column, associated-data name)`.
    columns: &'static [(&'static str, &'static str)],
    /// `$1` the last id of the previous batch (NULL at first), `$2` the batch size.
    select: &'static str,
    /// `$1` the row id, `$2` the new values.
    update: &'static str,
}

const SECRET_TABLES: &[SecretTable] = &[
    SecretTable {
        table: "crm_credentials",
        columns: &[("client_secret_enc", CLIENT_SECRET)],
        select: "SELECT id, ARRAY[client_secret_enc] AS secrets FROM crm_credentials
                 WHERE $1::uuid IS NULL OR id > $1
                 ORDER BY id LIMIT $2 FOR UPDATE",
        update: "UPDATE crm_credentials SET client_secret_enc = $2[1] WHERE id = $1",
    },
    SecretTable {
        table: "crm_connections",
        columns: &[
            ("access_token_enc", ACCESS_TOKEN),
            ("refresh_token_enc", REFRESH_TOKEN),
            ("chat_secret_enc", CHAT_SECRET),
        ],
        select: "SELECT id, ARRAY[access_token_enc, refresh_token_enc, chat_secret_enc] AS secrets
                 FROM crm_connections
                 WHERE ($1::uuid IS NULL OR id > $1)
                   AND (access_token_enc IS NOT NULL OR refresh_token_enc IS NOT NULL
                        OR chat_secret_enc IS NOT NULL)
                 ORDER BY id LIMIT $2 FOR UPDATE",
        update: "UPDATE crm_connections SET access_token_enc = $2[1], refresh_token_enc = $2[2],
                        chat_secret_enc = $2[3]
                 WHERE id = $1",
    },
    SecretTable {
        table: "ai_settings",
        columns: &[("api_key_enc", AI_API_KEY)],
        select: "SELECT id, ARRAY[api_key_enc] AS secrets FROM ai_settings
                 WHERE ($1::uuid IS NULL OR id > $1) AND api_key_enc IS NOT NULL
                 ORDER BY id LIMIT $2 FOR UPDATE",
        update: "UPDATE ai_settings SET api_key_enc = $2[1] WHERE id = $1",
    },
];

/// What `rotate-keys` did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RotationReport {
    /// Secrets re-encrypted with the active key.
    pub reencrypted: u64,
    /// Rows rewritten (a connection holds up to two secrets).
    pub rows: u64,
    /// Secrets that were already under the active key.
    pub already_current: u64,
}

impl fmt::Display for RotationReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rotate-keys: re-encrypted {} secret(s) in {} row(s); {} already current",
            self.reencrypted, self.rows, self.already_current
        )
    }
}

#[derive(sqlx::FromRow)]
struct SecretRow {
    id: Uuid,
    secrets: Vec<Option<Vec<u8>>>,
}

/// `agents-api rotate-keys`: re-encrypts every stored secret of every org that is not
/// under the active key. It connects as the owner of the tables (DATABASE_MIGRATION_URL),
/// whose `*_definer` policies let it see all orgs, and works in transactions of
/// [`BATCH`] rows locked `FOR UPDATE`, so a server writing at the same time is never
/// overwritten. A secret that no key opens stops it with an error naming the table, the
/// row and the column; that batch is rolled back (earlier batches are complete and
/// stay), and a rerun after the fix resumes where it matters.
pub async fn rotate_all(config: &Config) -> anyhow::Result<RotationReport> {
    let ring = KeyRing::from_config(config)?;
    let pool = crate::db::owner_pool(config, "rotate-keys").await?;
    let outcome = rotate_with(&pool, &ring).await;
    pool.close().await;
    outcome
}

/// [`rotate_all`] over an open pool of the owner role.
async fn rotate_with(pool: &PgPool, ring: &KeyRing) -> anyhow::Result<RotationReport> {
    check_sees_every_org(&mut *pool.acquire().await?).await?;
    let mut report = RotationReport::default();
    for table in SECRET_TABLES {
        let mut after: Option<Uuid> = None;
        loop {
            let mut tx = pool.begin().await?;
            let rows: Vec<SecretRow> = sqlx::query_as(table.select)
                .bind(after)
                .bind(BATCH)
                .fetch_all(&mut *tx)
                .await
                .with_context(|| format!("reading {}", table.table))?;
            let Some(last) = rows.last() else {
                tx.commit().await?;
                break;
            };
            after = Some(last.id);
            let mut batch = RotationReport::default();
            for row in &rows {
                if let Some(new_values) = rotate_row(ring, table, row, &mut batch)? {
                    sqlx::query(table.update)
                        .bind(row.id)
                        .bind(new_values)
                        .execute(&mut *tx)
                        .await
                        .with_context(|| format!("rewriting {} row {}", table.table, row.id))?;
                }
            }
            tx.commit().await?;
            report.reencrypted += batch.reencrypted;
            report.rows += batch.rows;
            report.already_current += batch.already_current;
        }
    }
    Ok(report)
}

/// The row's new values when at least one of its secrets was re-encrypted.
fn rotate_row(
    ring: &KeyRing,
    table: &SecretTable,
    row: &SecretRow,
    counts: &mut RotationReport,
) -> anyhow::Result<Option<Vec<Option<Vec<u8>>>>> {
    let mut values = row.secrets.clone();
    let mut changed = false;
    for (value, (stored, aad_name)) in values.iter_mut().zip(table.columns) {
        let Some(blob) = value else { continue };
        let secret = ring.decrypt(blob, row.id, aad_name).map_err(|e| {
            anyhow::anyhow!(
                "{} row {}, column {stored}: {e}; this batch was rolled back",
                table.table,
                row.id
            )
        })?;
        if !ring.needs_rotation(blob) {
            counts.already_current += 1;
            continue;
        }
        *blob = ring.encrypt(secret.expose_secret().as_bytes(), row.id, aad_name)?;
        counts.reencrypted += 1;
        changed = true;
    }
    if changed {
        counts.rows += 1;
        Ok(Some(values))
    } else {
        Ok(None)
    }
}

/// Refuses a role that row-level security would hold to a subset of the rows (the runtime
/// role, or an owner whose database lacks the `*_definer` policies): it would report
/// "nothing to do" while leaving secrets under the old key.
async fn check_sees_every_org(conn: &mut PgConnection) -> anyhow::Result<()> {
    let facts = sqlx::query!(
        r#"SELECT r.rolname::text AS "role!", r.rolsuper OR r.rolbypassrls AS "bypasses!",
                  pg_has_role(current_user, c.relowner, 'MEMBER') AS "owns!",
                  (SELECT count(*) FROM pg_policies p
                   WHERE p.schemaname = 'public'
                     AND p.policyname IN ('crm_credentials_definer', 'crm_connections_definer'))
                    AS "policies!"
           FROM pg_roles r, pg_class c
           WHERE r.rolname = current_user AND c.oid = 'public.crm_credentials'::regclass"#
    )
    .fetch_one(conn)
    .await
    .context("checking the role of DATABASE_MIGRATION_URL (are migrations applied?)")?;
    let role = facts.role;
    if facts.bypasses || (facts.owns && facts.policies == 2) {
        return Ok(());
    }
    anyhow::bail!(
        "the DATABASE_MIGRATION_URL role `{role}` cannot see every org's secrets: rotate-keys must \
         run as the owner of the tables, after `agents-api migrate`"
    )
}

/// A secret for a URL or a form field: 32 random bytes as unpadded base64url
/// (43 characters), and the SHA-256 digest under which it is stored (webhook tokens,
/// OAuth states). The secret itself is never stored.
pub fn new_url_token() -> (String, Vec<u8>) {
    use base64::Engine as _;
    use rand::RngCore as _;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let digest = token_digest(&token);
    (token, digest)
}

/// The stored form of a URL token.
pub fn token_digest(token: &str) -> Vec<u8> {
    use sha2::Digest as _;
    sha2::Sha256::digest(token.as_bytes()).to_vec()
}

#[cfg(test)]
mod tests {
    use secrecy::SecretBox;

    use super::*;

    fn key(id: &str, byte: u8) -> EncryptionKey {
        EncryptionKey {
            id: id.to_string(),
            key: SecretBox::new(Box::new([byte; 32])),
        }
    }

    fn ring(keys: &[(&str, u8)]) -> KeyRing {
        let keys: Vec<EncryptionKey> = keys.iter().map(|(id, b)| key(id, *b)).collect();
        KeyRing::new(&keys).expect("ring")
    }

    const TOKEN: &str = "kommo-access-token-0123456789abcdef";

    #[test]
    fn round_trip() {
        let ring = ring(&[("k1", 1)]);
        let row = Uuid::now_v7();
        let blob = ring.encrypt(TOKEN.as_bytes(), row, ACCESS_TOKEN).unwrap();
        let back = ring.decrypt(&blob, row, ACCESS_TOKEN).unwrap();
        assert_eq!(back.expose_secret(), TOKEN);
    }

    #[test]
    fn an_empty_plaintext_round_trips() {
        let ring = ring(&[("k1", 1)]);
        let row = Uuid::now_v7();
        let blob = ring.encrypt(b"", row, CLIENT_SECRET).unwrap();
        assert_eq!(
            ring.decrypt(&blob, row, CLIENT_SECRET)
                .unwrap()
                .expose_secret(),
            ""
        );
    }

    #[test]
    fn the_blob_describes_itself() {
        let ring = ring(&[("primary-2026", 1)]);
        let blob = ring
            .encrypt(TOKEN.as_bytes(), Uuid::now_v7(), ACCESS_TOKEN)
            .unwrap();
        assert_eq!(blob[0], VERSION);
        assert_eq!(usize::from(blob[1]), "primary-2026".len());
        assert_eq!(&blob[2..14], b"primary-2026");
        assert_eq!(blob.len(), 2 + 12 + NONCE_LEN + TOKEN.len() + TAG_LEN);
    }

    #[test]
    fn another_row_id_fails() {
        let ring = ring(&[("k1", 1)]);
        let blob = ring
            .encrypt(TOKEN.as_bytes(), Uuid::now_v7(), ACCESS_TOKEN)
            .unwrap();
        let err = ring
            .decrypt(&blob, Uuid::now_v7(), ACCESS_TOKEN)
            .unwrap_err();
        assert!(matches!(err, CryptoError::Undecryptable(_)), "{err}");
    }

    #[test]
    fn another_column_fails() {
        let ring = ring(&[("k1", 1)]);
        let row = Uuid::now_v7();
        let blob = ring.encrypt(TOKEN.as_bytes(), row, ACCESS_TOKEN).unwrap();
        let err = ring.decrypt(&blob, row, REFRESH_TOKEN).unwrap_err();
        assert!(matches!(err, CryptoError::Undecryptable(_)), "{err}");
    }

    #[test]
    fn any_tampered_byte_fails() {
        let ring = ring(&[("k1", 1)]);
        let row = Uuid::now_v7();
        let blob = ring.encrypt(TOKEN.as_bytes(), row, ACCESS_TOKEN).unwrap();
        for i in 0..blob.len() {
            let mut tampered = blob.clone();
            tampered[i] ^= 0x01;
            assert!(
                ring.decrypt(&tampered, row, ACCESS_TOKEN).is_err(),
                "flipping byte {i} went unnoticed"
            );
        }
        assert!(
            ring.decrypt(&blob[..blob.len() - 1], row, ACCESS_TOKEN)
                .is_err()
        );
        assert!(ring.decrypt(&[], row, ACCESS_TOKEN).is_err());
        assert!(ring.decrypt(TOKEN.as_bytes(), row, ACCESS_TOKEN).is_err());
    }

    #[test]
    fn an_unknown_key_id_fails_and_is_named() {
        let old = ring(&[("old", 1)]);
        let row = Uuid::now_v7();
        let blob = old.encrypt(TOKEN.as_bytes(), row, ACCESS_TOKEN).unwrap();
        let err = ring(&[("new", 2)])
            .decrypt(&blob, row, ACCESS_TOKEN)
            .unwrap_err();
        assert!(
            matches!(&err, CryptoError::UnknownKey(kid) if kid == "old"),
            "{err}"
        );
    }

    #[test]
    fn the_same_id_with_other_key_bytes_fails() {
        let row = Uuid::now_v7();
        let blob = ring(&[("k1", 1)])
            .encrypt(TOKEN.as_bytes(), row, ACCESS_TOKEN)
            .unwrap();
        assert!(
            ring(&[("k1", 9)])
                .decrypt(&blob, row, ACCESS_TOKEN)
                .is_err()
        );
    }

    #[test]
    fn two_encryptions_of_one_plaintext_differ() {
        let ring = ring(&[("k1", 1)]);
        let row = Uuid::now_v7();
        let a = ring.encrypt(TOKEN.as_bytes(), row, ACCESS_TOKEN).unwrap();
        let b = ring.encrypt(TOKEN.as_bytes(), row, ACCESS_TOKEN).unwrap();
        assert_ne!(a, b);
        let nonce = 2 + 2..2 + 2 + NONCE_LEN;
        assert_ne!(a[nonce.clone()], b[nonce]);
    }

    #[test]
    fn an_old_key_second_in_the_ring_still_decrypts() {
        let row = Uuid::now_v7();
        let blob = ring(&[("old", 1)])
            .encrypt(TOKEN.as_bytes(), row, REFRESH_TOKEN)
            .unwrap();
        let rotated = ring(&[("new", 2), ("old", 1)]);
        assert_eq!(rotated.active_key_id(), "new");
        assert_eq!(
            rotated
                .decrypt(&blob, row, REFRESH_TOKEN)
                .unwrap()
                .expose_secret(),
            TOKEN
        );
        assert!(rotated.needs_rotation(&blob));
        let fresh = rotated
            .encrypt(TOKEN.as_bytes(), row, REFRESH_TOKEN)
            .unwrap();
        assert!(!rotated.needs_rotation(&fresh));
        assert_eq!(
            ring(&[("new", 2)])
                .decrypt(&fresh, row, REFRESH_TOKEN)
                .unwrap()
                .expose_secret(),
            TOKEN
        );
    }

    #[test]
    fn garbage_needs_rotation() {
        let ring = ring(&[("k1", 1)]);
        assert!(ring.needs_rotation(b""));
        assert!(ring.needs_rotation(TOKEN.as_bytes()));
    }

    #[test]
    fn the_ciphertext_holds_no_plaintext() {
        let ring = ring(&[("k1", 1)]);
        let row = Uuid::now_v7();
        let blob = ring.encrypt(TOKEN.as_bytes(), row, ACCESS_TOKEN).unwrap();
        // No window of 4 plaintext bytes survives anywhere in the blob.
        for window in TOKEN.as_bytes().windows(4) {
            assert!(
                !blob.windows(4).any(|w| w == window),
                "plaintext bytes {:?} appear in the ciphertext",
                String::from_utf8_lossy(window)
            );
        }
    }

    #[test]
    fn an_empty_ring_is_refused() {
        assert!(matches!(KeyRing::new(&[]), Err(CryptoError::NoKey)));
    }

    #[test]
    fn nothing_secret_in_debug_or_errors() {
        let ring = ring(&[("k1", 0xAB)]);
        let debug = format!("{ring:?}");
        assert!(
            debug.contains("k1") && !debug.contains("171") && !debug.contains("ab"),
            "{debug}"
        );
        let row = Uuid::now_v7();
        let blob = ring.encrypt(TOKEN.as_bytes(), row, ACCESS_TOKEN).unwrap();
        let err = ring
            .decrypt(&blob, Uuid::now_v7(), ACCESS_TOKEN)
            .unwrap_err();
        let text = format!("{err} {err:?}");
        assert!(!text.contains(TOKEN), "{text}");
    }

    #[test]
    fn a_non_utf8_plaintext_is_an_error() {
        let ring = ring(&[("k1", 1)]);
        let row = Uuid::now_v7();
        let blob = ring.encrypt(&[0xff, 0xfe], row, ACCESS_TOKEN).unwrap();
        assert!(matches!(
            ring.decrypt(&blob, row, ACCESS_TOKEN),
            Err(CryptoError::NotUtf8)
        ));
    }

    #[test]
    fn the_report_reads_as_documented() {
        let report = RotationReport {
            reencrypted: 3,
            rows: 2,
            already_current: 1,
        };
        assert_eq!(
            report.to_string(),
            "rotate-keys: re-encrypted 3 secret(s) in 2 row(s); 1 already current"
        );
    }
}
