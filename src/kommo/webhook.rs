//! Kommo's webhook bodies: `application/x-www-form-urlencoded` with bracketed keys
//! (`leads[status][0][old_status_id]=…`), or the same structure as JSON. Parsing turns a
//! body into one event per entity: type, subtype, entity id and the fields Kommo sent.
//!
//! The bodies come from the internet, so nothing here recurses on what a client sent
//! deeper than `MAX_DEPTH`, and every count is bounded: a body that exceeds a bound is
//! refused with `ParseError::Limit`, never half-parsed.

use serde_json::{Map, Value};

use crate::domain::json;

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// `leads`, `contacts`, `companies`, `tasks`, `messages`, …
    pub kind: String,
    /// `add`, `update`, `status`, `delete`, `restore`, `responsible`, `note`, …
    pub subtype: String,
    pub entity_id: Option<i64>,
    pub fields: Value,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ParseError {
    #[error("the body is not valid JSON: {0}")]
    Json(String),
    #[error("the body is not valid form data: {0}")]
    Form(String),
    #[error("the body must be a JSON object")]
    NotObject,
    #[error("the body contains the NUL character")]
    Nul,
    #[error("the body exceeds a limit: {0}")]
    Limit(String),
}

/// Kommo's bodies nest five levels deep; 32 leaves room and keeps every walk shallow.
pub const MAX_DEPTH: usize = 32;
/// Form fields per body (a full Kommo body of 500 entities has a few thousand).
pub const MAX_FIELDS: usize = 50_000;
/// Bytes of one form key, and of one bracketed segment of it.
pub const MAX_KEY_BYTES: usize = 1024;
/// Events made from one delivery; Kommo sends at most a few hundred entities per
/// request. The rest stays in the stored body and is counted as dropped.
pub const MAX_EVENTS: usize = 500;

pub use crate::domain::media::{is_form, is_json};

/// The body as a nested JSON object, whichever format it came in. Costs time linear in
/// the body; callers run it off the async runtime (`spawn_blocking`).
pub fn to_document(content_type: &str, body: &[u8]) -> Result<Value, ParseError> {
    let document = if is_form(content_type) {
        form_to_document(body)?
    } else {
        // serde_json refuses nesting beyond 128 itself, before building anything.
        let value: Value = serde_json::from_slice(body).map_err(|e| {
            if e.to_string().contains("recursion limit") {
                too_deep()
            } else {
                ParseError::Json(e.to_string())
            }
        })?;
        if !value.is_object() {
            return Err(ParseError::NotObject);
        }
        value
    };
    scan(&document)?;
    Ok(document)
}

fn too_deep() -> ParseError {
    ParseError::Limit(format!("nesting deeper than {MAX_DEPTH} levels"))
}

/// Checks the depth bound and, since jsonb cannot store U+0000, that no key or string
/// holds it (such a body is kept raw and reported, never half-stored).
fn scan(document: &Value) -> Result<(), ParseError> {
    match json::scan(document, MAX_DEPTH) {
        None => Ok(()),
        Some(json::Finding::TooDeep) => Err(too_deep()),
        Some(json::Finding::Nul { .. }) => Err(ParseError::Nul),
    }
}

/// `a[b][0][c]=v` → `{"a":{"b":[{"c":"v"}]}}`: objects whose keys are all indexes become
/// arrays in index order.
fn form_to_document(body: &[u8]) -> Result<Value, ParseError> {
    let mut root = Map::new();
    for (n, (key, value)) in url::form_urlencoded::parse(body).enumerate() {
        if n >= MAX_FIELDS {
            return Err(ParseError::Limit(format!("more than {MAX_FIELDS} fields")));
        }
        let path = key_path(&key)?;
        insert(&mut root, &path, Value::String(value.into_owned()))?;
    }
    // Keys of at most MAX_DEPTH - 1 segments make a tree at most MAX_DEPTH deep, so
    // `arrays` recurses no deeper than that.
    Ok(arrays(Value::Object(root)))
}

fn key_path(key: &str) -> Result<Vec<String>, ParseError> {
    if key.len() > MAX_KEY_BYTES {
        return Err(ParseError::Limit(format!(
            "a key longer than {MAX_KEY_BYTES} bytes"
        )));
    }
    let malformed = || ParseError::Form(format!("malformed key `{key}`"));
    let (head, mut rest) = match key.find('[') {
        Some(i) => (&key[..i], &key[i..]),
        None => (key, ""),
    };
    if head.is_empty() {
        return Err(malformed());
    }
    let mut path = vec![head.to_string()];
    while !rest.is_empty() {
        if path.len() >= MAX_DEPTH - 1 {
            return Err(too_deep());
        }
        let inner = rest.strip_prefix('[').ok_or_else(malformed)?;
        let end = inner.find(']').ok_or_else(malformed)?;
        path.push(inner[..end].to_string());
        rest = &inner[end + 1..];
    }
    Ok(path)
}

fn insert(root: &mut Map<String, Value>, path: &[String], value: Value) -> Result<(), ParseError> {
    let (last, parents) = path
        .split_last()
        .ok_or_else(|| ParseError::Form("empty key".into()))?;
    let mut node = root;
    for key in parents {
        let child = node
            .entry(key.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        node = match child {
            Value::Object(map) => map,
            _ => {
                return Err(ParseError::Form(format!(
                    "`{key}` is both a value and a group"
                )));
            }
        };
    }
    node.insert(last.clone(), value);
    Ok(())
}

fn arrays(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let indexed = !map.is_empty() && map.keys().all(|k| k.parse::<usize>().is_ok());
            if indexed {
                let mut items: Vec<(usize, Value)> = map
                    .into_iter()
                    .map(|(k, v)| (k.parse().unwrap_or(0), arrays(v)))
                    .collect();
                items.sort_by_key(|(i, _)| *i);
                Value::Array(items.into_iter().map(|(_, v)| v).collect())
            } else {
                Value::Object(map.into_iter().map(|(k, v)| (k, arrays(v))).collect())
            }
        }
        other => other,
    }
}

/// What a body says about the Kommo account it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountClaim {
    Absent,
    Id(i64),
    /// Present but not a plain decimal integer (`999.0`, `1e3`, `"999x"`, a list): the
    /// caller refuses the body rather than skip the check.
    Malformed,
}

/// The account id the body claims (`account[id]`).
pub fn account_id(document: &Value) -> AccountClaim {
    match document.get("account").and_then(|a| a.get("id")) {
        None => AccountClaim::Absent,
        Some(id) => number(id).map_or(AccountClaim::Malformed, AccountClaim::Id),
    }
}

fn number(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => {
            let digits = s.strip_prefix('-').unwrap_or(s);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            s.parse().ok()
        }
        _ => None,
    }
}

/// The events of one body, at most `MAX_EVENTS` of them.
#[derive(Debug, Default, PartialEq)]
pub struct Events {
    pub events: Vec<Event>,
    /// Entities beyond `MAX_EVENTS`, left in the stored body.
    pub dropped: usize,
}

/// One event per entity of every `type[subtype][i]` group; `account` is context.
pub fn events(document: &Value) -> Events {
    let mut found = Events::default();
    let Some(root) = document.as_object() else {
        return found;
    };
    let out = &mut found.events;
    for (kind, groups) in root {
        if kind == "account" {
            continue;
        }
        let Some(groups) = groups.as_object() else {
            continue;
        };
        let kind = match kind.as_str() {
            "message" => "messages",
            "talk" => "talks",
            other => other,
        };
        for (subtype, items) in groups {
            let items: Vec<&Value> = match items {
                Value::Array(list) => list.iter().collect(),
                Value::Object(_) => vec![items],
                _ => continue,
            };
            for item in items {
                if out.len() >= MAX_EVENTS {
                    found.dropped += 1;
                    continue;
                }
                out.push(Event {
                    kind: kind.to_string(),
                    subtype: subtype.clone(),
                    entity_id: item.get("id").and_then(number),
                    fields: item.clone(),
                });
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const LEAD_STATUS: &str = "leads%5Bstatus%5D%5B0%5D%5Bid%5D=25399013&leads%5Bstatus%5D%5B0%5D%5Bstatus_id%5D=142&leads%5Bstatus%5D%5B0%5D%5Bold_status_id%5D=36341584&leads%5Bstatus%5D%5B0%5D%5Bpipeline_id%5D=3104455&account%5Bid%5D=29085955&account%5Bsubdomain%5D=acme";

    #[test]
    fn form_bodies_become_events() {
        let doc = to_document("application/x-www-form-urlencoded", LEAD_STATUS.as_bytes()).unwrap();
        assert_eq!(account_id(&doc), AccountClaim::Id(29085955));
        let events = events(&doc).events;
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].kind, "leads");
        assert_eq!(events[0].subtype, "status");
        assert_eq!(events[0].entity_id, Some(25399013));
        assert_eq!(events[0].fields["old_status_id"], "36341584");
    }

    #[test]
    fn several_entities_and_messages() {
        let body = "contacts[update][0][id]=1&contacts[update][1][id]=2&message[add][0][id]=abc&message[add][0][chat_id]=c1";
        let doc = to_document("application/x-www-form-urlencoded", body.as_bytes()).unwrap();
        let events = events(&doc).events;
        assert_eq!(events.len(), 3);
        assert!(
            events.iter().any(|e| e.kind == "messages"
                && e.entity_id.is_none()
                && e.fields["chat_id"] == "c1")
        );
    }

    #[test]
    fn json_bodies_and_errors() {
        let doc = to_document(
            "application/json",
            br#"{"leads":{"add":[{"id":5}]},"account":{"id":"7"}}"#,
        )
        .unwrap();
        assert_eq!(account_id(&doc), AccountClaim::Id(7));
        assert_eq!(events(&doc).events[0].entity_id, Some(5));
        assert_eq!(
            to_document("application/json", b"[1]"),
            Err(ParseError::NotObject)
        );
        assert!(to_document("application/json", b"{").is_err());
        assert!(to_document("application/x-www-form-urlencoded", b"[x]=1").is_err());
        assert!(to_document("application/x-www-form-urlencoded", b"a=1&a[b]=2").is_err());
        assert_eq!(events(&json!({})), Events::default());
    }

    const FORM: &str = "application/x-www-form-urlencoded";

    fn nested_key(levels: usize) -> String {
        format!("a{}=1", "[b]".repeat(levels))
    }

    #[test]
    fn deep_form_keys_are_refused_not_recursed_into() {
        // 3,000 levels overflowed the stack of the recursive parser.
        for levels in [MAX_DEPTH, 200, 3_000, 100_000] {
            let body = nested_key(levels);
            assert!(
                matches!(
                    to_document(FORM, body.as_bytes()),
                    Err(ParseError::Limit(_))
                ),
                "{levels} levels"
            );
        }
        let ok = nested_key(MAX_DEPTH - 2);
        let doc = to_document(FORM, ok.as_bytes()).unwrap();
        assert!(doc["a"]["b"].is_object());
    }

    #[test]
    fn deep_json_is_refused() {
        for levels in [MAX_DEPTH, 127, 129, 5_000] {
            let body = format!("{{\"a\":{}1{}}}", "[".repeat(levels), "]".repeat(levels));
            assert!(
                matches!(
                    to_document("application/json", body.as_bytes()),
                    Err(ParseError::Limit(_))
                ),
                "{levels} levels"
            );
        }
        let body = format!("{{\"a\":{}1{}}}", "[".repeat(20), "]".repeat(20));
        assert!(to_document("application/json", body.as_bytes()).is_ok());
    }

    #[test]
    fn field_and_key_counts_are_bounded() {
        let many = "a[]=1&".repeat(MAX_FIELDS + 1);
        assert!(matches!(
            to_document(FORM, many.as_bytes()),
            Err(ParseError::Limit(_))
        ));
        let long = format!("{}=1", "k".repeat(MAX_KEY_BYTES + 1));
        assert!(matches!(
            to_document(FORM, long.as_bytes()),
            Err(ParseError::Limit(_))
        ));
    }

    #[test]
    fn events_beyond_the_cap_are_counted_not_made() {
        let body: String = (0..MAX_EVENTS + 7)
            .map(|i| format!("leads[add][{i}][id]={i}&"))
            .collect();
        let doc = to_document(FORM, body.as_bytes()).unwrap();
        let found = events(&doc);
        assert_eq!(found.events.len(), MAX_EVENTS);
        assert_eq!(found.dropped, 7);
    }

    #[test]
    fn only_an_exact_integer_is_an_account_id() {
        for (body, expected) in [
            ("account[id]=999", AccountClaim::Id(999)),
            ("account[subdomain]=x", AccountClaim::Absent),
            ("account[id]=999.0", AccountClaim::Malformed),
            ("account[id]=1e3", AccountClaim::Malformed),
            ("account[id]=999x", AccountClaim::Malformed),
            ("account[id]= 999", AccountClaim::Malformed),
            ("account[id][]=999", AccountClaim::Malformed),
            ("account[id]=", AccountClaim::Malformed),
        ] {
            let doc = to_document(FORM, body.as_bytes()).unwrap();
            assert_eq!(account_id(&doc), expected, "{body}");
        }
        for (body, expected) in [
            (r#"{"account":{"id":999}}"#, AccountClaim::Id(999)),
            (r#"{"account":{"id":999.0}}"#, AccountClaim::Malformed),
            (r#"{"account":{"id":"999x"}}"#, AccountClaim::Malformed),
            (r#"{"account":{"id":true}}"#, AccountClaim::Malformed),
        ] {
            let doc = to_document("application/json", body.as_bytes()).unwrap();
            assert_eq!(account_id(&doc), expected, "{body}");
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            // Any bytes: an answer, never a panic or a stack overflow.
            #[test]
            fn any_bytes_parse_or_fail_cleanly(body in proptest::collection::vec(any::<u8>(), 0..2048)) {
                let _ = to_document(FORM, &body);
                let _ = to_document("application/json", &body);
            }

            // Bracketed keys of any shape and depth.
            #[test]
            fn any_bracketed_keys(
                segments in proptest::collection::vec("[a-z0-9\\[\\]]{0,6}", 0..80),
                values in proptest::collection::vec("[ -~]{0,8}", 1..4),
            ) {
                let key = format!("k[{}]", segments.join("]["));
                let body: String = values.iter()
                    .map(|v| format!("{}={}&", key, url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>()))
                    .collect();
                if let Ok(doc) = to_document(FORM, body.as_bytes()) {
                    prop_assert!(scan(&doc).is_ok());
                    let found = events(&doc);
                    prop_assert!(found.events.len() <= MAX_EVENTS);
                }
            }

            // Nesting of any depth in JSON, arrays and objects mixed.
            #[test]
            fn any_json_nesting(opens in proptest::collection::vec(any::<bool>(), 0..300)) {
                let mut body = String::from("{\"a\":");
                for &object in &opens {
                    body.push_str(if object { "{\"k\":" } else { "[" });
                }
                body.push('1');
                for &object in opens.iter().rev() {
                    body.push(if object { '}' } else { ']' });
                }
                body.push('}');
                let parsed = to_document("application/json", body.as_bytes());
                if opens.len() + 2 > MAX_DEPTH {
                    prop_assert!(matches!(parsed, Err(ParseError::Limit(_))), "{} levels", opens.len());
                } else {
                    prop_assert!(parsed.is_ok());
                }
            }
        }
    }
}
