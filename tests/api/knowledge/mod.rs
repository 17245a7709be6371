//! The knowledge base through the API: uploads and their refusals, indexing of every
//! format by the real `process-asset` job, the chunk preview, search, and isolation.

mod assets;
mod formats;
mod graph;
mod search;
mod store;
pub mod vectors;

use std::time::Duration;

use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::app::{Response, TestApp, eventually, into_response};

const PATIENCE: Duration = Duration::from_secs(60);

pub fn assets_path(org: Uuid) -> String {
    format!("/v1/orgs/{org}/knowledge/assets")
}

/// One part of a multipart body.
pub enum Part<'a> {
    File {
        name: &'a str,
        filename: Option<&'a str>,
        content_type: Option<&'a str>,
        bytes: &'a [u8],
    },
    Text {
        name: &'a str,
        value: &'a str,
    },
}

const BOUNDARY: &str = "agents-api-test-boundary-7d1f";

/// A `multipart/form-data` body, written out by hand so tests control every byte.
pub fn multipart(parts: &[Part<'_>]) -> Vec<u8> {
    let mut body = Vec::new();
    for part in parts {
        body.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        match part {
            Part::File {
                name,
                filename,
                content_type,
                bytes,
            } => {
                let filename = filename
                    .map(|f| format!("; filename=\"{f}\""))
                    .unwrap_or_default();
                body.extend_from_slice(
                    format!("Content-Disposition: form-data; name=\"{name}\"{filename}\r\n")
                        .as_bytes(),
                );
                if let Some(t) = content_type {
                    body.extend_from_slice(format!("Content-Type: {t}\r\n").as_bytes());
                }
                body.extend_from_slice(b"\r\n");
                body.extend_from_slice(bytes);
                body.extend_from_slice(b"\r\n");
            }
            Part::Text { name, value } => {
                body.extend_from_slice(
                    format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
                        .as_bytes(),
                );
            }
        }
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

pub async fn post_multipart(app: &TestApp, org: Uuid, user: Uuid, body: Vec<u8>) -> Response {
    let response = reqwest::Client::new()
        .post(app.url(&assets_path(org)))
        .bearer_auth(app.token(user))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(body)
        .send()
        .await
        .expect("upload request");
    into_response(response).await
}

/// Uploads `bytes` as `filename`; returns the response (202 or 200 on success).
pub async fn upload(
    app: &TestApp,
    org: Uuid,
    user: Uuid,
    filename: &str,
    bytes: &[u8],
) -> Response {
    let body = multipart(&[Part::File {
        name: "file",
        filename: Some(filename),
        content_type: Some("application/octet-stream"),
        bytes,
    }]);
    post_multipart(app, org, user, body).await
}

/// Uploads and waits until the asset is indexed (or failed); returns the asset.
pub async fn upload_and_wait(
    app: &TestApp,
    org: Uuid,
    user: Uuid,
    filename: &str,
    bytes: &[u8],
) -> Value {
    let uploaded = upload(app, org, user, filename, bytes)
        .await
        .expect(202)
        .body;
    let asset = wait_settled(app, org, user, uploaded["asset"]["id"].as_str().unwrap()).await;
    // An indexed asset queues its graph job when a provider is set: let it finish, so
    // that the provider faults a test injects next meet the calls the test makes.
    jobs_settled(app, org, user).await;
    asset
}

/// Waits until the org has no queued or running job.
pub async fn jobs_settled(app: &TestApp, org: Uuid, user: Uuid) {
    eventually("the org's jobs are done", PATIENCE, || async {
        let mut busy = 0;
        for status in ["queued", "running"] {
            let page = app
                .get(&format!("/v1/orgs/{org}/jobs?status={status}"), user)
                .await
                .expect(200)
                .body;
            busy += page["data"].as_array().map_or(0, Vec::len);
        }
        (busy == 0).then_some(())
    })
    .await
}

/// Polls the asset until it is `indexed` or `failed`.
pub async fn wait_settled(app: &TestApp, org: Uuid, user: Uuid, asset_id: &str) -> Value {
    let path = format!("{}/{asset_id}", assets_path(org));
    eventually("the asset is indexed or failed", PATIENCE, || async {
        let asset = app.get(&path, user).await.expect(200).body;
        match asset["status"].as_str() {
            Some("indexed" | "failed") => Ok(asset),
            _ => Err(asset.to_string()),
        }
    })
    .await
}

/// Every chunk of an asset, in order, through the paginated preview.
pub async fn all_chunks(app: &TestApp, org: Uuid, user: Uuid, asset_id: &str) -> Vec<Value> {
    let mut chunks = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("{}/{asset_id}/chunks?limit=100", assets_path(org));
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page = app.get(&path, user).await.expect(200).body;
        chunks.extend(page["data"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return chunks,
        }
    }
}

pub async fn search(app: &TestApp, org: Uuid, user: Uuid, body: Value) -> Response {
    app.post(&format!("/v1/orgs/{org}/knowledge/search"), user, body)
        .await
}

/// The filenames of a search's hits, best first.
pub async fn search_files(app: &TestApp, org: Uuid, user: Uuid, query: &str) -> Vec<String> {
    let found = search(app, org, user, json!({"query": query, "mode": "fulltext"}))
        .await
        .expect(200)
        .body;
    found["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|hit| hit["filename"].as_str().unwrap().to_owned())
        .collect()
}

/// English prose of about `words` words, in paragraphs, mentioning `topic`.
pub fn prose(topic: &str, words: usize) -> String {
    let sentence = format!(
        "The {topic} handbook explains how our team answers customers, keeps promises and \
         follows up on every request within one business day. "
    );
    let mut text = String::new();
    let mut count = 0;
    let mut paragraph = 0;
    while count < words {
        text.push_str(&sentence);
        count += sentence.split_whitespace().count();
        paragraph += 1;
        if paragraph % 4 == 0 {
            text.push_str("\n\n");
        }
    }
    text
}
