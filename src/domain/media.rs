//! Media types of request bodies, judged by their essence (`type/subtype`, lower case,
//! parameters such as `charset` ignored).

pub fn essence(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// `application/json`, or any `application/*+json`.
pub fn is_json(content_type: &str) -> bool {
    let e = essence(content_type);
    e == "application/json" || (e.starts_with("application/") && e.ends_with("+json"))
}

pub fn is_form(content_type: &str) -> bool {
    essence(content_type) == "application/x-www-form-urlencoded"
}
