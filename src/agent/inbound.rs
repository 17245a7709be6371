//! Incoming chat messages in Kommo's webhook events (`message[add][0][…]`, spec §13): the
//! fields as Kommo sends them, form values as strings or JSON values as numbers alike.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::db::conversations::Inbound;
use crate::kommo::webhook::Event;

/// The longest message text kept; Kommo's own limit is lower.
const MAX_TEXT_CHARS: usize = 20_000;
const MAX_ID_CHARS: usize = 200;

/// A field as text: a string as sent, a number written out.
fn text(fields: &Value, key: &str) -> Option<String> {
    match fields.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
    .map(|s| s.trim().to_owned())
    .filter(|s| !s.is_empty())
}

fn number(fields: &Value, key: &str) -> Option<i64> {
    match fields.get(key)? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|n| *n > 0)
}

fn bounded(value: Option<String>, max: usize) -> Option<String> {
    value.map(|v| v.chars().take(max).collect())
}

/// The incoming chat message an event carries; `None` for any other event (outgoing
/// messages, other entities) or one without the ids a conversation needs.
pub fn incoming_message(event: &Event) -> Option<Inbound> {
    if event.kind != "messages" || event.subtype != "add" {
        return None;
    }
    let f = &event.fields;
    if text(f, "type").as_deref() != Some("incoming") {
        return None;
    }
    let kommo_message_id = text(f, "id").filter(|id| id.chars().count() <= MAX_ID_CHARS)?;
    let chat_id = text(f, "chat_id").filter(|id| id.chars().count() <= MAX_ID_CHARS)?;
    let lead_id = match text(f, "entity_type").as_deref() {
        Some("lead" | "leads") => number(f, "entity_id").or_else(|| number(f, "element_id")),
        _ => None,
    };
    let sent_at = number(f, "created_at").and_then(|s| DateTime::<Utc>::from_timestamp(s, 0));
    let author = f.get("author").and_then(|a| text(a, "name"));
    let message_text: String = f
        .get("text")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .chars()
        .filter(|c| *c != '\0')
        .take(MAX_TEXT_CHARS)
        .collect();
    Some(Inbound {
        kommo_message_id,
        chat_id,
        talk_id: bounded(text(f, "talk_id"), MAX_ID_CHARS),
        contact_id: number(f, "contact_id"),
        lead_id,
        text: message_text,
        sent_at,
        author: bounded(author, MAX_ID_CHARS),
        origin: bounded(text(f, "origin"), 100),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kommo::webhook::{events, to_document};

    fn form(pairs: &[(&str, &str)]) -> Vec<Event> {
        let body: String = pairs
            .iter()
            .map(|(k, v)| format!("{}={}", urlencode(k), urlencode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let doc = to_document("application/x-www-form-urlencoded", body.as_bytes()).unwrap();
        events(&doc).events
    }

    fn urlencode(s: &str) -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    }

    #[test]
    fn kommo_incoming_messages_become_inbound() {
        let events = form(&[
            ("message[add][0][id]", "c5b3-41"),
            ("message[add][0][chat_id]", "chat-9"),
            ("message[add][0][talk_id]", "77"),
            ("message[add][0][contact_id]", "501"),
            ("message[add][0][text]", "Сколько стоит доставка?"),
            ("message[add][0][created_at]", "1765000000"),
            ("message[add][0][type]", "incoming"),
            ("message[add][0][entity_type]", "lead"),
            ("message[add][0][entity_id]", "9001"),
            ("message[add][0][author][id]", "u-1"),
            ("message[add][0][author][type]", "external"),
            ("message[add][0][author][name]", "Ivan"),
            ("message[add][0][origin]", "telegram"),
            ("account[id]", "1"),
        ]);
        let message = incoming_message(&events[0]).expect("incoming");
        assert_eq!(message.kommo_message_id, "c5b3-41");
        assert_eq!(message.chat_id, "chat-9");
        assert_eq!(message.lead_id, Some(9001));
        assert_eq!(message.contact_id, Some(501));
        assert_eq!(message.text, "Сколько стоит доставка?");
        assert_eq!(message.author.as_deref(), Some("Ivan"));
        assert_eq!(message.origin.as_deref(), Some("telegram"));
        assert_eq!(message.sent_at.map(|t| t.timestamp()), Some(1_765_000_000));
    }

    #[test]
    fn outgoing_and_incomplete_messages_are_not_inbound() {
        let outgoing = form(&[
            ("message[add][0][id]", "m1"),
            ("message[add][0][chat_id]", "c1"),
            ("message[add][0][type]", "outgoing"),
        ]);
        assert!(incoming_message(&outgoing[0]).is_none());
        let no_chat = form(&[
            ("message[add][0][id]", "m1"),
            ("message[add][0][type]", "incoming"),
        ]);
        assert!(incoming_message(&no_chat[0]).is_none());
        let lead = form(&[("leads[add][0][id]", "5")]);
        assert!(incoming_message(&lead[0]).is_none());
    }
}
