//! Rules for request fields shared by several routes (used in `#[validate(custom)]`).

/// The longest URL the API stores (they are echoed by status endpoints and audit rows).
pub const MAX_URL_CHARS: usize = 2048;

pub fn validate_http_url(url: &str) -> Result<(), validator::ValidationError> {
    if url.chars().count() > MAX_URL_CHARS {
        return Err(validator::ValidationError::new("length")
            .with_message(format!("must be at most {MAX_URL_CHARS} characters").into()));
    }
    match url::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => Ok(()),
        _ => {
            Err(validator::ValidationError::new("url")
                .with_message("must be an http(s) URL".into()))
        }
    }
}

/// Tells an absent field (keep) from an explicit `null` (clear) in a body:
/// `#[serde(default, deserialize_with = "present")]` on an `Option<Option<T>>`.
pub fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    <Option<T> as serde::Deserialize>::deserialize(deserializer).map(Some)
}
