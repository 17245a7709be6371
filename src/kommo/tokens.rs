//! Access and refresh tokens of a connection. Kommo rotates the refresh token on every
//! refresh, so refreshes of one connection run one at a time under a row lock, across
//! tasks and replicas; whoever waited behind a refresh uses its result instead of calling
//! Kommo with a refresh token that is no longer valid.

use std::future::Future;

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use secrecy::{ExposeSecret, SecretString};

use crate::crypto::{self, CryptoError};
use crate::db::crm::{ConnectionSecrets, StoredTokens};
use crate::db::{self, Db, Tx};
use crate::domain::{ConnectionId, ConnectionStatus, OrgId};
use crate::kommo::{Kommo, KommoError, OAuthApp, TokenSet};

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("no such connection")]
    NotFound,
    #[error("the connection cannot call Kommo: {0}")]
    NotConnected(String),
    #[error("Kommo refused the refresh token; reconnect the account ({0})")]
    InvalidGrant(String),
    #[error(transparent)]
    Kommo(#[from] KommoError),
    #[error("stored secrets cannot be read: {0}")]
    Crypto(#[from] CryptoError),
    #[error(transparent)]
    Db(#[from] crate::db::Error),
}

impl From<sqlx::Error> for TokenError {
    fn from(e: sqlx::Error) -> TokenError {
        TokenError::Db(e.into())
    }
}

/// Why a refresh is asked for; each tells whether it is still needed once the lock is ours.
#[derive(Debug, Clone)]
pub enum RefreshReason {
    /// Kommo refused this access token (401).
    Rejected(String),
    /// Someone asked at this time; a refresh completed since then satisfies them.
    RequestedAt(DateTime<Utc>),
    /// The access token expires before this time.
    ExpiresBefore(DateTime<Utc>),
}

impl Kommo {
    /// Encrypts a token set for the connection `id`, the row id being part of the
    /// associated data.
    pub fn seal_tokens(
        &self,
        id: ConnectionId,
        tokens: &TokenSet,
    ) -> Result<(Vec<u8>, Vec<u8>), CryptoError> {
        let keys = self.keys()?;
        Ok((
            keys.encrypt(tokens.access_token.as_bytes(), id.0, crypto::ACCESS_TOKEN)?,
            keys.encrypt(tokens.refresh_token.as_bytes(), id.0, crypto::REFRESH_TOKEN)?,
        ))
    }

    fn open(
        &self,
        blob: Option<&[u8]>,
        id: ConnectionId,
        column: &str,
    ) -> Result<Option<SecretString>, CryptoError> {
        match blob {
            Some(blob) => Ok(Some(self.keys()?.decrypt(blob, id.0, column)?)),
            None => Ok(None),
        }
    }

    /// The base domain and current access token of a connection.
    pub async fn access_token(
        &self,
        db: &Db,
        org_id: OrgId,
        connection_id: ConnectionId,
    ) -> Result<(String, SecretString), TokenError> {
        let mut tx = db.begin_worker(org_id).await?;
        let row = db::crm::secrets(&mut tx, org_id, connection_id)
            .await?
            .ok_or(TokenError::NotFound)?;
        tx.commit().await?;
        let token = self
            .open(
                row.access_token_enc.as_deref(),
                row.id,
                crypto::ACCESS_TOKEN,
            )?
            .ok_or_else(|| TokenError::NotConnected("it has no access token".into()))?;
        Ok((row.base_domain, token))
    }

    /// Runs `call` with the access token; when Kommo answers 401, refreshes once (unless
    /// another task already did) and runs it once more.
    pub async fn with_token<T, F, Fut>(
        &self,
        db: &Db,
        org_id: OrgId,
        connection_id: ConnectionId,
        call: F,
    ) -> Result<T, TokenError>
    where
        F: Fn(String, String) -> Fut,
        Fut: Future<Output = Result<T, KommoError>>,
    {
        let (domain, token) = self.access_token(db, org_id, connection_id).await?;
        match call(domain.clone(), token.expose_secret().to_string()).await {
            Err(KommoError::Unauthorized) => {
                let stale = token.expose_secret().to_string();
                self.refresh(db, org_id, connection_id, RefreshReason::Rejected(stale))
                    .await?;
                let (domain, token) = self.access_token(db, org_id, connection_id).await?;
                Ok(call(domain, token.expose_secret().to_string()).await?)
            }
            other => Ok(other?),
        }
    }

    /// Refreshes the connection's tokens if `reason` still calls for it once this task
    /// holds the row lock; returns the access token's expiry either way.
    pub async fn refresh(
        &self,
        db: &Db,
        org_id: OrgId,
        connection_id: ConnectionId,
        reason: RefreshReason,
    ) -> Result<Option<DateTime<Utc>>, TokenError> {
        let mut tx = db.begin_worker(org_id).await?;
        let row = db::crm::lock_secrets(&mut tx, org_id, connection_id)
            .await?
            .ok_or(TokenError::NotFound)?;
        if !self.still_needed(&row, &reason)? {
            tx.commit().await?;
            return Ok(row.token_expires_at);
        }
        let refresh_token = self
            .open(
                row.refresh_token_enc.as_deref(),
                row.id,
                crypto::REFRESH_TOKEN,
            )?
            .ok_or_else(|| {
                TokenError::NotConnected(
                    "it has no refresh token (a long-lived token cannot be refreshed)".into(),
                )
            })?;
        let (client_id, client_secret, redirect_uri) = self.credentials(&mut tx, org_id).await?;
        let answer = self
            .client
            .refresh(
                &row.base_domain,
                &OAuthApp {
                    client_id: &client_id,
                    client_secret: client_secret.expose_secret(),
                    redirect_uri: &redirect_uri,
                },
                refresh_token.expose_secret(),
            )
            .await;
        match answer {
            Ok(tokens) => {
                let expires_at = self.store(&mut tx, row.id, &tokens, None).await?;
                tx.commit().await?;
                tracing::info!(%connection_id, "Kommo tokens refreshed");
                Ok(Some(expires_at))
            }
            Err(KommoError::InvalidGrant(detail)) => {
                let message = format!(
                    "Kommo refused the refresh token (invalid_grant: {detail}); reconnect the account"
                );
                db::crm::mark_error(&mut tx, row.id, &message).await?;
                tx.commit().await?;
                self.announce(org_id, row.id, ConnectionStatus::Error);
                tracing::warn!(%connection_id, "Kommo refused the refresh token");
                Err(TokenError::InvalidGrant(detail))
            }
            Err(e) => Err(e.into()),
        }
    }

    fn still_needed(
        &self,
        row: &ConnectionSecrets,
        reason: &RefreshReason,
    ) -> Result<bool, TokenError> {
        Ok(match reason {
            RefreshReason::Rejected(stale) => self
                .open(
                    row.access_token_enc.as_deref(),
                    row.id,
                    crypto::ACCESS_TOKEN,
                )?
                .is_none_or(|current| current.expose_secret() == stale),
            RefreshReason::RequestedAt(at) => row.token_refreshed_at.is_none_or(|done| done < *at),
            RefreshReason::ExpiresBefore(before) => {
                row.token_expires_at.is_none_or(|expires| expires < *before)
            }
        })
    }

    /// Stores a token set Kommo just issued; returns the access token's expiry.
    pub async fn store(
        &self,
        tx: &mut Tx,
        connection_id: ConnectionId,
        tokens: &TokenSet,
        account_id: Option<i64>,
    ) -> Result<DateTime<Utc>, TokenError> {
        let (access, refresh) = self.seal_tokens(connection_id, tokens)?;
        let expires_at =
            Utc::now() + ChronoDuration::seconds(tokens.expires_in.clamp(0, 10 * 365 * 86400));
        db::crm::store_tokens(
            tx,
            connection_id,
            &StoredTokens {
                access_token_enc: &access,
                refresh_token_enc: Some(&refresh),
                expires_at: Some(expires_at),
            },
            account_id,
        )
        .await?;
        Ok(expires_at)
    }

    /// The org's Kommo integration: client id, secret and redirect URI.
    pub async fn credentials(
        &self,
        tx: &mut Tx,
        org_id: OrgId,
    ) -> Result<(String, SecretString, String), TokenError> {
        let creds = db::crm::credentials(tx, org_id, "kommo")
            .await?
            .ok_or_else(|| {
                TokenError::NotConnected("the org has no Kommo client credentials".into())
            })?;
        let secret =
            self.keys()?
                .decrypt(&creds.client_secret_enc, creds.id, crypto::CLIENT_SECRET)?;
        let redirect_uri = creds
            .redirect_uri
            .or_else(|| {
                self.config
                    .oauth_redirect_url
                    .as_ref()
                    .map(|u| u.to_string())
            })
            .ok_or_else(|| TokenError::NotConnected("no redirect URI is configured".into()))?;
        Ok((creds.client_id, secret, redirect_uri))
    }
}
