//! Messages into a Kommo chat through the Chats API (amojo), for connections with a chat
//! channel of their own. amojo takes no OAuth token: each request is signed with the
//! channel's secret over its method, body digest, content type, date and path, so the
//! body sent must be byte for byte the one digested. The origin comes from
//! `KOMMO_CHATS_BASE_URL`, never from user input, and the channel's `scope_id`, the one
//! part of the path that varies, is checked before it goes into it.

use chrono::{DateTime, Utc};
use hmac::{KeyInit, Mac};
use md5::{Digest, Md5};
use reqwest::header::{CONTENT_TYPE, DATE, HeaderValue};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use crate::kommo::KommoClient;
use crate::kommo::client::{KommoError, problem_detail, transport_error};

const CONTENT_TYPE_JSON: &str = "application/json";
/// What metrics and traces call every send: the scope id is left out of labels.
const ENDPOINT: &str = "/v2/origin/custom/{scope_id}";

/// A Kommo Chats channel as registered for a connection. The secret signs requests and
/// never appears in `Debug` output.
#[derive(Debug, Clone)]
pub struct ChatChannel {
    /// `{channel id}_{account amojo id}`, as Kommo gives it when the channel is connected.
    pub scope_id: String,
    pub secret: SecretString,
    /// The id the channel's messages are sent under.
    pub bot_id: String,
    /// The sender name used when a message names none.
    pub bot_name: String,
}

/// Where a `scope_id` may appear: a path segment, so nothing that could leave it.
pub fn is_valid_scope_id(scope_id: &str) -> bool {
    (1..=200).contains(&scope_id.len())
        && scope_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The path a request is signed over and sent to (below the Chats API origin).
fn send_path(scope_id: &str) -> String {
    format!("/v2/origin/custom/{scope_id}")
}

/// The `new_message` event of one text message from the channel into a chat.
fn message_body(
    sender_id: &str,
    sender_name: &str,
    chat_id: &str,
    msgid: &str,
    text: &str,
    now: DateTime<Utc>,
) -> Value {
    json!({
        "event_type": "new_message",
        "payload": {
            "timestamp": now.timestamp(),
            "msec_timestamp": now.timestamp_millis(),
            "msgid": msgid,
            // The chat as Kommo knows it (`conversation_ref_id`) and as this channel
            // names it: the webhook gives only Kommo's id, so it serves as both.
            "conversation_id": chat_id,
            "conversation_ref_id": chat_id,
            "sender": {"id": sender_id, "name": sender_name},
            "message": {"type": "text", "text": text},
            "silent": false,
        },
    })
}

/// The `Date` header in RFC 2822 form with a two-digit day, as Kommo's own examples
/// write it (`date(DATE_RFC2822)`); the signature covers it verbatim.
fn http_date(now: DateTime<Utc>) -> String {
    now.format("%a, %d %b %Y %H:%M:%S %z").to_string()
}

/// `Content-MD5` and `X-Signature` of a request: lowercase hex MD5 of the body, and
/// lowercase hex HMAC-SHA1 with the channel secret over the method, that digest, the
/// content type, the `Date` header and the path, one per line.
fn sign(secret: &[u8], method: &str, body: &[u8], date: &str, path: &str) -> (String, String) {
    let content_md5 = hex::encode(Md5::digest(body));
    let text = [method, &content_md5, CONTENT_TYPE_JSON, date, path].join("\n");
    // HMAC accepts a key of any length, so this cannot fail.
    let mut mac = <hmac::Hmac<sha1::Sha1> as KeyInit>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(text.as_bytes());
    (content_md5, hex::encode(mac.finalize().into_bytes()))
}

fn header(value: &str) -> Result<HeaderValue, KommoError> {
    HeaderValue::from_str(value)
        .map_err(|_| KommoError::InvalidChannel("a signed header is not a valid value".into()))
}

impl KommoClient {
    /// Sends `text` into the chat `chat_id` from the channel, as `sender_name` (the
    /// channel's bot name when empty). `msgid` is ours and stable across retries, so
    /// Kommo can tell a resend from a new message. Returns the message id Kommo gives
    /// back.
    pub async fn send_chat_message(
        &self,
        channel: &ChatChannel,
        chat_id: &str,
        msgid: &str,
        sender_name: &str,
        text: &str,
    ) -> Result<Option<String>, KommoError> {
        if !is_valid_scope_id(&channel.scope_id) {
            return Err(KommoError::InvalidChannel(
                "scope_id must be 1 to 200 of A-Z a-z 0-9 _ -".into(),
            ));
        }
        let sender_name = match sender_name.trim() {
            "" => channel.bot_name.as_str(),
            name => name,
        };
        let now = Utc::now();
        let body = message_body(&channel.bot_id, sender_name, chat_id, msgid, text, now);
        let body = serde_json::to_vec(&body).map_err(|e| KommoError::Decode(e.to_string()))?;
        let path = send_path(&channel.scope_id);
        let date = http_date(now);
        let (content_md5, signature) = sign(
            channel.secret.expose_secret().as_bytes(),
            Method::POST.as_str(),
            &body,
            &date,
            &path,
        );
        let request = self
            .http()
            .post(format!("{}{path}", self.chats_base_url()))
            .header(DATE, header(&date)?)
            .header(CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE_JSON))
            .header("Content-MD5", header(&content_md5)?)
            .header("X-Signature", header(&signature)?)
            .body(body)
            .build()
            .map_err(transport_error)?;
        let rate_key = format!("amojo:{}", channel.scope_id);
        let answer = self.execute_as(&rate_key, ENDPOINT, request).await?;
        match answer.status {
            // amojo's 401/403 mean a wrong secret or a disconnected channel, which no
            // OAuth refresh can fix: they stay plain statuses, not `Unauthorized`.
            s if s.is_success() && s != StatusCode::NO_CONTENT => {
                let value: Value = serde_json::from_slice(&answer.body)
                    .map_err(|e| KommoError::Decode(e.to_string()))?;
                Ok(value["new_message"]["msgid"].as_str().map(str::to_owned))
            }
            s if s.is_success() => Ok(None),
            s => Err(KommoError::Status {
                status: s.as_u16(),
                detail: problem_detail(&answer.body),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_matches_an_independent_computation() {
        // Computed with Python's hashlib and hmac:
        //   md5 = hashlib.md5(body).hexdigest()
        //   hmac.new(b"chan-secret-0123", "\n".join(["POST", md5, "application/json",
        //            date, path]).encode(), hashlib.sha1).hexdigest()
        let body = br#"{"event_type":"new_message","payload":{"msgid":"m-1"}}"#;
        let date = "Thu, 01 Jan 2026 12:00:00 +0000";
        let path = "/v2/origin/custom/chan_42-scope";
        let (md5, signature) = sign(b"chan-secret-0123", "POST", body, date, path);
        assert_eq!(md5, "d8bffa8aace670754c99d8288eccd0e0");
        assert_eq!(signature, "6e88bafcfd144ca527f33fb68bdb862b29027881");
    }

    #[test]
    fn the_body_is_a_new_message_event() {
        let now = DateTime::from_timestamp_millis(1_767_268_800_123).expect("a time");
        let body = message_body("bot-1", "Ana", "chat-9", "m-1", "Hello", now);
        assert_eq!(
            body,
            json!({
                "event_type": "new_message",
                "payload": {
                    "timestamp": 1_767_268_800, "msec_timestamp": 1_767_268_800_123_i64,
                    "msgid": "m-1", "conversation_id": "chat-9", "conversation_ref_id": "chat-9",
                    "sender": {"id": "bot-1", "name": "Ana"},
                    "message": {"type": "text", "text": "Hello"},
                    "silent": false,
                },
            })
        );
        assert_eq!(http_date(now), "Thu, 01 Jan 2026 12:00:00 +0000");
    }

    #[test]
    fn scope_ids_cannot_leave_their_path_segment() {
        for ok in [
            "a",
            "f90ba33d-c9d9-44da_b3f6-3d1e5c7d2b1e",
            &"x".repeat(200),
        ] {
            assert!(is_valid_scope_id(ok), "{ok}");
        }
        for bad in [
            "",
            "../v3/x",
            "a/b",
            "a?b=1",
            "a#b",
            "a%2Fb",
            "a b",
            "é",
            &"x".repeat(201),
        ] {
            assert!(!is_valid_scope_id(bad), "{bad}");
        }
    }
}
