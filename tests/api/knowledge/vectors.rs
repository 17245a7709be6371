//! The pgvector path: embeddings written by `process-asset` through the fake provider,
//! the HNSW index `migrate` creates, vector and hybrid search over the labelled set,
//! isolation, and what happens when the provider fails while indexing or searching.

use std::sync::Arc;
use std::time::Duration;

use agents_api::state::AppState;
use serde_json::{Value, json};
use uuid::Uuid;

use super::search::{DOCUMENTS, QUESTIONS, indexed_library};
use super::*;
use crate::support::app::{OrgUsers, TestApp};
use crate::support::fake_ai::FakeAi;

/// Provider calls retry twice, quickly, so outages play out within a test.
pub fn fast_ai_retries(state: &mut AppState) {
    let shared = state.unshared_mut().expect("the state is not shared yet");
    let ai = agents_api::ai::Ai::from_config(&shared.config, shared.redis.clone())
        .expect("the AI client")
        .with_retries(2, Duration::from_millis(10));
    shared.ai = Arc::new(ai);
}

async fn vector_app(fake: &FakeAi) -> TestApp {
    TestApp::builder()
        .with_jobs()
        .with_pgvector()
        .env("AI_BASE_URL", &fake.base_url())
        .adjust_state(fast_ai_retries)
        .spawn()
        .await
}

async fn top_file(app: &TestApp, org: Uuid, user: Uuid, query: &str, mode: &str) -> Option<String> {
    let found = search(app, org, user, json!({"query": query, "mode": mode}))
        .await
        .expect(200)
        .body;
    assert_eq!(found["mode"], mode, "{found}");
    found["data"][0]["filename"].as_str().map(str::to_owned)
}

#[tokio::test]
async fn hybrid_search_ranks_the_labelled_set_at_least_as_well_as_either_mode() {
    let fake = FakeAi::start().await;
    let app = vector_app(&fake).await;
    let OrgUsers {
        org, admin, member, ..
    } = app.org_with_roles().await;
    indexed_library(&app, org, admin).await;

    // Every asset carries embeddings, one per chunk, of the configured size.
    let list = app.get(&assets_path(org), member).await.expect(200).body;
    for asset in list["data"].as_array().unwrap() {
        assert_eq!(asset["embedded"], true, "{asset}");
    }
    let mut db = app.admin_db().await;
    let (chunks, embedded, dims): (i64, i64, Option<i32>) = sqlx::query_as(
        "SELECT count(*), count(embedding), max(vector_dims(embedding)) FROM knowledge_chunks",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(chunks, DOCUMENTS.len() as i64);
    assert_eq!(embedded, chunks);
    assert_eq!(dims, Some(1536));
    // `migrate` made the HNSW cosine index for AI_EMBEDDING_DIMENSIONS.
    let index: String = sqlx::query_scalar(
        "SELECT indexdef FROM pg_indexes WHERE indexname = 'knowledge_chunks_embedding_1536_idx'",
    )
    .fetch_one(&mut db)
    .await
    .expect("the embedding index exists");
    assert!(
        index.contains("hnsw") && index.contains("vector_cosine_ops"),
        "{index}"
    );
    let embedding_calls = fake.embedding_calls().len();
    assert!(embedding_calls >= DOCUMENTS.len(), "{embedding_calls}");

    let mut right = [0usize; 3];
    let mut misses = Vec::new();
    for (question, expected) in QUESTIONS {
        for (i, mode) in ["fulltext", "vector", "hybrid"].into_iter().enumerate() {
            let top = top_file(&app, org, member, question, mode).await;
            if top.as_deref() == Some(*expected) {
                right[i] += 1;
            } else if mode == "hybrid" {
                misses.push(format!("{question:?}: expected {expected}, got {top:?}"));
            }
        }
    }
    assert!(misses.is_empty(), "hybrid missed:\n{}", misses.join("\n"));
    let [fulltext, vector, hybrid] = right;
    assert!(
        hybrid >= fulltext && hybrid >= vector,
        "hybrid {hybrid}, fulltext {fulltext}, vector {vector} of {}",
        QUESTIONS.len()
    );
    // The fake's embeddings share words, so vector search alone gets most of them.
    assert!(vector * 2 >= QUESTIONS.len(), "vector {vector}");

    // Each question embedded its query once per vector or hybrid search.
    assert_eq!(
        fake.embedding_calls().len() - embedding_calls,
        QUESTIONS.len() * 2
    );
    let hit = search(
        &app,
        org,
        member,
        json!({"query": "laptop warranty", "mode": "vector", "limit": 1}),
    )
    .await
    .expect(200)
    .body;
    let score = hit["data"][0]["score"].as_f64().unwrap();
    assert!(
        score > 0.0 && score <= 1.0 + 1e-6,
        "cosine similarity: {hit}"
    );
}

#[tokio::test]
async fn vector_search_never_crosses_orgs_or_agents() {
    let fake = FakeAi::start().await;
    let app = vector_app(&fake).await;
    let OrgUsers {
        org, admin, member, ..
    } = app.org_with_roles().await;
    indexed_library(&app, org, admin).await;
    let stranger = Uuid::now_v7();
    let theirs = app.create_org(stranger).await;
    upload_and_wait(
        &app,
        theirs,
        stranger,
        "theirs.txt",
        b"Refunds are issued within 14 days of the purchase, says the other company.",
    )
    .await;

    for mode in ["vector", "hybrid"] {
        let found = search(
            &app,
            theirs,
            stranger,
            json!({"query": "refunds within 14 days", "mode": mode, "limit": 50}),
        )
        .await
        .expect(200)
        .body;
        let files: Vec<&str> = found["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["filename"].as_str().unwrap())
            .collect();
        assert_eq!(files, ["theirs.txt"], "{mode}: {found}");
    }
    // Not a member: the org does not exist for them.
    search(
        &app,
        org,
        stranger,
        json!({"query": "refunds", "mode": "vector"}),
    )
    .await
    .expect_problem(404, "not_found");

    // An agent's files are only in that agent's (and the org-wide) results.
    let agent = app.create_agent(org, admin, "Sales").await;
    let agent_id = agent["id"].as_str().unwrap();
    let body = multipart(&[
        Part::Text {
            name: "agent_id",
            value: agent_id,
        },
        Part::File {
            name: "file",
            filename: Some("sales_only.txt"),
            content_type: None,
            bytes: b"Sales secret: refunds for enterprise customers within 3 days.",
        },
    ]);
    let uploaded = post_multipart(&app, org, admin, body)
        .await
        .expect(202)
        .body;
    wait_settled(&app, org, admin, uploaded["asset"]["id"].as_str().unwrap()).await;
    let files = |agent: Option<&str>| {
        let mut body = json!({"query": "enterprise refunds", "mode": "vector", "limit": 50});
        if let Some(agent) = agent {
            body["agent_id"] = json!(agent);
        }
        let app = &app;
        async move {
            let found = search(app, org, member, body).await.expect(200).body;
            found["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| h["filename"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert!(
        files(Some(agent_id))
            .await
            .contains(&"sales_only.txt".to_owned())
    );
    let other = app.create_agent(org, admin, "Support").await;
    assert!(
        !files(other["id"].as_str())
            .await
            .contains(&"sales_only.txt".to_owned())
    );
}

#[tokio::test]
async fn a_provider_outage_while_indexing_is_retried_then_fails_the_asset_visibly() {
    let fake = FakeAi::start().await;
    let app = vector_app(&fake).await;
    let OrgUsers { org, admin, .. } = app.org_with_roles().await;

    // A short outage: the call's own retries ride it out.
    fake.fail_next(1, 503, None);
    let asset = upload_and_wait(
        &app,
        org,
        admin,
        "brief.txt",
        b"Short outages are survived.",
    )
    .await;
    assert_eq!(asset["status"], "indexed", "{asset}");
    assert_eq!(asset["embedded"], true, "{asset}");

    // A long one: every attempt of every run fails, and the asset says why.
    fake.fail_next(10_000, 503, None);
    let uploaded = upload(
        &app,
        org,
        admin,
        "long.txt",
        b"Long outages fail the asset.",
    )
    .await
    .expect(202)
    .body;
    let asset = wait_settled(&app, org, admin, uploaded["asset"]["id"].as_str().unwrap()).await;
    assert_eq!(asset["status"], "failed", "{asset}");
    let error = asset["error"].as_str().unwrap();
    assert!(error.contains("503"), "{error}");
    let job = app
        .get(
            &format!(
                "/v1/orgs/{org}/jobs/{}",
                uploaded["job"]["id"].as_str().unwrap()
            ),
            admin,
        )
        .await
        .expect(200)
        .body;
    assert_eq!(job["status"], "failed", "{job}");
    assert!(job["attempts"].as_i64().unwrap() > 1, "retried: {job}");
    // Nothing half-written: the failed asset has no chunks.
    let chunks = all_chunks(&app, org, admin, uploaded["asset"]["id"].as_str().unwrap()).await;
    assert!(chunks.is_empty(), "{chunks:?}");
}

#[tokio::test]
async fn search_falls_back_to_full_text_when_the_provider_fails_at_query_time() {
    let fake = FakeAi::start().await;
    let app = vector_app(&fake).await;
    let OrgUsers {
        org, admin, member, ..
    } = app.org_with_roles().await;
    upload_and_wait(&app, org, admin, "warranty.txt", DOCUMENTS[2].1.as_bytes()).await;

    fake.fail_next(2, 500, None);
    let found: Value = search(&app, org, member, json!({"query": "laptop warranty"}))
        .await
        .expect(200)
        .body;
    assert_eq!(found["mode"], "fulltext", "{found}");
    assert!(
        found["notice"].as_str().unwrap().contains("provider"),
        "{found}"
    );
    assert_eq!(found["data"][0]["filename"], "warranty.txt");

    fake.fail_next(2, 500, None);
    search(
        &app,
        org,
        member,
        json!({"query": "laptop warranty", "mode": "vector"}),
    )
    .await
    .expect_problem(503, "unavailable");

    // The provider is back: hybrid again.
    let found = search(&app, org, member, json!({"query": "laptop warranty"}))
        .await
        .expect(200)
        .body;
    assert_eq!(found["mode"], "hybrid", "{found}");
}

#[tokio::test]
async fn without_a_provider_pgvector_alone_gives_full_text_and_says_why() {
    let app = TestApp::builder().with_jobs().with_pgvector().spawn().await;
    let OrgUsers {
        org, admin, member, ..
    } = app.org_with_roles().await;
    let asset = upload_and_wait(&app, org, admin, "warranty.txt", DOCUMENTS[2].1.as_bytes()).await;
    assert_eq!(asset["embedded"], false, "{asset}");
    let found = search(&app, org, member, json!({"query": "laptop warranty"}))
        .await
        .expect(200)
        .body;
    assert_eq!(found["mode"], "fulltext");
    assert!(
        found["notice"].as_str().unwrap().contains("embeddings"),
        "{found}"
    );
    search(&app, org, member, json!({"query": "x", "mode": "vector"}))
        .await
        .expect_problem(409, "conflict");

    let ready = app
        .send(reqwest::Method::GET, "/health/ready", None, None)
        .await;
    assert_eq!(ready.body["knowledge"]["pgvector"], true, "{}", ready.body);
    assert_eq!(ready.body["knowledge"]["search"], "fulltext");
}

#[tokio::test]
async fn readiness_says_search_is_full_text_only_without_pgvector() {
    let fake = FakeAi::start().await;
    let app = TestApp::builder()
        .env("AI_BASE_URL", &fake.base_url())
        .spawn()
        .await;
    let ready = app
        .send(reqwest::Method::GET, "/health/ready", None, None)
        .await;
    let knowledge = &ready.body["knowledge"];
    assert_eq!(knowledge["ai_provider"], true, "{}", ready.body);
    // The suite's main PostgreSQL may or may not have pgvector; readiness tells which.
    let mut db = app.admin_db().await;
    let has_vector: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'vector')")
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert_eq!(knowledge["pgvector"], has_vector);
    assert_eq!(
        knowledge["search"],
        if has_vector { "hybrid" } else { "fulltext" }
    );
}
