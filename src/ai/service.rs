//! The model provider as the rest of the service uses it: which provider an org gets (its
//! own settings over the deployment's), the per-org call rate shared through Redis, and
//! the tokens each call used, recorded per org and day.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use uuid::Uuid;

use crate::ai::{
    AiClient, AiError, CallGate, ChatRequest, ChatResponse, Embeddings, Provider, Usage,
};
use crate::config::{AppEnv, Config};
use crate::crypto::{self, KeyRing};
use crate::db::Db;
use crate::db::ai::AiSettings;
use crate::domain::OrgId;
use crate::gcra::{Gcra, Mode, Rate};
use crate::redis_conn::RedisConn;

/// The longest the gate waits for an org's turn before the call gives up as rate
/// limited (a job then reschedules; a chat says so).
const MAX_GATE_WAIT: Duration = Duration::from_secs(10);

/// `AI_REQUESTS_PER_MIN` per org, one budget for every replica (Redis GCRA).
pub struct RedisGate {
    gcra: Gcra,
    rate: Rate,
}

impl RedisGate {
    pub fn new(redis: RedisConn, per_minute: u32) -> RedisGate {
        RedisGate {
            gcra: Gcra::new(redis),
            rate: Rate::per_minute(per_minute),
        }
    }
}

impl CallGate for RedisGate {
    fn wait_turn(
        &self,
        org: Uuid,
    ) -> Pin<Box<dyn Future<Output = Result<(), AiError>> + Send + '_>> {
        Box::pin(async move {
            let key = format!("ai-calls:{org}");
            let mut waited = Duration::ZERO;
            loop {
                let outcome = self.gcra.take(&key, self.rate, Mode::Check).await;
                if outcome.taken {
                    return Ok(());
                }
                // Another replica may take the slot first: check again after the wait.
                if waited + outcome.wait > MAX_GATE_WAIT {
                    crate::metrics::RATE_LIMITED
                        .with_label_values(&["ai"])
                        .inc();
                    return Err(AiError::RateLimited {
                        retry_after: Some(outcome.wait),
                    });
                }
                let pause = outcome.wait.max(Duration::from_millis(5));
                tokio::time::sleep(pause).await;
                waited += pause;
            }
        })
    }
}

/// Why an org's provider could not be determined.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error(transparent)]
    Db(#[from] crate::db::Error),
    #[error(transparent)]
    Ai(#[from] AiError),
}

impl From<sqlx::Error> for LookupError {
    fn from(e: sqlx::Error) -> LookupError {
        LookupError::Db(e.into())
    }
}

/// The deployment's provider (`AI_BASE_URL`, `AI_API_KEY`), when there is one.
struct Deployment {
    base_url: url::Url,
    api_key: Option<SecretString>,
}

pub struct Ai {
    client: AiClient,
    deployment: Option<Deployment>,
    chat_model: String,
    embedding_model: String,
    dimensions: u32,
    daily_token_quota: u64,
    production: bool,
    keys: Option<Arc<KeyRing>>,
}

impl std::fmt::Debug for Ai {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ai")
            .field("deployment_configured", &self.deployment.is_some())
            .field("chat_model", &self.chat_model)
            .field("embedding_model", &self.embedding_model)
            .field("dimensions", &self.dimensions)
            .finish_non_exhaustive()
    }
}

impl Ai {
    pub fn from_config(config: &Config, redis: RedisConn) -> Result<Ai, AiError> {
        let gate = Arc::new(RedisGate::new(redis, config.ai_requests_per_min));
        Ok(Ai {
            client: AiClient::new(config.ai_timeout, gate)?,
            deployment: config.ai.as_ref().map(|ai| Deployment {
                base_url: ai.base_url.clone(),
                api_key: ai.api_key.clone(),
            }),
            chat_model: config.ai_chat_model.clone(),
            embedding_model: config.ai_embedding_model.clone(),
            dimensions: config.ai_embedding_dimensions,
            daily_token_quota: config.ai_daily_token_quota,
            production: config.app_env == AppEnv::Production,
            keys: KeyRing::from_config(config).ok().map(Arc::new),
        })
    }

    /// Other retry settings (tests shorten the backoff).
    pub fn with_retries(mut self, attempts: u32, base_backoff: Duration) -> Ai {
        self.client = self.client.with_retries(attempts, base_backoff);
        self
    }

    pub fn client(&self) -> &AiClient {
        &self.client
    }

    pub fn production(&self) -> bool {
        self.production
    }

    pub fn keys(&self) -> Result<&KeyRing, crypto::CryptoError> {
        self.keys.as_deref().ok_or(crypto::CryptoError::NoKey)
    }

    /// The vector column's size (`AI_EMBEDDING_DIMENSIONS`).
    pub fn dimensions(&self) -> u32 {
        self.dimensions
    }

    /// The provider an org's calls go to: its own base URL (with its own key only — the
    /// deployment's key never goes to a host an org chose) or the deployment's, with the
    /// org's models over the defaults. `None`: no provider at all.
    pub fn provider(&self, settings: Option<&AiSettings>) -> Result<Option<Provider>, AiError> {
        let own_key = match settings.and_then(|s| s.api_key_enc.as_deref().map(|b| (s.id, b))) {
            Some((id, blob)) => {
                let keys = self.keys.as_deref().ok_or_else(|| {
                    AiError::Invalid(
                        "the org's API key cannot be read: ENCRYPTION_KEYS is not set".into(),
                    )
                })?;
                Some(keys.decrypt(blob, id, crypto::AI_API_KEY).map_err(|e| {
                    AiError::Invalid(format!("the org's API key cannot be read: {e}"))
                })?)
            }
            None => None,
        };
        let own_url = match settings.and_then(|s| s.base_url.as_deref()) {
            Some(url) => Some(
                url::Url::parse(url)
                    .map_err(|_| AiError::Invalid("the org's provider URL is not a URL".into()))?,
            ),
            None => None,
        };
        let (base_url, api_key, public_only) = match (own_url, &self.deployment) {
            (Some(url), _) => (url, own_key, self.production),
            (None, Some(deployment)) => (
                deployment.base_url.clone(),
                own_key.or_else(|| deployment.api_key.clone()),
                false,
            ),
            (None, None) => return Ok(None),
        };
        Ok(Some(Provider {
            base_url,
            api_key,
            chat_model: settings
                .and_then(|s| s.chat_model.clone())
                .unwrap_or_else(|| self.chat_model.clone()),
            embedding_model: settings
                .and_then(|s| s.embedding_model.clone())
                .unwrap_or_else(|| self.embedding_model.clone()),
            dimensions: self.dimensions,
            public_only,
        }))
    }

    /// `provider` for the org's stored settings, read in a short transaction of its own
    /// (as the worker role: members who may not see the settings still use them). The
    /// calls that follow hold no connection.
    pub async fn provider_for(
        &self,
        db: &Db,
        org_id: OrgId,
    ) -> Result<Option<Provider>, LookupError> {
        let mut tx = db.begin_worker(org_id).await?;
        let settings = crate::db::ai::get_settings(&mut tx, org_id).await?;
        tx.commit().await?;
        Ok(self.provider(settings.as_ref())?)
    }

    /// Embeds one batch and records its tokens.
    pub async fn embed(
        &self,
        db: &Db,
        org_id: OrgId,
        provider: &Provider,
        inputs: &[String],
    ) -> Result<Embeddings, AiError> {
        let embeddings = self.client.embed(org_id.0, provider, inputs).await?;
        self.record_usage(
            db,
            org_id,
            "embeddings",
            &provider.embedding_model,
            embeddings.usage,
        )
        .await;
        Ok(embeddings)
    }

    /// One chat completion, its tokens recorded.
    pub async fn chat(
        &self,
        db: &Db,
        org_id: OrgId,
        provider: &Provider,
        request: &ChatRequest,
        kind: &str,
    ) -> Result<ChatResponse, AiError> {
        let answer = self.client.chat(org_id.0, provider, request).await?;
        let model = request.model.as_deref().unwrap_or(&provider.chat_model);
        self.record_usage(db, org_id, kind, model, answer.usage)
            .await;
        Ok(answer)
    }

    /// Adds a call's tokens to the org's day. The tokens are spent whether or not this
    /// write lands, so a failure is logged and the call's result still used. For the same
    /// reason it commits without waiting for the WAL flush (`begin_bookkeeping`): a crash
    /// of PostgreSQL may forget the last calls' tokens, while concurrent calls of one org,
    /// which update the same row, no longer queue behind each other's flush.
    pub async fn record_usage(
        &self,
        db: &Db,
        org_id: OrgId,
        kind: &str,
        model: &str,
        usage: Usage,
    ) {
        let write = async {
            let mut tx = db.begin_bookkeeping(org_id).await?;
            crate::db::ai::record_usage(
                &mut tx,
                org_id,
                kind,
                model,
                i64::from(usage.prompt_tokens),
                i64::from(usage.completion_tokens),
            )
            .await?;
            tx.commit().await?;
            Ok::<_, crate::db::Error>(())
        };
        if let Err(e) = write.await {
            tracing::warn!(error = %e, %org_id, kind, "could not record AI usage");
        }
    }

    /// Whether the org has used its `AI_DAILY_TOKEN_QUOTA` today (never, without one).
    pub async fn over_quota(&self, db: &Db, org_id: OrgId) -> Result<bool, crate::db::Error> {
        if self.daily_token_quota == 0 {
            return Ok(false);
        }
        let mut tx = db.begin_worker(org_id).await?;
        let used = crate::db::ai::tokens_today(&mut tx, org_id).await?;
        tx.commit().await?;
        Ok(u64::try_from(used).unwrap_or(0) >= self.daily_token_quota)
    }
}
