//! Kommo (amoCRM): the HTTP client, its per-account rate limit, token handling, the
//! shapes of Kommo's answers, and messages into chats through the Chats API.

pub mod chats;
pub mod client;
pub mod connect;
pub mod rate_limit;
pub mod tokens;
pub mod webhook;

pub use chats::ChatChannel;
pub use client::{KommoClient, KommoError, Lead, LeadField, NewTask, OAuthApp, TokenSet};

/// Kommo accounts live on `<subdomain>.kommo.com` or `<subdomain>.amocrm.ru`; the service
/// calls no other host, so a user-supplied domain cannot point it anywhere else (SSRF).
pub fn is_valid_base_domain(domain: &str) -> bool {
    let Some((sub, parent)) = domain.split_once('.') else {
        return false;
    };
    let sub_ok = (1..=63).contains(&sub.len())
        && sub.as_bytes()[0].is_ascii_alphanumeric()
        && sub
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    sub_ok && matches!(parent, "kommo.com" | "amocrm.ru")
}

#[cfg(test)]
mod tests {
    use super::is_valid_base_domain;

    #[test]
    fn only_kommo_and_amocrm_subdomains_pass() {
        for ok in ["acme.kommo.com", "a.amocrm.ru", "acme-2.kommo.com"] {
            assert!(is_valid_base_domain(ok), "{ok}");
        }
        for bad in [
            "kommo.com",
            "evil.com",
            "acme.kommo.com.evil.com",
            "a.b.kommo.com",
            "-acme.kommo.com",
            "ACME.kommo.com",
            "127.0.0.1",
            "acme.kommo.com:8080",
            "acme.kommo.com/path",
            "",
        ] {
            assert!(!is_valid_base_domain(bad), "{bad}");
        }
    }
}

use std::sync::Arc;

use crate::config::Config;
use crate::crypto::{CryptoError, KeyRing};
use crate::domain::{ConnectionId, ConnectionStatus, OrgId};
use crate::redis_conn::RedisConn;

/// Everything that talks to Kommo: the client (CRM API and Chats API), the keys that open
/// stored secrets, and the configuration (redirect URI, authorize URL).
#[derive(Clone)]
pub struct Kommo {
    pub client: KommoClient,
    keys: Option<Arc<KeyRing>>,
    pub config: Arc<Config>,
    /// Where connection status changes are announced (none in tools and unit tests).
    events: Option<crate::events::Publisher>,
}

impl Kommo {
    pub fn new(config: Arc<Config>, redis: RedisConn) -> anyhow::Result<Kommo> {
        let limiter = rate_limit::AccountRateLimiter::new(crate::gcra::Gcra::new(redis));
        Ok(Kommo {
            client: KommoClient::new(
                config.kommo_base_url.clone(),
                &config.kommo_chats_base_url,
                limiter,
            )?,
            // Without ENCRYPTION_KEYS the service runs, but refuses to store secrets.
            keys: KeyRing::from_config(&config).ok().map(Arc::new),
            config,
            events: None,
        })
    }

    pub fn with_events(mut self, events: crate::events::Publisher) -> Kommo {
        self.events = Some(events);
        self
    }

    /// A connection's new status as a live event, after the commit that recorded it.
    pub fn announce(&self, org_id: OrgId, connection_id: ConnectionId, status: ConnectionStatus) {
        if let Some(events) = &self.events {
            events.publish(crate::events::Event::connection(
                org_id,
                connection_id.0,
                status,
            ));
        }
    }

    pub fn keys(&self) -> Result<&KeyRing, CryptoError> {
        self.keys.as_deref().ok_or(CryptoError::NoKey)
    }
}

/// A new webhook secret: 256 random bits for the URL, and the SHA-256 digest that is all
/// the database keeps.
pub fn new_webhook_token() -> (String, Vec<u8>) {
    crate::crypto::new_url_token()
}

/// Where Kommo must send the connection's webhooks (shown to the user once).
pub fn webhook_url(config: &Config, connection_id: ConnectionId, token: &str) -> String {
    let base = config
        .public_base_url
        .as_ref()
        .map(|u| u.as_str().trim_end_matches('/').to_string())
        .unwrap_or_else(|| format!("http://{}", config.http_addr));
    format!("{base}/v1/kommo/webhooks/{connection_id}/{token}")
}
