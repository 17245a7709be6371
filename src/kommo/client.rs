//! The HTTP client for one Kommo account at a time. Every call goes to the origin built
//! from a validated `base_domain`, waits for its rate-limit slot, has connect and total
//! timeouts, and waits out 429s as Kommo asks.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use oauth2::basic::BasicClient;
use oauth2::{
    AsyncHttpClient, AuthType, AuthorizationCode, ClientId, ClientSecret, HttpRequest,
    HttpResponse, RedirectUrl, RefreshToken, RequestTokenError, TokenResponse, TokenUrl,
};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::kommo::is_valid_base_domain;
use crate::kommo::rate_limit::AccountRateLimiter;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const TOTAL_TIMEOUT: Duration = Duration::from_secs(20);
/// 429s waited out per call before giving up (the job then retries later).
const MAX_RATE_LIMITED_RETRIES: usize = 3;
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);
pub const CONTACTS_PAGE_SIZE: usize = 250;
const TOKEN_PATH: &str = "/oauth2/access_token";

#[derive(Debug, thiserror::Error)]
pub enum KommoError {
    #[error("Kommo refused the access token")]
    Unauthorized,
    #[error("Kommo refused the grant: {0}")]
    InvalidGrant(String),
    #[error("Kommo is rate limiting this account")]
    RateLimited(Duration),
    #[error("Kommo answered {status}: {detail}")]
    Status { status: u16, detail: String },
    #[error("Kommo could not be reached: {0}")]
    Transport(String),
    #[error("Kommo's answer could not be read: {0}")]
    Decode(String),
    #[error("`{0}` is not a Kommo account domain")]
    InvalidDomain(String),
    #[error("the Kommo chat channel is not usable: {0}")]
    InvalidChannel(String),
}

impl KommoError {
    /// Errors that another attempt cannot fix (spec: 4xx other than 401/429, invalid_grant).
    pub fn is_permanent(&self) -> bool {
        match self {
            KommoError::InvalidGrant(_)
            | KommoError::InvalidDomain(_)
            | KommoError::InvalidChannel(_) => true,
            KommoError::Status { status, .. } => (400..500).contains(status),
            _ => false,
        }
    }
}

/// Kommo's token answer. The tokens are secrets: `Debug` never shows them.
#[derive(Deserialize)]
pub struct TokenSet {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in: i64,
}

impl std::fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenSet {{ expires_in: {}, .. }}", self.expires_in)
    }
}

#[derive(Debug, Deserialize)]
pub struct Account {
    pub id: i64,
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Pipeline {
    pub id: i64,
    pub name: String,
    #[serde(default)]
    pub sort: i32,
    #[serde(default)]
    pub is_main: bool,
    #[serde(default)]
    pub is_archive: bool,
    #[serde(rename = "_embedded", default)]
    pub embedded: PipelineEmbedded,
}

#[derive(Debug, Deserialize, Default)]
pub struct PipelineEmbedded {
    #[serde(default)]
    pub statuses: Vec<Stage>,
}

#[derive(Debug, Deserialize)]
pub struct Stage {
    pub id: i64,
    pub name: String,
    #[serde(default)]
    pub sort: i32,
    pub color: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<i32>,
}

#[derive(Debug, Deserialize)]
pub struct Contact {
    pub id: i64,
    pub name: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub responsible_user_id: Option<i64>,
    pub created_at: Option<i64>,
    pub updated_at: Option<i64>,
    pub custom_fields_values: Option<Value>,
}

/// A lead (deal) as the agents need it, also stored as JSON with a conversation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Lead {
    pub id: i64,
    pub name: String,
    pub pipeline_id: i64,
    pub status_id: i64,
    pub responsible_user_id: Option<i64>,
    pub price: Option<i64>,
    pub custom_fields: Vec<LeadField>,
}

/// One custom field of a lead, its values joined into one text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeadField {
    pub name: String,
    pub value: String,
}

/// A lead as Kommo sends it; only what `Lead` keeps.
#[derive(Deserialize)]
struct KommoLead {
    id: i64,
    #[serde(default)]
    name: Option<String>,
    pipeline_id: i64,
    status_id: i64,
    #[serde(default)]
    responsible_user_id: Option<i64>,
    #[serde(default)]
    price: Option<i64>,
    /// `null` when no field is filled in.
    #[serde(default)]
    custom_fields_values: Option<Vec<KommoField>>,
}

#[derive(Deserialize)]
struct KommoField {
    #[serde(default)]
    field_name: Option<String>,
    #[serde(default)]
    field_code: Option<String>,
    #[serde(default)]
    values: Option<Vec<KommoFieldValue>>,
}

#[derive(Deserialize)]
struct KommoFieldValue {
    #[serde(default)]
    value: Value,
}

impl From<KommoLead> for Lead {
    fn from(lead: KommoLead) -> Lead {
        let custom_fields = lead
            .custom_fields_values
            .unwrap_or_default()
            .into_iter()
            .filter_map(LeadField::from_kommo)
            .collect();
        Lead {
            id: lead.id,
            name: lead.name.unwrap_or_default(),
            pipeline_id: lead.pipeline_id,
            status_id: lead.status_id,
            responsible_user_id: lead.responsible_user_id,
            price: lead.price,
            custom_fields,
        }
    }
}

impl LeadField {
    /// Values are strings, numbers (dates are unix seconds), booleans, or objects for the
    /// rarer field types; empty ones are left out, and a field with none is no fact.
    fn from_kommo(field: KommoField) -> Option<LeadField> {
        let name = field
            .field_name
            .filter(|n| !n.trim().is_empty())
            .or(field.field_code)?;
        let values: Vec<String> = field
            .values
            .unwrap_or_default()
            .into_iter()
            .filter_map(|v| match v.value {
                Value::Null => None,
                Value::String(s) => Some(s),
                other => Some(other.to_string()),
            })
            .filter(|s| !s.trim().is_empty())
            .collect();
        if values.is_empty() {
            return None;
        }
        Some(LeadField {
            name,
            value: values.join(", "),
        })
    }
}

/// A task for a lead's responsible user (Kommo's task type 1, "follow-up").
#[derive(Debug, Clone)]
pub struct NewTask {
    pub text: String,
    /// Unix seconds.
    pub complete_till: i64,
    pub lead_id: i64,
    /// Kommo gives the task to the integration's user when this is `None`.
    pub responsible_user_id: Option<i64>,
}

pub struct ContactsPage {
    pub contacts: Vec<Contact>,
    pub has_next: bool,
}

/// The integration registered in Kommo that a token request speaks for.
pub struct OAuthApp<'a> {
    pub client_id: &'a str,
    pub client_secret: &'a str,
    pub redirect_uri: &'a str,
}

enum Grant<'a> {
    Code(&'a str),
    Refresh(&'a str),
}

/// What Kommo answered, read whole (answers are small; the client has a total timeout).
pub(super) struct Answer {
    pub(super) status: StatusCode,
    pub(super) headers: reqwest::header::HeaderMap,
    pub(super) body: axum::body::Bytes,
}

/// `oauth2`'s HTTP seam, over our client. It keeps the last answer's status and body:
/// Kommo's refusals are problem JSON, not RFC 6749 errors, so they decide between a
/// refused grant and a fault whatever `oauth2` made of them.
struct TokenTransport<'a> {
    client: &'a KommoClient,
    base_domain: &'a str,
    last: std::sync::Mutex<Option<(StatusCode, axum::body::Bytes)>>,
}

impl<'c> AsyncHttpClient<'c> for TokenTransport<'_> {
    type Error = KommoError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, KommoError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(async move {
            let request = reqwest::Request::try_from(request).map_err(transport_error)?;
            let answer = self.client.execute(self.base_domain, request).await?;
            *self.last.lock().unwrap_or_else(|e| e.into_inner()) =
                Some((answer.status, answer.body.clone()));
            let mut response = oauth2::http::Response::new(answer.body.to_vec());
            *response.status_mut() = answer.status;
            *response.headers_mut() = answer.headers;
            Ok(response)
        })
    }
}

#[derive(Clone)]
pub struct KommoClient {
    http: reqwest::Client,
    base_url_template: String,
    /// The Chats API origin, without a trailing `/`.
    chats_base_url: String,
    limiter: AccountRateLimiter,
}

impl KommoClient {
    pub fn new(
        base_url_template: String,
        chats_base_url: &url::Url,
        limiter: AccountRateLimiter,
    ) -> anyhow::Result<KommoClient> {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(TOTAL_TIMEOUT)
            // Kommo never needs a redirect; following one could leave the allowed hosts.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("agents-api/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(KommoClient {
            http,
            base_url_template,
            chats_base_url: chats_base_url.as_str().trim_end_matches('/').to_owned(),
            limiter,
        })
    }

    pub(super) fn chats_base_url(&self) -> &str {
        &self.chats_base_url
    }

    pub(super) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    fn url(&self, base_domain: &str, path: &str) -> Result<String, KommoError> {
        if !is_valid_base_domain(base_domain) {
            return Err(KommoError::InvalidDomain(base_domain.to_string()));
        }
        Ok(format!(
            "{}{}",
            self.base_url_template.replace("{base_domain}", base_domain),
            path
        ))
    }

    /// One call: rate-limit slot, send, and 429s waited out.
    async fn send(
        &self,
        base_domain: &str,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<(StatusCode, axum::body::Bytes), KommoError> {
        let url = self.url(base_domain, path)?;
        let mut request = self.http.request(method, &url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let request = request.build().map_err(transport_error)?;
        let answer = self.execute(base_domain, request).await?;
        Ok((answer.status, answer.body))
    }

    /// A request to an account's API, paced and counted by its own path.
    async fn execute(
        &self,
        base_domain: &str,
        request: reqwest::Request,
    ) -> Result<Answer, KommoError> {
        let endpoint = request.url().path().to_owned();
        self.execute_as(base_domain, &endpoint, request).await
    }

    /// Sends a built request: waits for the rate-limit slot of `rate_key` (the account),
    /// carries the trace context, waits out 429s as Kommo asks. Every Kommo call goes
    /// through here, the OAuth token requests and the Chats API included. `endpoint` names
    /// the call in metrics and traces, so it must hold no unbounded ids.
    #[tracing::instrument(name = "kommo.request", skip_all, fields(otel.kind = "client", endpoint = %endpoint))]
    pub(super) async fn execute_as(
        &self,
        rate_key: &str,
        endpoint: &str,
        mut request: reqwest::Request,
    ) -> Result<Answer, KommoError> {
        request
            .headers_mut()
            .extend(crate::telemetry::outgoing_headers());
        let mut rate_limited = 0;
        loop {
            self.limiter.acquire(rate_key).await;
            // Bodies here are bytes in memory, so a request always clones.
            let attempt = request
                .try_clone()
                .ok_or_else(|| KommoError::Transport("request body cannot be resent".into()))?;
            let response = self.http.execute(attempt).await.map_err(|e| {
                tracing::warn!(endpoint, outcome = "transport_error", "kommo call");
                crate::metrics::observe_kommo(endpoint, "transport_error");
                transport_error(e)
            })?;
            let status = response.status();
            crate::metrics::observe_kommo(endpoint, status.as_str());
            tracing::debug!(endpoint, status = status.as_u16(), "kommo call");
            if status == StatusCode::TOO_MANY_REQUESTS {
                let wait = retry_after(response.headers()).min(MAX_RETRY_AFTER);
                if rate_limited < MAX_RATE_LIMITED_RETRIES {
                    rate_limited += 1;
                    tokio::time::sleep(wait).await;
                    continue;
                }
                return Err(KommoError::RateLimited(wait));
            }
            let headers = response.headers().clone();
            let body = response.bytes().await.map_err(transport_error)?;
            return Ok(Answer {
                status,
                headers,
                body,
            });
        }
    }

    async fn api<T: DeserializeOwned>(
        &self,
        base_domain: &str,
        method: Method,
        path: &str,
        token: &str,
        body: Option<&Value>,
    ) -> Result<Option<T>, KommoError> {
        let (status, bytes) = self
            .send(base_domain, method, path, Some(token), body)
            .await?;
        match status {
            StatusCode::NO_CONTENT => Ok(None),
            StatusCode::UNAUTHORIZED => Err(KommoError::Unauthorized),
            s if s.is_success() => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| KommoError::Decode(e.to_string())),
            s => Err(KommoError::Status {
                status: s.as_u16(),
                detail: problem_detail(&bytes),
            }),
        }
    }

    /// The token endpoint through the `oauth2` crate: it builds the standard request
    /// (client credentials in the body, as Kommo wants) and reads the standard answer;
    /// the transport is ours, so the call has our timeouts, rate limit and trace context.
    async fn token(
        &self,
        base_domain: &str,
        app: &OAuthApp<'_>,
        grant: Grant<'_>,
    ) -> Result<TokenSet, KommoError> {
        let token_url = TokenUrl::new(self.url(base_domain, TOKEN_PATH)?)
            .map_err(|_| KommoError::InvalidDomain(base_domain.to_string()))?;
        let redirect_url = RedirectUrl::new(app.redirect_uri.to_string())
            .map_err(|e| KommoError::Transport(format!("redirect URI: {e}")))?;
        let client = BasicClient::new(ClientId::new(app.client_id.to_string()))
            .set_client_secret(ClientSecret::new(app.client_secret.to_string()))
            .set_auth_type(AuthType::RequestBody)
            .set_token_uri(token_url)
            .set_redirect_uri(redirect_url);
        let transport = TokenTransport {
            client: self,
            base_domain,
            last: std::sync::Mutex::new(None),
        };
        let result = match grant {
            Grant::Code(code) => {
                client
                    .exchange_code(AuthorizationCode::new(code.to_string()))
                    .request_async(&transport)
                    .await
            }
            Grant::Refresh(token) => {
                let token = RefreshToken::new(token.to_string());
                client
                    .exchange_refresh_token(&token)
                    // Kommo asks for the redirect URI on refresh as well.
                    .add_extra_param("redirect_uri", app.redirect_uri)
                    .request_async(&transport)
                    .await
            }
        };
        let last = transport
            .last
            .into_inner()
            .unwrap_or_else(|e| e.into_inner());
        match result {
            Ok(answer) => Ok(TokenSet {
                access_token: answer.access_token().secret().clone(),
                refresh_token: answer
                    .refresh_token()
                    .ok_or_else(|| KommoError::Decode("no refresh_token in the answer".into()))?
                    .secret()
                    .clone(),
                expires_in: answer
                    .expires_in()
                    .and_then(|d| i64::try_from(d.as_secs()).ok())
                    .ok_or_else(|| KommoError::Decode("no expires_in in the answer".into()))?,
            }),
            Err(RequestTokenError::Request(e)) => Err(e),
            Err(other) => Err(match last {
                Some((StatusCode::BAD_REQUEST | StatusCode::UNAUTHORIZED, body)) => {
                    KommoError::InvalidGrant(problem_detail(&body))
                }
                Some((status, body)) if status != StatusCode::OK => KommoError::Status {
                    status: status.as_u16(),
                    detail: problem_detail(&body),
                },
                _ => KommoError::Decode(other.to_string()),
            }),
        }
    }

    pub async fn exchange_code(
        &self,
        base_domain: &str,
        app: &OAuthApp<'_>,
        code: &str,
    ) -> Result<TokenSet, KommoError> {
        self.token(base_domain, app, Grant::Code(code)).await
    }

    pub async fn refresh(
        &self,
        base_domain: &str,
        app: &OAuthApp<'_>,
        refresh_token: &str,
    ) -> Result<TokenSet, KommoError> {
        self.token(base_domain, app, Grant::Refresh(refresh_token))
            .await
    }

    pub async fn account(&self, base_domain: &str, token: &str) -> Result<Account, KommoError> {
        self.api(base_domain, Method::GET, "/api/v4/account", token, None)
            .await?
            .ok_or_else(|| KommoError::Decode("empty account answer".into()))
    }

    pub async fn pipelines(
        &self,
        base_domain: &str,
        token: &str,
    ) -> Result<Vec<Pipeline>, KommoError> {
        #[derive(Deserialize)]
        struct Embedded {
            #[serde(default)]
            pipelines: Vec<Pipeline>,
        }
        #[derive(Deserialize)]
        struct Answer {
            #[serde(rename = "_embedded")]
            embedded: Embedded,
        }
        let answer: Option<Answer> = self
            .api(
                base_domain,
                Method::GET,
                "/api/v4/leads/pipelines",
                token,
                None,
            )
            .await?;
        Ok(answer.map(|a| a.embedded.pipelines).unwrap_or_default())
    }

    /// One page of contacts (1-based); `None` once Kommo answers 204 past the last page.
    pub async fn contacts_page(
        &self,
        base_domain: &str,
        token: &str,
        page: u32,
    ) -> Result<Option<ContactsPage>, KommoError> {
        #[derive(Deserialize)]
        struct Embedded {
            #[serde(default)]
            contacts: Vec<Contact>,
        }
        #[derive(Deserialize)]
        struct Answer {
            #[serde(rename = "_embedded")]
            embedded: Embedded,
            #[serde(rename = "_links", default)]
            links: Value,
        }
        let path = format!("/api/v4/contacts?limit={CONTACTS_PAGE_SIZE}&page={page}");
        let answer: Option<Answer> = self
            .api(base_domain, Method::GET, &path, token, None)
            .await?;
        Ok(answer.map(|a| ContactsPage {
            has_next: a.links.get("next").is_some_and(|n| !n.is_null()),
            contacts: a.embedded.contacts,
        }))
    }

    /// The lead's latest notes (250 at most, newest first).
    pub async fn lead_notes(
        &self,
        base_domain: &str,
        token: &str,
        lead_id: i64,
    ) -> Result<Vec<Value>, KommoError> {
        #[derive(Deserialize)]
        struct Embedded {
            #[serde(default)]
            notes: Vec<Value>,
        }
        #[derive(Deserialize)]
        struct Answer {
            #[serde(rename = "_embedded")]
            embedded: Embedded,
        }
        let path = format!("/api/v4/leads/{lead_id}/notes?limit=250&order[id]=desc");
        let answer: Option<Answer> = self
            .api(base_domain, Method::GET, &path, token, None)
            .await?;
        Ok(answer.map(|a| a.embedded.notes).unwrap_or_default())
    }

    /// The lead, or `None` when the account has no such lead (Kommo answers 204 or 404).
    pub async fn lead(
        &self,
        base_domain: &str,
        token: &str,
        lead_id: i64,
    ) -> Result<Option<Lead>, KommoError> {
        let path = format!("/api/v4/leads/{lead_id}");
        match self
            .api::<KommoLead>(base_domain, Method::GET, &path, token, None)
            .await
        {
            Ok(lead) => Ok(lead.map(Lead::from)),
            Err(KommoError::Status { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Adds a task to a lead; returns the task id.
    pub async fn add_task(
        &self,
        base_domain: &str,
        token: &str,
        task: &NewTask,
    ) -> Result<Option<i64>, KommoError> {
        let mut item = serde_json::json!({
            "text": task.text,
            "complete_till": task.complete_till,
            "entity_id": task.lead_id,
            "entity_type": "leads",
            "task_type_id": 1,
        });
        if let Some(user) = task.responsible_user_id {
            item["responsible_user_id"] = user.into();
        }
        let answer: Option<Value> = self
            .api(
                base_domain,
                Method::POST,
                "/api/v4/tasks",
                token,
                Some(&Value::Array(vec![item])),
            )
            .await?;
        Ok(answer.and_then(|a| a["_embedded"]["tasks"][0]["id"].as_i64()))
    }

    /// The lead's latest tasks (250 at most, newest first), for a rerun to find the one
    /// it already created.
    pub async fn lead_tasks(
        &self,
        base_domain: &str,
        token: &str,
        lead_id: i64,
    ) -> Result<Vec<Value>, KommoError> {
        #[derive(Deserialize)]
        struct Embedded {
            #[serde(default)]
            tasks: Vec<Value>,
        }
        #[derive(Deserialize)]
        struct Answer {
            #[serde(rename = "_embedded")]
            embedded: Embedded,
        }
        let path = format!(
            "/api/v4/tasks?filter[entity_type]=leads&filter[entity_id][]={lead_id}\
             &limit=250&order[id]=desc"
        );
        let answer: Option<Answer> = self
            .api(base_domain, Method::GET, &path, token, None)
            .await?;
        Ok(answer.map(|a| a.embedded.tasks).unwrap_or_default())
    }

    /// Adds a note to a lead (deal); returns the note id.
    pub async fn add_note(
        &self,
        base_domain: &str,
        token: &str,
        lead_id: i64,
        note: Value,
    ) -> Result<Option<i64>, KommoError> {
        let answer: Option<Value> = self
            .api(
                base_domain,
                Method::POST,
                &format!("/api/v4/leads/{lead_id}/notes"),
                token,
                Some(&Value::Array(vec![note])),
            )
            .await?;
        Ok(answer.and_then(|a| a["_embedded"]["notes"][0]["id"].as_i64()))
    }
}

fn retry_after(headers: &reqwest::header::HeaderMap) -> Duration {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1))
}

pub(super) fn transport_error(e: reqwest::Error) -> KommoError {
    KommoError::Transport(e.without_url().to_string())
}

/// A short, readable reason from Kommo's problem JSON (never the whole body).
pub(super) fn problem_detail(bytes: &[u8]) -> String {
    let value: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
    let text = ["hint", "detail", "title", "error_description", "error"]
        .iter()
        .find_map(|k| value.get(*k).and_then(Value::as_str))
        .unwrap_or("no details");
    text.chars().take(200).collect()
}
