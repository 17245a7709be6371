//! Bearer-token authentication: JWT verification (HS256 with the shared secret, RS256 and
//! ES256 through a cached JWKS) and the `AuthUser` extractor.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use secrecy::ExposeSecret;
use serde_json::Value;
use tokio::sync::{Mutex, RwLock};
use uuid::Uuid;

use crate::config::Config;
use crate::http::error::ApiError;
use crate::http::request_id;
use crate::state::AppState;

pub use crate::domain::AuthUser;
use crate::domain::UserId;

/// Refetching the key set on every unknown `kid` would let anyone with garbage tokens
/// make us hammer the identity provider.
const JWKS_MIN_REFETCH: Duration = Duration::from_secs(30);
const JWKS_MAX_AGE: Duration = Duration::from_secs(600);
const LEEWAY_SECS: u64 = 30;
/// A verified token is taken as verified again for at most this long (and never past its
/// `exp`): a key removed from the JWKS stops its tokens within this time.
const VERIFIED_FOR: Duration = Duration::from_secs(60);
/// Tokens remembered as verified, at most; past it, expired ones go, then all.
const VERIFIED_TOKENS: usize = 10_000;

pub struct JwtVerifier {
    hs256: Option<DecodingKey>,
    jwks: Option<Jwks>,
    /// Built once: every token is checked against the same rules, per algorithm.
    hs256_rules: Validation,
    rs256_rules: Validation,
    es256_rules: Validation,
    /// Every request of a client carries the same token; verifying it (signature, JSON
    /// claims) was ~7 % of the list route's server time (`bench/profile.sh`). Keyed by
    /// the whole token, signature included, so only the exact bytes once verified hit.
    verified: std::sync::Mutex<HashMap<Box<str>, Verified>>,
}

#[derive(Clone)]
struct Verified {
    user: AuthUser,
    /// Unix seconds until which the token is taken as verified without checking again.
    until: u64,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

struct Jwks {
    url: url::Url,
    min_refetch: Duration,
    http: reqwest::Client,
    keys: RwLock<CachedKeys>,
    refetch: Mutex<()>,
}

#[derive(Default)]
struct CachedKeys {
    by_kid: HashMap<String, (Algorithm, DecodingKey)>,
    fetched_at: Option<Instant>,
    last_attempt: Option<Instant>,
}

impl CachedKeys {
    fn fresh(&self, kid: &str) -> Option<(Algorithm, DecodingKey)> {
        let fresh = self.fetched_at.is_some_and(|t| t.elapsed() < JWKS_MAX_AGE);
        if fresh {
            self.by_kid.get(kid).cloned()
        } else {
            None
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the token is malformed")]
    Malformed,
    #[error("the token's algorithm is not accepted")]
    Algorithm,
    #[error("the token's signing key is unknown")]
    UnknownKey,
    #[error("the token is invalid: {0}")]
    Invalid(String),
    #[error("the token's subject is not a user id")]
    Subject,
}

impl JwtVerifier {
    pub fn from_config(config: &Config) -> anyhow::Result<JwtVerifier> {
        JwtVerifier::with_min_refetch(config, JWKS_MIN_REFETCH)
    }

    /// `min_refetch` is the shortest interval between two JWKS fetches caused by unknown
    /// key ids (tests shorten it).
    pub fn with_min_refetch(config: &Config, min_refetch: Duration) -> anyhow::Result<JwtVerifier> {
        let jwks = match &config.jwt_jwks_url {
            Some(url) => Some(Jwks {
                url: url.clone(),
                min_refetch,
                http: reqwest::Client::builder()
                    .connect_timeout(Duration::from_secs(3))
                    .timeout(Duration::from_secs(5))
                    .build()?,
                keys: RwLock::new(CachedKeys::default()),
                refetch: Mutex::new(()),
            }),
            None => None,
        };
        Ok(JwtVerifier {
            hs256: config
                .jwt_secret
                .as_ref()
                .map(|s| DecodingKey::from_secret(s.expose_secret().as_bytes())),
            jwks,
            hs256_rules: rules(config, Algorithm::HS256),
            rs256_rules: rules(config, Algorithm::RS256),
            es256_rules: rules(config, Algorithm::ES256),
            verified: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// The token's user, when the token is valid now.
    pub async fn verify(&self, token: &str) -> Result<AuthUser, TokenError> {
        let now = unix_now();
        if let Some(hit) = self.remembered(token, now) {
            return Ok(hit);
        }
        let (user, exp) = self.verify_now(token).await?;
        let until = exp
            .saturating_add(LEEWAY_SECS)
            .min(now + VERIFIED_FOR.as_secs());
        let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if verified.len() >= VERIFIED_TOKENS {
            verified.retain(|_, v| v.until > now);
            if verified.len() >= VERIFIED_TOKENS {
                verified.clear();
            }
        }
        let entry = Verified {
            user: user.clone(),
            until,
        };
        verified.insert(token.into(), entry);
        Ok(user)
    }

    fn remembered(&self, token: &str, now: u64) -> Option<AuthUser> {
        let verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        verified
            .get(token)
            .filter(|v| now < v.until)
            .map(|v| v.user.clone())
    }

    /// Verifies the token's signature and claims: its user and `exp`.
    async fn verify_now(&self, token: &str) -> Result<(AuthUser, u64), TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        // The algorithm is pinned by the key that verifies it, never taken from the
        // token alone: HS256 only with our secret, RS256/ES256 only with a JWKS key.
        let claims: Value = match header.alg {
            Algorithm::HS256 => {
                let key = self.hs256.as_ref().ok_or(TokenError::Algorithm)?;
                decode(token, key, &self.hs256_rules)?
            }
            Algorithm::RS256 | Algorithm::ES256 => {
                let jwks = self.jwks.as_ref().ok_or(TokenError::Algorithm)?;
                let kid = header.kid.as_deref().ok_or(TokenError::UnknownKey)?;
                let (alg, key) = jwks.key(kid).await.ok_or(TokenError::UnknownKey)?;
                if alg != header.alg {
                    return Err(TokenError::Algorithm);
                }
                let rules = match alg {
                    Algorithm::RS256 => &self.rs256_rules,
                    _ => &self.es256_rules,
                };
                decode(token, &key, rules)?
            }
            _ => return Err(TokenError::Algorithm),
        };
        check_claims(&claims)?;
        // Only the hyphenated form: `Uuid::parse_str` also takes `urn:uuid:…`, which
        // PostgreSQL's `::uuid` (in the RLS policies) refuses.
        let id = claims
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| s.len() == 36)
            .and_then(|s| Uuid::parse_str(s).ok())
            .ok_or(TokenError::Subject)?;
        let email = claims
            .get("email")
            .and_then(Value::as_str)
            .map(str::to_owned);
        // Required by the rules, and checked to be whole seconds by `check_claims`.
        let exp = claims.get("exp").and_then(Value::as_u64).unwrap_or(0);
        let user = AuthUser {
            id: UserId(id),
            email,
            claims: claims.to_string().into(),
        };
        Ok((user, exp))
    }
}

/// The last second of year 9999: a time claim beyond it is not a time.
const MAX_TIME_CLAIM: u64 = 253_402_300_799;

/// What the signature cannot vouch for but PostgreSQL would trip on (the claims become
/// `request.jwt.claims`, read as jsonb): U+0000 anywhere, which jsonb refuses, and time
/// claims that are not plain seconds within range. Iterative, since the claims are the
/// client's JSON.
fn check_claims(claims: &Value) -> Result<(), TokenError> {
    let invalid = |why: &str| Err(TokenError::Invalid(why.into()));
    for name in ["exp", "nbf", "iat"] {
        if let Some(value) = claims.get(name)
            && value.as_u64().is_none_or(|t| t > MAX_TIME_CLAIM)
        {
            return invalid("a time claim is out of range");
        }
    }
    let mut stack = vec![claims];
    while let Some(value) = stack.pop() {
        match value {
            Value::String(s) if s.contains('\0') => return invalid("a claim holds U+0000"),
            Value::Array(items) => stack.extend(items),
            Value::Object(map) => {
                if map.keys().any(|k| k.contains('\0')) {
                    return invalid("a claim holds U+0000");
                }
                stack.extend(map.values());
            }
            _ => {}
        }
    }
    Ok(())
}

fn rules(config: &Config, algorithm: Algorithm) -> Validation {
    let mut validation = Validation::new(algorithm);
    validation.leeway = LEEWAY_SECS;
    validation.validate_nbf = true;
    // jsonwebtoken checks `aud` and `iss` only when present unless they are required.
    let mut required = vec!["exp", "sub"];
    match config.jwt_audience.as_deref().filter(|a| !a.is_empty()) {
        Some(aud) => {
            validation.set_audience(&[aud]);
            required.push("aud");
        }
        None => validation.validate_aud = false,
    }
    if let Some(iss) = config.jwt_issuer.as_deref().filter(|i| !i.is_empty()) {
        validation.set_issuer(&[iss]);
        required.push("iss");
    }
    validation.set_required_spec_claims(&required);
    validation
}

fn decode(token: &str, key: &DecodingKey, validation: &Validation) -> Result<Value, TokenError> {
    jsonwebtoken::decode::<Value>(token, key, validation)
        .map(|data| data.claims)
        .map_err(|e| TokenError::Invalid(e.to_string()))
}

impl Jwks {
    async fn key(&self, kid: &str) -> Option<(Algorithm, DecodingKey)> {
        if let Some(found) = self.keys.read().await.fresh(kid) {
            return Some(found);
        }
        // One fetch at a time; whoever waited re-checks what the previous one brought.
        let _guard = self.refetch.lock().await;
        {
            let cache = self.keys.read().await;
            if let Some(found) = cache.fresh(kid) {
                return Some(found);
            }
            if cache
                .last_attempt
                .is_some_and(|t| t.elapsed() < self.min_refetch)
            {
                return cache.by_kid.get(kid).cloned();
            }
        }
        let fetched = self.fetch().await;
        let mut cache = self.keys.write().await;
        cache.last_attempt = Some(Instant::now());
        match fetched {
            Ok(keys) => {
                cache.by_kid = keys;
                cache.fetched_at = Some(Instant::now());
            }
            // Keep serving the keys we had until the next attempt.
            Err(e) => tracing::warn!(error = %e, "could not fetch the JWKS"),
        }
        cache.by_kid.get(kid).cloned()
    }

    async fn fetch(&self) -> anyhow::Result<HashMap<String, (Algorithm, DecodingKey)>> {
        let set: JwkSet = self
            .http
            .get(self.url.clone())
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let Some(kid) = jwk.common.key_id.clone() else {
                continue;
            };
            let alg = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => Algorithm::RS256,
                AlgorithmParameters::EllipticCurve(_) => Algorithm::ES256,
                _ => continue,
            };
            if let Ok(key) = DecodingKey::from_jwk(jwk) {
                keys.insert(kid, (alg, key));
            }
        }
        Ok(keys)
    }
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let Some(user) = parts.extensions.get::<AuthUser>() {
            request_id::note_user(user.id);
            return Ok(user.clone());
        }
        let token = bearer_token(parts)
            .ok_or_else(|| ApiError::unauthorized("A bearer access token is required."))?;
        let user = state.jwt.verify(token).await.map_err(|e| {
            tracing::debug!(reason = %e, "access token refused");
            ApiError::unauthorized("The access token is invalid or expired.")
        })?;
        parts.extensions.insert(user.clone());
        request_id::note_user(user.id);
        Ok(user)
    }
}

pub fn bearer_token(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Signs an HS256 access token the way the auth server would, for local use
/// (`agents-api dev-token`) and tests. Production refuses it at the CLI.
pub fn mint_token(
    config: &Config,
    user: Uuid,
    email: Option<&str>,
    ttl: Duration,
) -> anyhow::Result<String> {
    let secret = config
        .jwt_secret
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("JWT_SECRET is not set"))?;
    let now = chrono::Utc::now().timestamp();
    let mut claims = serde_json::json!({
        "sub": user.to_string(),
        "role": "authenticated",
        "iat": now,
        "exp": now + ttl.as_secs() as i64,
    });
    if let Some(email) = email {
        claims["email"] = email.into();
    }
    if let Some(aud) = config.jwt_audience.as_deref().filter(|a| !a.is_empty()) {
        claims["aud"] = aud.into();
    }
    if let Some(iss) = config.jwt_issuer.as_deref().filter(|i| !i.is_empty()) {
        claims["iss"] = iss.into();
    }
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.expose_secret().as_bytes()),
    )?;
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn claims_postgres_would_trip_on_are_refused() {
        let base = json!({"sub": Uuid::nil().to_string(), "exp": 2_000_000_000u64});
        assert!(check_claims(&base).is_ok());
        for bad in [
            json!({"exp": 9_223_372_036_854_775_808u64}),
            json!({"exp": -1}),
            json!({"nbf": 1.5}),
            json!({"iat": "now"}),
            json!({"name": "a\u{0}b"}),
            json!({"nested": [{"k\u{0}": 1}]}),
        ] {
            let mut claims = base.clone();
            for (k, v) in bad.as_object().unwrap() {
                claims[k] = v.clone();
            }
            assert!(check_claims(&claims).is_err(), "{claims}");
        }
    }

    proptest! {
        // Any token text: refused or verified, never a panic (header parsing faces the
        // internet before any key is consulted).
        #[test]
        fn any_token_header_parses_or_fails(token in "\\PC{0,300}") {
            let _ = jsonwebtoken::decode_header(&token);
        }

        // Claims nested to any depth are walked without recursion.
        #[test]
        fn deep_claims_are_walked(depth in 0usize..500, nul in any::<bool>()) {
            let mut value = json!(if nul { "a\u{0}" } else { "leaf" });
            for _ in 0..depth {
                value = json!([value]);
            }
            let claims = json!({"exp": 1, "deep": value});
            prop_assert_eq!(check_claims(&claims).is_ok(), !nul);
        }
    }
}
