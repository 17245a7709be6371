//! Kommo's webhook bodies: `application/x-www-form-urlencoded` with bracketed keys
//! (`leads[status][0][old_status_id]=…`), or the same structure as JSON. Parsing turns a
//! body into one event per entity: type, subtype, entity id and the fields Kommo sent.

use serde_json::{Map, Value};

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
}

pub fn is_form(content_type: &str) -> bool {
    essence(content_type) == "application/x-www-form-urlencoded"
}

pub fn is_json(content_type: &str) -> bool {
    let e = essence(content_type);
    e == "application/json" || (e.starts_with("application/") && e.ends_with("+json"))
}

fn essence(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// The body as a nested JSON object, whichever format it came in.
pub fn to_document(content_type: &str, body: &[u8]) -> Result<Value, ParseError> {
    let document = if is_form(content_type) {
        form_to_document(body)?
    } else {
        let value: Value =
            serde_json::from_slice(body).map_err(|e| ParseError::Json(e.to_string()))?;
        if !value.is_object() {
            return Err(ParseError::NotObject);
        }
        value
    };
    // jsonb cannot store U+0000; such a body is kept raw and reported, never half-stored.
    if has_nul(&document) {
        return Err(ParseError::Nul);
    }
    Ok(document)
}

fn has_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

/// `a[b][0][c]=v` → `{"a":{"b":[{"c":"v"}]}}`: objects whose keys are all indexes become
/// arrays in index order.
fn form_to_document(body: &[u8]) -> Result<Value, ParseError> {
    let mut root = Map::new();
    for (key, value) in url::form_urlencoded::parse(body) {
        let path =
            key_path(&key).ok_or_else(|| ParseError::Form(format!("malformed key `{key}`")))?;
        insert(&mut root, &path, Value::String(value.into_owned()))?;
    }
    Ok(arrays(Value::Object(root)))
}

fn key_path(key: &str) -> Option<Vec<String>> {
    let (head, mut rest) = match key.find('[') {
        Some(i) => (&key[..i], &key[i..]),
        None => (key, ""),
    };
    if head.is_empty() {
        return None;
    }
    let mut path = vec![head.to_string()];
    while !rest.is_empty() {
        let inner = rest.strip_prefix('[')?;
        let end = inner.find(']')?;
        path.push(inner[..end].to_string());
        rest = &inner[end + 1..];
    }
    Some(path)
}

fn insert(node: &mut Map<String, Value>, path: &[String], value: Value) -> Result<(), ParseError> {
    let (first, rest) = path
        .split_first()
        .ok_or_else(|| ParseError::Form("empty key".into()))?;
    if rest.is_empty() {
        node.insert(first.clone(), value);
        return Ok(());
    }
    let child = node
        .entry(first.clone())
        .or_insert_with(|| Value::Object(Map::new()));
    match child {
        Value::Object(map) => insert(map, rest, value),
        _ => Err(ParseError::Form(format!(
            "`{first}` is both a value and a group"
        ))),
    }
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

/// The account id the body claims (`account[id]`), when present.
pub fn account_id(document: &Value) -> Option<i64> {
    number(document.get("account")?.get("id")?)
}

fn number(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// One event per entity of every `type[subtype][i]` group; `account` is context.
pub fn events(document: &Value) -> Vec<Event> {
    let Some(root) = document.as_object() else {
        return Vec::new();
    };
    let mut out = Vec::new();
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
                out.push(Event {
                    kind: kind.to_string(),
                    subtype: subtype.clone(),
                    entity_id: item.get("id").and_then(number),
                    fields: item.clone(),
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const LEAD_STATUS: &str = "leads%5Bstatus%5D%5B0%5D%5Bid%5D=25399013&leads%5Bstatus%5D%5B0%5D%5Bstatus_id%5D=142&leads%5Bstatus%5D%5B0%5D%5Bold_status_id%5D=36341584&leads%5Bstatus%5D%5B0%5D%5Bpipeline_id%5D=3104455&account%5Bid%5D=29085955&account%5Bsubdomain%5D=acme";

    #[test]
    fn form_bodies_become_events() {
        let doc = to_document("application/x-www-form-urlencoded", LEAD_STATUS.as_bytes()).unwrap();
        assert_eq!(account_id(&doc), Some(29085955));
        let events = events(&doc);
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
        let events = events(&doc);
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
        assert_eq!(account_id(&doc), Some(7));
        assert_eq!(events(&doc)[0].entity_id, Some(5));
        assert_eq!(
            to_document("application/json", b"[1]"),
            Err(ParseError::NotObject)
        );
        assert!(to_document("application/json", b"{").is_err());
        assert!(to_document("application/x-www-form-urlencoded", b"[x]=1").is_err());
        assert!(to_document("application/x-www-form-urlencoded", b"a=1&a[b]=2").is_err());
        assert_eq!(events(&json!({})), vec![]);
    }
}
