//! Extractors that turn every kind of bad input into problem+json, authenticate the
//! caller once, and scope a request to one org before the handler runs.

use std::marker::PhantomData;
use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{
    ConnectInfo, FromRequest, FromRequestParts, Path, Query, RawPathParams, Request,
};
use axum::http::header::{CONTENT_TYPE, USER_AGENT};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use serde::de::DeserializeOwned;

use uuid::Uuid;

use crate::domain::{OrgId, json};
use validator::Validate;

use crate::db::Tx;
pub use crate::domain::{AuthUser, RequestMeta, Role};
use crate::http::client_ip;
use crate::http::error::ApiError;
use crate::http::request_id::{self, RequestId};
use crate::state::AppState;

/// A JSON body: 415 without a JSON content type, 413 over the limit, 400 when it is not
/// JSON, 422 with the field path when it does not fit the type or its rules.
pub struct ApiJson<T>(pub T);

impl<T> FromRequest<AppState> for ApiJson<T>
where
    T: DeserializeOwned + Validate,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let value = parse_json_value(json_body(req, state).await?)?;
        T::validate(&value)?;
        Ok(ApiJson(value))
    }
}

/// A JSON array body (for the few operations whose body is a list): as `ApiJson`, and
/// 422 naming the item when one does not fit.
pub struct ApiJsonList<T>(pub Vec<T>);

impl<T> FromRequest<AppState> for ApiJsonList<T>
where
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        crate::domain::fields::list_from_value(json_body(req, state).await?)
            .map(ApiJsonList)
            .map_err(|e| ApiError::Validation(vec![e]))
    }
}

/// A JSON body as a value: 415 without a JSON content type, 413 over the limit, 400 when
/// it is not JSON, 422 naming the first field that holds U+0000.
async fn json_body(req: Request, state: &AppState) -> Result<serde_json::Value, ApiError> {
    if !is_json(req.headers()) {
        return Err(ApiError::UnsupportedMediaType(
            "Send the body as application/json.".into(),
        ));
    }
    let bytes = Bytes::from_request(req, state)
        .await
        .map_err(body_rejection)?;
    json_value(&bytes)
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(crate::domain::media::is_json)
}

pub fn body_rejection(rejection: BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge
    } else {
        ApiError::BadRequest("The request body could not be read.".into())
    }
}

/// Bodies are JSON objects. Going through `Value` first keeps the two failure kinds
/// apart: not JSON at all is a 400, JSON of the wrong shape a 422 naming the field (serde
/// would otherwise accept an array for a struct, and report some type errors as syntax).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    parse_json_value(json_value(bytes)?)
}

/// Bytes as a JSON value, refused when not JSON (400) or holding U+0000 (422).
fn json_value(bytes: &[u8]) -> Result<serde_json::Value, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::BadRequest(format!("The body is not valid JSON: {e}").into()))?;
    // PostgreSQL text cannot hold U+0000, so such input is refused up front (else it
    // would surface as a database error), naming the first offending field. serde_json
    // has already bounded the depth.
    if let Some(json::Finding::Nul { path }) = json::scan(&value, usize::MAX) {
        return Err(ApiError::validation(
            path,
            "must not contain the NUL character",
        ));
    }
    Ok(value)
}

/// Deserializes a JSON object already parsed, with 422 naming the field on mismatch.
pub fn parse_json_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ApiError> {
    crate::domain::fields::from_value(value).map_err(|e| ApiError::Validation(vec![e]))
}

/// Query parameters; a malformed query is a 400.
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or("");
        if query.to_ascii_lowercase().contains("%00") {
            return Err(ApiError::BadRequest(
                "Query parameters must not contain the NUL character.".into(),
            ));
        }
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| ApiQuery(v))
            .map_err(|e: QueryRejection| ApiError::BadRequest(e.body_text().into()))
    }
}

/// Path parameters; an id that cannot exist (not a UUID) is simply not found.
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| ApiPath(v))
            .map_err(|_| ApiError::NotFound)
    }
}

/// The request's audit metadata: the client address (through trusted proxies), its
/// request id and user agent.
fn request_meta(parts: &Parts, state: &AppState) -> RequestMeta {
    let ip = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| {
            client_ip::resolve(addr.ip(), &parts.headers, &state.config.trusted_proxies)
        });
    RequestMeta {
        request_id: parts.extensions.get::<RequestId>().map(|id| id.0.clone()),
        ip,
        user_agent: parts
            .headers
            .get(USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| ua.chars().take(512).collect()),
    }
}

/// An extractor of its own, so only the handlers that write pay for it (reads are the
/// hot path).
impl FromRequestParts<AppState> for RequestMeta {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(request_meta(parts, state))
    }
}

/// An authenticated user with a transaction already running under their claims.
pub struct UserTx {
    pub user: AuthUser,
    pub tx: Tx,
}

impl FromRequestParts<AppState> for UserTx {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let user = AuthUser::from_request_parts(parts, state).await?;
        let tx = state.db.begin_user(&user).await?;
        Ok(UserTx { user, tx })
    }
}

/// The lowest role a route accepts.
pub trait MinRole: Send + Sync + 'static {
    const ROLE: Role;
}
pub struct Read;
pub struct Write;
pub struct OwnerOnly;
impl MinRole for Read {
    const ROLE: Role = Role::Member;
}
impl MinRole for Write {
    const ROLE: Role = Role::Admin;
}
impl MinRole for OwnerOnly {
    const ROLE: Role = Role::Owner;
}

/// The authenticated caller and the org of the path, not yet checked against each other:
/// for a handler whose own database work checks the membership in its first round trip
/// (a search, which opens its transactions around its call to the model provider; the
/// agents list, read whole in one round trip by `Db::read_as_member`). Such a handler
/// answers 404 to a non-member, as `OrgTx` does; every other handler takes `OrgTx`.
pub struct OrgUser {
    pub user: AuthUser,
    pub org_id: OrgId,
}

impl FromRequestParts<AppState> for OrgUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let user = AuthUser::from_request_parts(parts, state).await?;
        let org_id = RawPathParams::from_request_parts(parts, state)
            .await
            .ok()
            .and_then(|params| {
                params
                    .iter()
                    .find(|(name, _)| *name == "org_id")
                    .and_then(|(_, value)| Uuid::parse_str(value).ok())
            })
            .map(OrgId)
            .ok_or(ApiError::NotFound)?;
        request_id::note_org(org_id);
        Ok(OrgUser { user, org_id })
    }
}

/// A request scoped to the org of its path: the caller is a member (else 404, so an org
/// never reveals that it exists) with at least `R`'s role (else 403), and `tx` runs under
/// the caller's claims.
pub struct OrgTx<R: MinRole = Read> {
    pub user: AuthUser,
    pub org_id: OrgId,
    pub role: Role,
    pub tx: Tx,
    _min: PhantomData<R>,
}

impl<R: MinRole> FromRequestParts<AppState> for OrgTx<R> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let OrgUser { user, org_id } = OrgUser::from_request_parts(parts, state).await?;
        let (tx, role) = state.db.begin_member(&user, org_id).await?;
        let role = role.ok_or(ApiError::NotFound)?;
        if role < R::ROLE {
            return Err(ApiError::forbidden(format!(
                "This needs the {} role or higher in this organization.",
                R::ROLE.as_str()
            )));
        }
        Ok(OrgTx {
            user,
            org_id,
            role,
            tx,
            _min: PhantomData,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use proptest::prelude::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Named {
        name: String,
    }

    fn refused(error: &ApiError) -> bool {
        matches!(error, ApiError::BadRequest(_) | ApiError::Validation(_))
    }

    #[test]
    fn json_content_types() {
        for (content_type, json) in [
            ("application/json", true),
            ("Application/JSON; charset=utf-8", true),
            ("application/problem+json", true),
            ("text/json", false),
            ("application/x-www-form-urlencoded", false),
            ("", false),
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
            assert_eq!(is_json(&headers), json, "{content_type}");
        }
    }

    proptest! {
        // Any bytes: the value, 400 or 422, never a panic.
        #[test]
        fn any_bytes_are_a_body_or_refused(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
            if let Err(error) = parse_json::<Named>(&bytes) {
                prop_assert!(refused(&error), "{error:?}");
            }
        }

        // Nesting of any depth, with U+0000 somewhere inside or not.
        #[test]
        fn any_nesting_is_refused_cleanly(depth in 0usize..400, nul in any::<bool>()) {
            let leaf = if nul { r#""a\u0000b""# } else { "1" };
            let body = format!(r#"{{"name":"x","deep":{}{leaf}{}}}"#, "[".repeat(depth), "]".repeat(depth));
            match parse_json::<Named>(body.as_bytes()) {
                // Unknown fields are allowed by `Named`; only a NUL-free body passes.
                Ok(_) => prop_assert!(!nul && depth < 128),
                Err(error) => prop_assert!(refused(&error), "{error:?}"),
            }
        }

        // Any header value as a content type.
        #[test]
        fn any_content_type_is_judged(content_type in "\\PC{0,100}") {
            if let Ok(value) = HeaderValue::from_str(&content_type) {
                let mut headers = HeaderMap::new();
                headers.insert(CONTENT_TYPE, value);
                let _ = is_json(&headers);
            }
        }
    }
}
