//! A fake Kommo CRM: the OAuth token endpoint and the few `/api/v4` routes the service
//! calls, behaving like Kommo (rotating refresh tokens, `invalid_grant` problems, 401 for a
//! stale access token, 429 with `Retry-After`, contacts in pages ending with 204, leads,
//! notes, tasks), and the Chats API (amojo) that replies go into chats through.
//! It serves on 127.0.0.1 and every route is prefixed by the account's host, so the app's
//! `KOMMO_BASE_URL` is `FakeKommo::base_url_template`
//! (`http://127.0.0.1:PORT/{base_domain}`); the Chats API is under `/amojo`, so
//! `KOMMO_CHATS_BASE_URL` is `FakeKommo::chats_base_url`. Every request is recorded.

#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// Latency of a refresh at the token endpoint, so that concurrent refreshes overlap.
const REFRESH_LATENCY: Duration = Duration::from_millis(30);
const FIRST_CONTACT_ID: i64 = 5_000_001;
const FIRST_NOTE_ID: i64 = 7_000_001;
const FIRST_TASK_ID: i64 = 8_000_001;
/// The path prefix of the Chats API, in place of an account's host.
const AMOJO: &str = "amojo";
const RESPONSIBLE_USER_ID: i64 = 6_000_001;
const OAUTH_PROBLEM_TYPE: &str = "https://developers.kommo.com/v3/errors/OAuthProblemJson";

/// One request as it reached the fake (the token endpoint included).
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub at: Instant,
    /// The host prefix of the path, e.g. `acme.kommo.com` (recorded for unknown hosts too).
    pub base_domain: String,
    pub method: String,
    /// The path without the host prefix, e.g. `/api/v4/contacts`.
    pub path: String,
    /// The raw query string, empty when there is none.
    pub query: String,
    pub authorization: Option<String>,
    pub body: String,
}

/// One `grant_type=refresh_token` request at the token endpoint (after authenticating the
/// client).
#[derive(Debug, Clone)]
pub struct RefreshAttempt {
    pub base_domain: String,
    pub refresh_token: String,
    pub accepted: bool,
    /// The token presented had been valid for this account and was already rotated away.
    pub stale: bool,
}

struct Client {
    secret: String,
    redirect_uri: String,
}

struct Account {
    account_id: i64,
    access_token: Option<String>,
    refresh_token: Option<String>,
    access_expired: bool,
    /// Refresh tokens that were once current for this account and have been replaced.
    rotated_refresh_tokens: HashSet<String>,
    pipelines: Value,
    contact_count: usize,
    fail_429: usize,
    retry_after_secs: u64,
    notes: Vec<Value>,
    /// Kommo-shaped leads by id.
    leads: HashMap<i64, Value>,
    tasks: Vec<Value>,
}

struct State {
    origin: String,
    clients: HashMap<String, Client>,
    accounts: HashMap<String, Account>,
    /// One-time authorization codes → the host they were issued for.
    codes: HashMap<String, String>,
    requests: Vec<RecordedRequest>,
    refresh_attempts: Vec<RefreshAttempt>,
    next_note_id: i64,
    next_task_id: i64,
    /// Chats API channels: scope_id → the secret requests are signed with.
    chat_channels: HashMap<String, String>,
    /// The payloads of the chat messages accepted, each once.
    chat_messages: Vec<Value>,
    /// (scope_id, msgid) → the answer given, repeated for a resend.
    chat_answers: HashMap<(String, String), Value>,
    /// How long every `/api/v4` and Chats API answer is held after the request took
    /// effect: a hanging Kommo, or one whose answer is lost after it stored a note.
    answer_delay: Duration,
}

impl State {
    fn account(&mut self, base_domain: &str) -> &mut Account {
        self.accounts
            .get_mut(base_domain)
            .unwrap_or_else(|| panic!("fake Kommo: no account {base_domain} (add_account first)"))
    }

    /// Replaces the account's tokens with a fresh pair; the old refresh token becomes stale
    /// and the old access token stops working.
    fn rotate(&mut self, base_domain: &str) -> (String, String) {
        let access = random_token("fk_at");
        let refresh = random_token("fk_rt");
        let account = self.account(base_domain);
        if let Some(old) = account.refresh_token.take() {
            account.rotated_refresh_tokens.insert(old);
        }
        account.access_token = Some(access.clone());
        account.refresh_token = Some(refresh.clone());
        account.access_expired = false;
        (access, refresh)
    }
}

/// Aborts the server task when the last handle goes away.
struct ServerGuard(tokio::task::JoinHandle<()>);

impl Drop for ServerGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[derive(Clone)]
pub struct FakeKommo {
    /// `http://127.0.0.1:PORT/{base_domain}`: the value for the app's `KOMMO_BASE_URL`.
    pub base_url_template: String,
    state: Arc<Mutex<State>>,
    _server: Arc<ServerGuard>,
}

impl FakeKommo {
    pub async fn start() -> FakeKommo {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake Kommo");
        let addr: SocketAddr = listener.local_addr().expect("fake Kommo address");
        let origin = format!("http://{addr}");
        let state = Arc::new(Mutex::new(State {
            origin: origin.clone(),
            clients: HashMap::new(),
            accounts: HashMap::new(),
            codes: HashMap::new(),
            requests: Vec::new(),
            refresh_attempts: Vec::new(),
            next_note_id: FIRST_NOTE_ID,
            next_task_id: FIRST_TASK_ID,
            chat_channels: HashMap::new(),
            chat_messages: Vec::new(),
            chat_answers: HashMap::new(),
            answer_delay: Duration::ZERO,
        }));
        let shared = state.clone();
        let app = Router::new().fallback(move |req: Request| handle(shared.clone(), req));
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("fake Kommo serves");
        });
        FakeKommo {
            base_url_template: format!("{origin}/{{base_domain}}"),
            state,
            _server: Arc::new(ServerGuard(server)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The fake's origin (`http://127.0.0.1:PORT`).
    pub fn origin(&self) -> String {
        self.lock().origin.clone()
    }

    /// The value for the app's `KOMMO_CHATS_BASE_URL`.
    pub fn chats_base_url(&self) -> String {
        format!("{}/{AMOJO}", self.origin())
    }

    /// `base_url_template` with `base_domain` substituted.
    pub fn base_url(&self, base_domain: &str) -> String {
        self.base_url_template.replace("{base_domain}", base_domain)
    }

    /// Registers the integration (client_id/secret) accepted by the token endpoint.
    pub fn register_client(&self, client_id: &str, client_secret: &str, redirect_uri: &str) {
        self.lock().clients.insert(
            client_id.to_owned(),
            Client {
                secret: client_secret.to_owned(),
                redirect_uri: redirect_uri.to_owned(),
            },
        );
    }

    /// An account at base_domain (e.g. "acme.kommo.com") with Kommo account id.
    pub fn add_account(&self, base_domain: &str, account_id: i64) {
        self.lock().accounts.insert(
            base_domain.to_owned(),
            Account {
                account_id,
                access_token: None,
                refresh_token: None,
                access_expired: false,
                rotated_refresh_tokens: HashSet::new(),
                pipelines: default_pipelines(account_id),
                contact_count: 0,
                fail_429: 0,
                retry_after_secs: 0,
                notes: Vec::new(),
                leads: HashMap::new(),
                tasks: Vec::new(),
            },
        );
    }

    /// A one-time authorization code for that account (what Kommo gives the browser).
    pub fn issue_code(&self, base_domain: &str) -> String {
        let mut state = self.lock();
        state.account(base_domain);
        let code = random_token("fk_code");
        state.codes.insert(code.clone(), base_domain.to_owned());
        code
    }

    /// Valid tokens for the account without OAuth: returns (access_token, refresh_token).
    /// They replace the account's current pair (one pair per account, as with one
    /// integration installed in one account).
    pub fn issue_tokens(&self, base_domain: &str) -> (String, String) {
        self.lock().rotate(base_domain)
    }

    /// Either an array of Kommo pipelines (wrapped in `_total_items`/`_embedded`), or a whole
    /// Kommo answer (an object), returned as is.
    pub fn set_pipelines(&self, base_domain: &str, pipelines: Value) {
        self.lock().account(base_domain).pipelines = pipelines;
    }

    /// Stores (or replaces) a lead as Kommo shapes it: `{id, name, price, pipeline_id,
    /// status_id, responsible_user_id, custom_fields_values}`; `GET /api/v4/leads/{id}`
    /// answers it with the rest of Kommo's fields added.
    pub fn set_lead(&self, base_domain: &str, lead: Value) {
        let id = lead["id"]
            .as_i64()
            .unwrap_or_else(|| panic!("fake Kommo: a lead needs a numeric id: {lead}"));
        self.lock().account(base_domain).leads.insert(id, lead);
    }

    pub fn set_contact_count(&self, base_domain: &str, n: usize) {
        self.lock().account(base_domain).contact_count = n;
    }

    /// The next `n` `/api/v4` requests to that account answer 429 with `Retry-After`.
    pub fn fail_next_with_429(&self, base_domain: &str, n: usize, retry_after_secs: u64) {
        let mut state = self.lock();
        let account = state.account(base_domain);
        account.fail_429 = n;
        account.retry_after_secs = retry_after_secs;
    }

    /// The current access token now answers 401 (the refresh token stays valid).
    /// Holds every `/api/v4` answer for `delay` after the request took effect (a note is
    /// stored at once and answered late).
    pub fn set_answer_delay(&self, delay: Duration) {
        self.lock().answer_delay = delay;
    }

    pub fn expire_access_token(&self, base_domain: &str) {
        self.lock().account(base_domain).access_expired = true;
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.clone()
    }

    /// Requests to one account whose path (without the host prefix) starts with `prefix`.
    pub fn requests_to(&self, base_domain: &str, prefix: &str) -> Vec<RecordedRequest> {
        self.lock()
            .requests
            .iter()
            .filter(|r| r.base_domain == base_domain && r.path.starts_with(prefix))
            .cloned()
            .collect()
    }

    /// Every note posted to that account: the posted object plus `id` and `entity_id`.
    pub fn notes(&self, base_domain: &str) -> Vec<Value> {
        self.lock().account(base_domain).notes.clone()
    }

    /// Every task posted to that account: the posted object plus `id`.
    pub fn tasks(&self, base_domain: &str) -> Vec<Value> {
        self.lock().account(base_domain).tasks.clone()
    }

    /// A Chats API channel whose requests must be signed with `secret`.
    pub fn register_chat_channel(&self, scope_id: &str, secret: &str) {
        self.lock()
            .chat_channels
            .insert(scope_id.to_owned(), secret.to_owned());
    }

    /// The payloads of the chat messages accepted (any channel), oldest first; a resent
    /// `msgid` appears once.
    pub fn chat_messages(&self) -> Vec<Value> {
        self.lock().chat_messages.clone()
    }

    pub fn refresh_attempts(&self) -> Vec<RefreshAttempt> {
        self.lock().refresh_attempts.clone()
    }

    /// Refresh requests that presented an already-rotated refresh token.
    pub fn stale_refresh_tokens_seen(&self) -> usize {
        self.lock()
            .refresh_attempts
            .iter()
            .filter(|a| a.stale)
            .count()
    }

    /// (access_token, refresh_token); panics when the account has no tokens yet.
    pub fn current_tokens(&self, base_domain: &str) -> (String, String) {
        let mut state = self.lock();
        let account = state.account(base_domain);
        match (&account.access_token, &account.refresh_token) {
            (Some(a), Some(r)) => (a.clone(), r.clone()),
            _ => panic!("fake Kommo: {base_domain} has no tokens yet"),
        }
    }

    /// Peak number of `/api/v4` requests to that account within any 1 s sliding window
    /// (token endpoint requests are not counted; 401 and 429 answers are).
    pub fn max_requests_in_any_second(&self, base_domain: &str) -> usize {
        let mut times: Vec<Instant> = self
            .lock()
            .requests
            .iter()
            .filter(|r| r.base_domain == base_domain && r.path.starts_with("/api/"))
            .map(|r| r.at)
            .collect();
        times.sort();
        let mut peak = 0;
        let mut start = 0;
        for end in 0..times.len() {
            while times[end].duration_since(times[start]) >= Duration::from_secs(1) {
                start += 1;
            }
            peak = peak.max(end - start + 1);
        }
        peak
    }
}

fn random_token(prefix: &str) -> String {
    format!("{prefix}_{}", hex::encode(rand::random::<[u8; 24]>()))
}

fn default_pipelines(account_id: i64) -> Value {
    // Like a real account: every pipeline ends with the system statuses 142 (won) and
    // 143 (lost), whose ids are the same in every pipeline.
    let status = |id: i64, name: &str, sort: i64, color: &str, pipeline_id: i64| {
        json!({
            "id": id, "name": name, "sort": sort, "is_editable": id != 142 && id != 143,
            "pipeline_id": pipeline_id, "color": color, "type": 0, "account_id": account_id,
        })
    };
    json!([
        {
            "id": 1001, "name": "Sales", "sort": 1, "is_main": true, "is_unsorted_on": true,
            "is_archive": false, "account_id": account_id,
            "_embedded": {"statuses": [
                status(1, "New", 10, "#99ccff", 1001),
                status(142, "Closed - won", 10000, "#CCFF66", 1001),
                status(143, "Closed - lost", 11000, "#D5D8DB", 1001),
            ]},
        },
        {
            "id": 1002, "name": "Partners", "sort": 2, "is_main": false, "is_unsorted_on": false,
            "is_archive": false, "account_id": account_id,
            "_embedded": {"statuses": [
                status(2, "Contacted", 10, "#fffeb2", 1002),
                status(142, "Closed - won", 10000, "#CCFF66", 1002),
                status(143, "Closed - lost", 11000, "#D5D8DB", 1002),
            ]},
        },
    ])
}

fn contact(index: usize, account_id: i64, self_href: &str) -> Value {
    let n = index as i64 + 1;
    let id = FIRST_CONTACT_ID + index as i64;
    let created_at = 1_700_000_000 + index as i64 * 60;
    let custom_fields = if index.is_multiple_of(2) {
        Value::Null
    } else {
        json!([
            {"field_id": 264_911, "field_name": "Phone", "field_code": "PHONE",
             "field_type": "multitext",
             "values": [{"value": format!("+1555{n:07}"), "enum_id": 101, "enum_code": "WORK"}]},
            {"field_id": 264_913, "field_name": "Email", "field_code": "EMAIL",
             "field_type": "multitext",
             "values": [{"value": format!("contact{n}@example.com"), "enum_id": 111,
                         "enum_code": "WORK"}]},
        ])
    };
    json!({
        "id": id,
        "name": format!("Contact {n}"),
        "first_name": "Contact",
        "last_name": n.to_string(),
        "responsible_user_id": RESPONSIBLE_USER_ID,
        "group_id": 0,
        "created_by": RESPONSIBLE_USER_ID,
        "updated_by": RESPONSIBLE_USER_ID,
        "created_at": created_at,
        "updated_at": created_at + 3600,
        "closest_task_at": null,
        "is_deleted": false,
        "is_unsorted": false,
        "custom_fields_values": custom_fields,
        "account_id": account_id,
        "_links": {"self": {"href": format!("{self_href}/{id}")}},
        "_embedded": {"tags": [], "companies": []},
    })
}

fn respond(status: StatusCode, content_type: &'static str, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body.to_string(),
    )
        .into_response()
}

fn hal(body: Value) -> Response {
    respond(StatusCode::OK, "application/hal+json", body)
}

fn problem(status: StatusCode, body: Value) -> Response {
    respond(status, "application/problem+json", body)
}

fn oauth_problem(status: u16, error: &str, title: &str, hint: &str, detail: &str) -> Response {
    problem(
        StatusCode::from_u16(status).expect("status"),
        json!({
            "hint": hint, "title": title, "type": OAUTH_PROBLEM_TYPE, "status": status,
            "detail": detail, "error": error,
        }),
    )
}

fn invalid_request(hint: &str) -> Response {
    oauth_problem(
        400,
        "invalid_request",
        "Invalid request",
        hint,
        "The request is missing a required parameter, includes an invalid parameter value, \
         includes a parameter more than once, or is otherwise malformed.",
    )
}

fn stale_refresh_token() -> Response {
    oauth_problem(
        400,
        "invalid_grant",
        "Invalid grant",
        "Token has been revoked",
        "The refresh token is invalid.",
    )
}

fn invalid_code(hint: &str) -> Response {
    oauth_problem(
        400,
        "invalid_grant",
        "Invalid grant",
        hint,
        "The provided authorization grant (e.g., authorization code, resource owner \
         credentials) or refresh token is invalid, expired, revoked, does not match the \
         redirection URI used in the authorization request, or was issued to another client.",
    )
}

fn not_found() -> Response {
    problem(
        StatusCode::NOT_FOUND,
        json!({"title": "Not Found", "type": "https://httpstatus.es/404", "status": 404}),
    )
}

async fn handle(state: Arc<Mutex<State>>, req: Request) -> Response {
    let at = Instant::now();
    let (parts, body) = req.into_parts();
    let raw = match axum::body::to_bytes(body, 16 * 1024 * 1024).await {
        Ok(b) => b,
        Err(_) => return StatusCode::BAD_REQUEST.into_response(),
    };
    let body = String::from_utf8_lossy(&raw).into_owned();
    let full_path = parts.uri.path().to_owned();
    let (base_domain, path) = match full_path.trim_start_matches('/').split_once('/') {
        Some((host, rest)) => (host.to_owned(), format!("/{rest}")),
        None => (full_path.trim_start_matches('/').to_owned(), String::new()),
    };
    let authorization = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let query = parts.uri.query().unwrap_or("").to_owned();
    let method = parts.method.clone();
    {
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        s.requests.push(RecordedRequest {
            at,
            base_domain: base_domain.clone(),
            method: method.to_string(),
            path: path.clone(),
            query: query.clone(),
            authorization: authorization.clone(),
            body: body.clone(),
        });
        if base_domain != AMOJO && !s.accounts.contains_key(&base_domain) {
            return not_found();
        }
    }

    if base_domain == AMOJO {
        let answer = chats(&state, &method, &path, &parts.headers, &raw);
        delay_answer(&state).await;
        return answer;
    }

    if path == "/oauth2/access_token" {
        if method != Method::POST {
            return StatusCode::METHOD_NOT_ALLOWED.into_response();
        }
        return token_endpoint(&state, &base_domain, &body).await;
    }
    if path.starts_with("/api/") {
        let answer = api(
            &state,
            &base_domain,
            &method,
            &path,
            &query,
            authorization,
            &body,
        );
        delay_answer(&state).await;
        return answer;
    }
    not_found()
}

async fn delay_answer(state: &Arc<Mutex<State>>) {
    let delay = state.lock().unwrap_or_else(|e| e.into_inner()).answer_delay;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
}

/// The token request's fields, from a form (what the service sends, RFC 6749) or JSON.
fn token_fields(body: &str) -> Option<HashMap<String, String>> {
    if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(body) {
        return Some(
            map.into_iter()
                .filter_map(|(k, v)| match v {
                    Value::String(s) => Some((k, s)),
                    Value::Null => None,
                    other => Some((k, other.to_string())),
                })
                .collect(),
        );
    }
    if body.contains('=') {
        return Some(
            url::form_urlencoded::parse(body.as_bytes())
                .into_owned()
                .collect(),
        );
    }
    None
}

async fn token_endpoint(state: &Arc<Mutex<State>>, base_domain: &str, body: &str) -> Response {
    let Some(fields) = token_fields(body) else {
        return invalid_request("Request body must be JSON");
    };
    let field = |name: &str| {
        fields
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    };
    let (Some(client_id), Some(grant_type)) = (field("client_id"), field("grant_type")) else {
        return invalid_request("Check the `client_id` and `grant_type` parameters");
    };
    {
        let s = state.lock().unwrap_or_else(|e| e.into_inner());
        let client = s.clients.get(client_id);
        let authenticated =
            client.is_some_and(|c| Some(c.secret.as_str()) == field("client_secret"));
        if !authenticated {
            return oauth_problem(
                401,
                "invalid_client",
                "Invalid client",
                "Client authentication failed",
                "Client authentication failed",
            );
        }
        let registered_uri = client.map(|c| c.redirect_uri.as_str());
        match (grant_type, field("redirect_uri")) {
            ("authorization_code", None) => {
                return invalid_request("Check the `redirect_uri` parameter");
            }
            (_, Some(uri)) if Some(uri) != registered_uri => {
                return invalid_code("Redirect URI does not match the integration's");
            }
            _ => {}
        }
    }
    match grant_type {
        "authorization_code" => {
            let Some(code) = field("code") else {
                return invalid_request("Check the `code` parameter");
            };
            let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
            match s.codes.get(code) {
                Some(host) if host == base_domain => {
                    s.codes.remove(code);
                }
                Some(_) => {
                    return invalid_code("Authorization code was issued for another account");
                }
                None => return invalid_code("Cannot decrypt the authorization code"),
            }
            let (access, refresh) = s.rotate(base_domain);
            token_answer(access, refresh)
        }
        "refresh_token" => {
            let Some(presented) = field("refresh_token").map(str::to_owned) else {
                return invalid_request("Check the `refresh_token` parameter");
            };
            // Check and rotate after the latency, atomically, so that of two overlapping
            // refreshes with the same token exactly one wins and the other is stale.
            tokio::time::sleep(REFRESH_LATENCY).await;
            let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
            let account = s.account(base_domain);
            let accepted = account.refresh_token.as_deref() == Some(presented.as_str());
            let stale = !accepted && account.rotated_refresh_tokens.contains(&presented);
            s.refresh_attempts.push(RefreshAttempt {
                base_domain: base_domain.to_owned(),
                refresh_token: presented,
                accepted,
                stale,
            });
            if !accepted {
                return stale_refresh_token();
            }
            let (access, refresh) = s.rotate(base_domain);
            token_answer(access, refresh)
        }
        _ => oauth_problem(
            400,
            "unsupported_grant_type",
            "Unsupported grant type",
            "Check the `grant_type` parameter",
            "The authorization grant type is not supported by the authorization server.",
        ),
    }
}

fn token_answer(access: String, refresh: String) -> Response {
    respond(
        StatusCode::OK,
        "application/json",
        json!({
            "token_type": "Bearer", "expires_in": 86400,
            "access_token": access, "refresh_token": refresh,
        }),
    )
}

fn api(
    state: &Arc<Mutex<State>>,
    base_domain: &str,
    method: &Method,
    path: &str,
    query: &str,
    authorization: Option<String>,
    body: &str,
) -> Response {
    let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
    let origin = s.origin.clone();
    let next_note_id = s.next_note_id;
    let next_task_id = s.next_task_id;
    let account = s.account(base_domain);
    if account.fail_429 > 0 {
        account.fail_429 -= 1;
        let retry_after = account.retry_after_secs.to_string();
        let mut response = problem(
            StatusCode::TOO_MANY_REQUESTS,
            json!({"title": "Too Many Requests", "status": 429}),
        );
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from_str(&retry_after).expect("header"),
        );
        return response;
    }
    let authorized = !account.access_expired
        && account
            .access_token
            .as_ref()
            .is_some_and(|t| authorization.as_deref() == Some(format!("Bearer {t}").as_str()));
    if !authorized {
        return problem(
            StatusCode::UNAUTHORIZED,
            json!({"title": "Unauthorized", "type": "https://httpstatus.es/401", "status": 401,
                   "detail": "Invalid access token"}),
        );
    }
    let base = format!("{origin}/{base_domain}");
    let account_id = account.account_id;
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    match (method.clone(), segments.as_slice()) {
        (Method::GET, ["api", "v4", "account"]) => {
            let subdomain = base_domain.split('.').next().unwrap_or(base_domain);
            let mut name = subdomain.to_owned();
            if let Some(first) = name.get_mut(0..1) {
                first.make_ascii_uppercase();
            }
            hal(json!({
                "id": account_id, "name": name, "subdomain": subdomain,
                "created_at": 1_600_000_000, "created_by": 0,
                "updated_at": 1_600_000_000, "updated_by": 0,
                "current_user_id": RESPONSIBLE_USER_ID, "country": "US", "currency": "USD",
                "currency_symbol": "$", "customers_mode": "disabled", "is_unsorted_on": true,
                "mobile_feature_version": 0, "is_loss_reason_enabled": true,
                "is_helpbot_enabled": false, "is_technical_account": false,
                "contact_name_display_order": 1,
                "_links": {"self": {"href": format!("{base}/api/v4/account")}},
            }))
        }
        (Method::GET, ["api", "v4", "leads", "pipelines"]) => match &account.pipelines {
            Value::Array(pipelines) => hal(json!({
                "_total_items": pipelines.len(),
                "_links": {"self": {"href": format!("{base}/api/v4/leads/pipelines")}},
                "_embedded": {"pipelines": pipelines},
            })),
            whole => hal(whole.clone()),
        },
        (Method::GET, ["api", "v4", "leads", lead_id]) => {
            let Ok(lead_id) = lead_id.parse::<i64>() else {
                return not_found();
            };
            // Kommo answers an unknown (or deleted) lead with an empty 204.
            match account.leads.get(&lead_id) {
                Some(stored) => hal(lead(stored, account_id, &base)),
                None => StatusCode::NO_CONTENT.into_response(),
            }
        }
        (Method::GET, ["api", "v4", "contacts"]) => {
            let params: HashMap<String, String> = url::form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .collect();
            let limit = match params.get("limit").map(|v| v.parse::<usize>()) {
                None => 50,
                Some(Ok(l)) if (1..=250).contains(&l) => l,
                Some(_) => {
                    return problem(
                        StatusCode::BAD_REQUEST,
                        json!({"title": "Bad Request", "status": 400,
                               "detail": "limit must be between 1 and 250"}),
                    );
                }
            };
            let page = match params.get("page").map(|v| v.parse::<usize>()) {
                None => 1,
                Some(Ok(p)) if p >= 1 => p,
                Some(_) => {
                    return problem(
                        StatusCode::BAD_REQUEST,
                        json!({"title": "Bad Request", "status": 400,
                               "detail": "page must be a positive integer"}),
                    );
                }
            };
            let start = (page - 1) * limit;
            if start >= account.contact_count {
                return StatusCode::NO_CONTENT.into_response();
            }
            let end = (start + limit).min(account.contact_count);
            let href = format!("{base}/api/v4/contacts");
            let contacts: Vec<Value> = (start..end)
                .map(|i| contact(i, account_id, &href))
                .collect();
            let mut links = json!({"self": {"href": format!("{href}?limit={limit}&page={page}")}});
            if end < account.contact_count {
                links["next"] = json!({"href": format!("{href}?limit={limit}&page={}", page + 1)});
            }
            if page > 1 {
                links["prev"] = json!({"href": format!("{href}?limit={limit}&page={}", page - 1)});
            }
            hal(json!({"_page": page, "_links": links, "_embedded": {"contacts": contacts}}))
        }
        (Method::GET, ["api", "v4", "leads", lead_id, "notes"]) => {
            // Newest first, 250 at most, 204 when the lead has none: like Kommo with
            // `order[id]=desc&limit=250`.
            let Ok(lead_id) = lead_id.parse::<i64>() else {
                return not_found();
            };
            let notes: Vec<Value> = account
                .notes
                .iter()
                .rev()
                .filter(|n| n["entity_id"] == json!(lead_id))
                .take(250)
                .cloned()
                .collect();
            if notes.is_empty() {
                return StatusCode::NO_CONTENT.into_response();
            }
            hal(json!({
                "_links": {"self": {"href": format!("{base}/api/v4/leads/{lead_id}/notes")}},
                "_embedded": {"notes": notes},
            }))
        }
        (Method::POST, ["api", "v4", "leads", lead_id, "notes"]) => {
            let Ok(lead_id) = lead_id.parse::<i64>() else {
                return not_found();
            };
            let posted = match serde_json::from_str::<Value>(body) {
                Ok(Value::Array(items))
                    if !items.is_empty()
                        && items
                            .iter()
                            .all(|n| n.get("note_type").is_some_and(Value::is_string)) =>
                {
                    items
                }
                _ => {
                    return problem(
                        StatusCode::BAD_REQUEST,
                        json!({"title": "Bad Request", "type": "https://httpstatus.es/400",
                               "status": 400, "detail": "Request validation failed",
                               "validation-errors": [{"request_id": "0", "errors": [
                                   {"code": "NotSupportedChoice", "path": "note_type",
                                    "detail": "The value you selected is not a valid choice."}]}]}),
                    );
                }
            };
            let mut answered = Vec::new();
            for (i, mut note) in posted.into_iter().enumerate() {
                let id = next_note_id + i as i64;
                let request_id = note
                    .get("request_id")
                    .and_then(Value::as_str)
                    .map_or_else(|| i.to_string(), str::to_owned);
                note["id"] = json!(id);
                note["entity_id"] = json!(lead_id);
                account.notes.push(note);
                answered.push(json!({
                    "id": id, "entity_id": lead_id, "request_id": request_id,
                    "_links": {"self": {"href": format!("{base}/api/v4/leads/notes/{id}")}},
                }));
            }
            s.next_note_id += answered.len() as i64;
            hal(json!({
                "_links": {"self": {"href": format!("{base}/api/v4/leads/{lead_id}/notes")}},
                "_embedded": {"notes": answered},
            }))
        }
        (Method::POST, ["api", "v4", "tasks"]) => {
            let Some(posted) = valid_tasks(body) else {
                return validation_failed("text", "This value should not be blank.");
            };
            let mut answered = Vec::new();
            for (i, mut task) in posted.into_iter().enumerate() {
                let id = next_task_id + i as i64;
                let request_id = task
                    .get("request_id")
                    .and_then(Value::as_str)
                    .map_or_else(|| i.to_string(), str::to_owned);
                task["id"] = json!(id);
                account.tasks.push(task);
                answered.push(json!({
                    "id": id, "request_id": request_id,
                    "_links": {"self": {"href": format!("{base}/api/v4/tasks/{id}")}},
                }));
            }
            s.next_task_id += answered.len() as i64;
            hal(json!({
                "_links": {"self": {"href": format!("{base}/api/v4/tasks")}},
                "_embedded": {"tasks": answered},
            }))
        }
        (Method::GET, ["api", "v4", "tasks"]) => {
            let filter = match TaskFilter::parse(query) {
                Ok(filter) => filter,
                Err(detail) => {
                    return problem(
                        StatusCode::BAD_REQUEST,
                        json!({"title": "Bad Request", "status": 400, "detail": detail}),
                    );
                }
            };
            let mut tasks: Vec<Value> = account
                .tasks
                .iter()
                .filter(|t| filter.matches(t))
                .map(|t| task_answer(t, account_id, &base))
                .collect();
            if filter.newest_first {
                tasks.reverse();
            }
            tasks.truncate(filter.limit);
            if tasks.is_empty() {
                return StatusCode::NO_CONTENT.into_response();
            }
            hal(json!({
                "_page": 1,
                "_links": {"self": {"href": format!("{base}/api/v4/tasks?{query}")}},
                "_embedded": {"tasks": tasks},
            }))
        }
        _ => not_found(),
    }
}

/// A stored lead with the fields Kommo adds to every lead (the stored ones win).
fn lead(stored: &Value, account_id: i64, base: &str) -> Value {
    let id = stored["id"].as_i64().unwrap_or_default();
    let mut lead = json!({
        "id": id, "name": "", "price": 0, "responsible_user_id": RESPONSIBLE_USER_ID,
        "group_id": 0, "status_id": 1, "pipeline_id": 1001, "loss_reason_id": null,
        "created_by": RESPONSIBLE_USER_ID, "updated_by": RESPONSIBLE_USER_ID,
        "created_at": 1_700_000_000, "updated_at": 1_700_000_000, "closed_at": null,
        "closest_task_at": null, "is_deleted": false, "custom_fields_values": null,
        "score": null, "account_id": account_id, "labor_cost": null,
        "_links": {"self": {"href": format!("{base}/api/v4/leads/{id}")}},
        "_embedded": {"tags": [], "companies": []},
    });
    if let (Some(lead), Some(stored)) = (lead.as_object_mut(), stored.as_object()) {
        for (key, value) in stored {
            lead.insert(key.clone(), value.clone());
        }
    }
    lead
}

/// The posted tasks, when each has what Kommo requires: a text and a due time.
fn valid_tasks(body: &str) -> Option<Vec<Value>> {
    match serde_json::from_str::<Value>(body) {
        Ok(Value::Array(items))
            if !items.is_empty()
                && items.iter().all(|t| {
                    t.get("text")
                        .and_then(Value::as_str)
                        .is_some_and(|s| !s.trim().is_empty())
                        && t.get("complete_till").is_some_and(Value::is_i64)
                }) =>
        {
            Some(items)
        }
        _ => None,
    }
}

fn task_answer(stored: &Value, account_id: i64, base: &str) -> Value {
    let mut task = stored.clone();
    let id = task["id"].as_i64().unwrap_or_default();
    for (key, value) in [
        ("responsible_user_id", json!(RESPONSIBLE_USER_ID)),
        ("task_type_id", json!(1)),
        ("is_completed", json!(false)),
        ("account_id", json!(account_id)),
        (
            "_links",
            json!({"self": {"href": format!("{base}/api/v4/tasks/{id}")}}),
        ),
    ] {
        if task.get(key).is_none_or(Value::is_null) {
            task[key] = value;
        }
    }
    task
}

/// The part of Kommo's task list query the service uses.
struct TaskFilter {
    entity_type: Option<String>,
    entity_ids: Vec<i64>,
    limit: usize,
    newest_first: bool,
}

impl TaskFilter {
    fn parse(query: &str) -> Result<TaskFilter, String> {
        let mut filter = TaskFilter {
            entity_type: None,
            entity_ids: Vec::new(),
            limit: 50,
            newest_first: false,
        };
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            match key.as_ref() {
                "filter[entity_type]" => filter.entity_type = Some(value.into_owned()),
                "filter[entity_id][]" | "filter[entity_id]" => filter.entity_ids.push(
                    value
                        .parse()
                        .map_err(|_| "filter[entity_id] must be a number")?,
                ),
                "limit" => match value.parse::<usize>() {
                    Ok(l) if (1..=250).contains(&l) => filter.limit = l,
                    _ => return Err("limit must be between 1 and 250".into()),
                },
                "order[id]" => filter.newest_first = value == "desc",
                _ => {}
            }
        }
        Ok(filter)
    }

    fn matches(&self, task: &Value) -> bool {
        let type_ok = self
            .entity_type
            .as_deref()
            .is_none_or(|t| task["entity_type"] == json!(t));
        let id_ok = self.entity_ids.is_empty()
            || task["entity_id"]
                .as_i64()
                .is_some_and(|id| self.entity_ids.contains(&id));
        type_ok && id_ok
    }
}

fn validation_failed(path: &str, detail: &str) -> Response {
    problem(
        StatusCode::BAD_REQUEST,
        json!({"title": "Bad Request", "type": "https://httpstatus.es/400", "status": 400,
               "detail": "Request validation failed",
               "validation-errors": [{"request_id": "0", "errors": [
                   {"code": "NotBlank", "path": path, "detail": detail}]}]}),
    )
}

/// The Chats API: `POST /v2/origin/custom/{scope_id}`, signed as amojo checks it.
fn chats(
    state: &Arc<Mutex<State>>,
    method: &Method,
    path: &str,
    headers: &axum::http::HeaderMap,
    body: &[u8],
) -> Response {
    let Some(scope_id) = path.strip_prefix("/v2/origin/custom/") else {
        return not_found();
    };
    if method != Method::POST {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
    let Some(secret) = s.chat_channels.get(scope_id).cloned() else {
        return not_found();
    };
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    };
    let content_md5 = hex::encode(<md5::Md5 as md5::Digest>::digest(body));
    if header("content-md5") != content_md5 {
        return chat_problem(
            StatusCode::BAD_REQUEST,
            "Content-MD5 does not match the body",
        );
    }
    // Signed over the path as amojo sees it, without the fake's `/amojo` prefix.
    let expected = chat_signature(
        &secret,
        &[
            "POST",
            &content_md5,
            header("content-type"),
            header("date"),
            path,
        ],
    );
    if header("date").is_empty() || header("x-signature") != expected {
        return chat_problem(StatusCode::UNAUTHORIZED, "Invalid signature");
    }
    let Some((msgid, conversation_id)) = new_text_message(body) else {
        return chat_problem(StatusCode::BAD_REQUEST, "Invalid new_message event");
    };
    let key = (scope_id.to_owned(), msgid.clone());
    if let Some(answer) = s.chat_answers.get(&key) {
        return respond(StatusCode::OK, "application/json", answer.clone());
    }
    let answer = json!({"new_message": {
        "conversation_id": conversation_id,
        "sender_id": uuid::Uuid::new_v4().to_string(),
        "msgid": uuid::Uuid::new_v4().to_string(),
        "ref_id": msgid,
    }});
    let payload: Value = serde_json::from_slice::<Value>(body)
        .map(|event| event["payload"].clone())
        .unwrap_or(Value::Null);
    s.chat_messages.push(payload);
    s.chat_answers.insert(key, answer.clone());
    respond(StatusCode::OK, "application/json", answer)
}

/// Lowercase hex HMAC-SHA1 of the lines, as amojo computes `X-Signature`.
fn chat_signature(secret: &str, lines: &[&str]) -> String {
    use hmac::{KeyInit, Mac};
    let mut mac = <hmac::Hmac<sha1::Sha1> as KeyInit>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes any key");
    mac.update(lines.join("\n").as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// `(msgid, conversation_id)` of a `new_message` event carrying a text message.
fn new_text_message(body: &[u8]) -> Option<(String, String)> {
    let event: Value = serde_json::from_slice(body).ok()?;
    let payload = &event["payload"];
    let is_text = event["event_type"] == "new_message"
        && payload["message"]["type"] == "text"
        && payload["message"]["text"].is_string()
        && payload["sender"]["id"].is_string();
    let msgid = payload["msgid"].as_str().filter(|m| !m.is_empty())?;
    let conversation_id = payload["conversation_id"]
        .as_str()
        .filter(|c| !c.is_empty())?;
    is_text.then(|| (msgid.to_owned(), conversation_id.to_owned()))
}

fn chat_problem(status: StatusCode, detail: &str) -> Response {
    problem(
        status,
        json!({"title": status.canonical_reason(), "status": status.as_u16(), "detail": detail}),
    )
}

// The fake checked against what it stands in for.
#[cfg(test)]
mod tests;
