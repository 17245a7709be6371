//! The knowledge graph: `extract-knowledge-graph` run by `process-asset` through the
//! fake provider, entities merged across files, the entity pages and their refusals,
//! refused answers retried and never half-written, a provider outage failing visibly,
//! and deletes taking the facts only the deleted file supported.

use serde_json::{Value, json};
use uuid::Uuid;

use super::vectors::fast_ai_retries;
use super::*;
use crate::support::app::{OrgUsers, TestApp};
use crate::support::fake_ai::{Answer, FakeAi};

const GRAPH_JOB: &str = "extract-knowledge-graph";

async fn graph_app(fake: &FakeAi) -> TestApp {
    TestApp::builder()
        .with_jobs()
        .env("AI_BASE_URL", &fake.base_url())
        .adjust_state(fast_ai_retries)
        .spawn()
        .await
}

fn entities_path(org: Uuid) -> String {
    format!("/v1/orgs/{org}/knowledge/entities")
}

/// Every graph job of the org once none is queued or running, oldest first.
async fn settled_graph_jobs(app: &TestApp, org: Uuid, user: Uuid, count: usize) -> Vec<Value> {
    let path = format!("/v1/orgs/{org}/jobs?type={GRAPH_JOB}&limit=100");
    eventually("the graph jobs are done", PATIENCE, || async {
        let page = app.get(&path, user).await.expect(200).body;
        let jobs = page["data"].as_array().cloned().unwrap_or_default();
        let done = jobs
            .iter()
            .all(|j| matches!(j["status"].as_str(), Some("succeeded" | "failed")));
        if jobs.len() == count && done {
            let mut jobs = jobs;
            jobs.reverse();
            Ok(jobs)
        } else {
            Err(page.to_string())
        }
    })
    .await
}

/// Every entity through the paginated list, by name.
async fn entity_names(app: &TestApp, org: Uuid, user: Uuid, query: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("{}?limit=1{query}", entities_path(org));
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page = app.get(&path, user).await.expect(200).body;
        for entity in page["data"].as_array().unwrap() {
            names.push(entity["name"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    names.sort();
    names
}

async fn entity_named(app: &TestApp, org: Uuid, user: Uuid, name: &str) -> Value {
    let page = app
        .get(&format!("{}?q={name}", entities_path(org)), user)
        .await
        .expect(200)
        .body;
    let id = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("{name} in {page}"))["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.get(&format!("{}/{id}", entities_path(org)), user)
        .await
        .expect(200)
        .body
}

fn related(entity: &Value) -> Vec<(String, String, String)> {
    let mut edges: Vec<(String, String, String)> = entity["relationships"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["direction"].as_str().unwrap().to_owned(),
                r["type"].as_str().unwrap().to_owned(),
                r["entity"]["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    edges.sort();
    edges
}

fn source_files(entity: &Value) -> Vec<String> {
    let mut files: Vec<String> = entity["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["filename"].as_str().unwrap().to_owned())
        .collect();
    files.sort();
    files
}

#[tokio::test]
async fn the_graph_of_uploaded_files_is_merged_across_them_and_browsable() {
    let fake = FakeAi::start().await;
    let app = graph_app(&fake).await;
    let OrgUsers {
        org, admin, member, ..
    } = app.org_with_roles().await;
    let outsider = Uuid::now_v7();
    app.create_org(outsider).await;

    let pumps = upload_and_wait(
        &app,
        org,
        admin,
        "pumps.txt",
        b"Acme sells the Rocket pump. Rocket pumps are assembled in Berlin.",
    )
    .await;
    assert_eq!(pumps["status"], "indexed", "{pumps}");
    let service = upload_and_wait(
        &app,
        org,
        admin,
        "service.txt",
        b"Acme services every pump in Berlin within two days.",
    )
    .await;
    let jobs = settled_graph_jobs(&app, org, member, 2).await;
    for job in &jobs {
        assert_eq!(job["status"], "succeeded", "{job}");
        assert_eq!(job["result"]["batches_written"], 1, "{job}");
        assert_eq!(job["result"]["warnings"], 0, "{job}");
    }
    // The prompt carried the chunk, tagged, and asked for the schema.
    let call = &fake.chat_calls()[0].body;
    assert_eq!(
        call["response_format"]["json_schema"]["name"],
        "knowledge_graph"
    );
    assert!(call.to_string().contains("[chunk 0]"), "{call}");

    // One entity per name, whichever file named it; pages of one walk them all.
    assert_eq!(
        entity_names(&app, org, member, "").await,
        ["Acme", "Berlin", "Rocket"]
    );
    assert_eq!(entity_names(&app, org, member, "&q=aCmE").await, ["Acme"]);
    assert_eq!(
        entity_names(&app, org, member, "&q=%C2%ABacme%C2%BB").await,
        ["Acme"],
        "the query is normalised like the names"
    );
    assert_eq!(
        entity_names(&app, org, member, "&type=organization")
            .await
            .len(),
        3
    );
    assert!(
        entity_names(&app, org, member, "&type=person")
            .await
            .is_empty()
    );

    let acme = entity_named(&app, org, member, "Acme").await;
    assert_eq!(acme["type"], "organization", "{acme}");
    assert_eq!(acme["normalized_name"], "acme", "{acme}");
    assert_eq!(source_files(&acme), ["pumps.txt", "service.txt"], "{acme}");
    assert_eq!(
        related(&acme),
        [
            ("outgoing".into(), "mentioned_with".into(), "Berlin".into()),
            ("outgoing".into(), "mentioned_with".into(), "Rocket".into()),
        ]
    );
    assert_eq!(acme["more_relationships"], false);
    let berlin = entity_named(&app, org, member, "Berlin").await;
    assert_eq!(
        related(&berlin),
        [
            ("incoming".into(), "mentioned_with".into(), "Acme".into()),
            ("incoming".into(), "mentioned_with".into(), "Rocket".into()),
        ]
    );
    // Each edge names the chunk it was found in.
    for edge in acme["relationships"].as_array().unwrap() {
        assert_eq!(edge["chunk_ids"].as_array().unwrap().len(), 1, "{edge}");
    }

    // Refusals: no token, not a member, an unknown id, a bad filter.
    let acme_path = format!("{}/{}", entities_path(org), acme["id"].as_str().unwrap());
    let anonymous = reqwest::get(app.url(&acme_path)).await.unwrap();
    assert_eq!(anonymous.status(), 401);
    app.get(&acme_path, outsider)
        .await
        .expect_problem(404, "not_found");
    app.get(&entities_path(org), outsider)
        .await
        .expect_problem(404, "not_found");
    app.get(
        &format!("{}/{}", entities_path(org), Uuid::now_v7()),
        member,
    )
    .await
    .expect_problem(404, "not_found");
    let bad_type = app
        .get(&format!("{}?type=alien", entities_path(org)), member)
        .await;
    assert!(
        matches!(bad_type.status.as_u16(), 400 | 422),
        "{:?}",
        bad_type.body
    );
    app.get(
        &format!("{}?q={}", entities_path(org), "x".repeat(201)),
        member,
    )
    .await
    .expect_problem(422, "validation_failed");

    // Deleting a file takes the facts only it supported, and its evidence.
    let asset = |a: &Value| format!("{}/{}", assets_path(org), a["id"].as_str().unwrap());
    app.delete(&asset(&service), admin).await.expect(204);
    let acme = entity_named(&app, org, member, "Acme").await;
    assert_eq!(source_files(&acme), ["pumps.txt"], "{acme}");
    assert_eq!(
        related(&acme),
        [("outgoing".into(), "mentioned_with".into(), "Rocket".into())],
        "the edge only service.txt stated is gone"
    );
    app.delete(&asset(&pumps), admin).await.expect(204);
    assert!(entity_names(&app, org, member, "").await.is_empty());
}

#[tokio::test]
async fn refused_answers_are_asked_again_then_recorded_and_never_half_written() {
    let fake = FakeAi::start().await;
    let app = graph_app(&fake).await;
    let OrgUsers { org, admin, .. } = app.org_with_roles().await;

    // The first answer names an edge to an entity it did not list: refused whole, so
    // not even its valid entity is written; the second (derived) answer is taken.
    fake.push_answer(Answer::Json(json!({
        "entities": [{"name": "Phantom", "type": "product", "description": "x", "chunks": [0]}],
        "relationships": [{"source": "Phantom", "target": "Nowhere", "type": "sold_by",
                           "description": null, "chunks": [0]}],
    })));
    upload_and_wait(&app, org, admin, "one.txt", b"Acme sells pumps.").await;
    let jobs = settled_graph_jobs(&app, org, admin, 1).await;
    assert_eq!(jobs[0]["status"], "succeeded", "{}", jobs[0]);
    let calls = fake.chat_calls();
    assert_eq!(calls.len(), 2, "asked twice");
    let retry = calls[1].body["messages"].to_string();
    assert!(
        retry.contains("previous answer was refused") && retry.contains("Nowhere"),
        "the retry says why: {retry}"
    );
    assert_eq!(entity_names(&app, org, admin, "").await, ["Acme"]);

    // Every answer refused (not JSON, a type off the list, a chunk that does not exist):
    // the job fails saying why, and nothing of the batch is written.
    fake.push_answer(Answer::Text("Sure! Here are the entities: Globex".into()));
    fake.push_answer(Answer::Json(json!({
        "entities": [{"name": "Globex", "type": "alien", "description": "", "chunks": [0]}],
        "relationships": [],
    })));
    fake.push_answer(Answer::Json(json!({
        "entities": [{"name": "Globex", "type": "organization", "description": "", "chunks": [7]}],
        "relationships": [],
    })));
    upload_and_wait(&app, org, admin, "two.txt", b"Globex buys from Initech.").await;
    let jobs = settled_graph_jobs(&app, org, admin, 2).await;
    let failed = &jobs[1];
    assert_eq!(failed["status"], "failed", "{failed}");
    let error = failed["error"].as_str().unwrap();
    assert!(error.contains("refused"), "{error}");
    assert!(error.contains("chunk 7"), "the last reason: {error}");
    assert_eq!(failed["result"]["warnings"], 1, "{failed}");
    assert_eq!(fake.chat_calls().len(), 5);
    assert_eq!(entity_names(&app, org, admin, "").await, ["Acme"]);
}

#[tokio::test]
async fn graph_jobs_fail_visibly_without_a_provider_or_while_it_is_down() {
    // No provider: the upload is still indexed, no graph job is queued, and one asked
    // for by hand fails at once saying why.
    let app = TestApp::builder().with_jobs().spawn().await;
    let OrgUsers { org, admin, .. } = app.org_with_roles().await;
    let asset = upload_and_wait(&app, org, admin, "plain.txt", b"Acme sells pumps.").await;
    assert_eq!(asset["status"], "indexed", "{asset}");
    let job = app
        .post(
            &format!("/v1/orgs/{org}/jobs"),
            admin,
            json!({"type": GRAPH_JOB, "asset_id": asset["id"]}),
        )
        .await
        .expect(202)
        .body;
    let jobs = settled_graph_jobs(&app, org, admin, 1).await;
    assert_eq!(jobs[0]["id"], job["id"]);
    assert_eq!(jobs[0]["status"], "failed");
    assert_eq!(jobs[0]["attempts"], 1, "permanent: {}", jobs[0]);
    assert_eq!(jobs[0]["error"], "ai provider not configured");

    // A provider that keeps failing: retried, then failed with the provider's status.
    let fake = FakeAi::start().await;
    let app = graph_app(&fake).await;
    let OrgUsers { org, admin, .. } = app.org_with_roles().await;
    fake.fail_next(10_000, 500, None);
    upload_and_wait(&app, org, admin, "down.txt", b"Acme sells pumps.").await;
    let jobs = settled_graph_jobs(&app, org, admin, 1).await;
    assert_eq!(jobs[0]["status"], "failed", "{}", jobs[0]);
    assert!(jobs[0]["attempts"].as_i64().unwrap() > 1, "{}", jobs[0]);
    assert!(
        jobs[0]["error"].as_str().unwrap().contains("500"),
        "{}",
        jobs[0]
    );
    assert!(entity_names(&app, org, admin, "").await.is_empty());
}
