//! Uploads: the refusals (401, 403, 404, 413, 415, 422), de-duplication, listing,
//! reprocessing and deletion.

use serde_json::{Value, json};
use uuid::Uuid;

use super::*;
use crate::support::app::{OrgUsers, TestApp};

#[tokio::test]
async fn upload_queues_indexing_and_the_asset_reports_progress_until_indexed() {
    let app = TestApp::builder().with_jobs().spawn().await;
    let OrgUsers {
        org, admin, member, ..
    } = app.org_with_roles().await;
    let text = super::prose("refund", 1200);
    let uploaded = upload(&app, org, admin, "refunds.txt", text.as_bytes())
        .await
        .expect(202)
        .body;
    let asset = &uploaded["asset"];
    assert_eq!(asset["filename"], "refunds.txt");
    assert_eq!(asset["format"], "text");
    assert_eq!(asset["size_bytes"], text.len());
    assert_eq!(asset["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(uploaded["job"]["type"], "process-asset");
    assert_eq!(uploaded["job"]["payload"]["asset_id"], asset["id"]);
    assert!(
        matches!(asset["status"].as_str(), Some("queued" | "processing")),
        "{asset}"
    );

    // Members read it.
    let done = wait_settled(&app, org, member, asset["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "indexed", "{done}");
    assert_eq!(done["error"], Value::Null);
    let count = done["chunks_count"].as_i64().unwrap();
    assert!(count >= 2, "1,200 words make several chunks: {done}");
    assert_eq!(
        done["progress"],
        json!({"stage": "indexed", "done": count, "total": count})
    );
    assert_eq!(done["embedded"], false);

    let job = app
        .get(
            &format!(
                "/v1/orgs/{org}/jobs/{}",
                uploaded["job"]["id"].as_str().unwrap()
            ),
            member,
        )
        .await
        .expect(200)
        .body;
    assert_eq!(job["status"], "succeeded");
    assert_eq!(job["result"]["chunks"], count);
}

#[tokio::test]
async fn the_same_bytes_twice_are_one_asset() {
    let app = TestApp::builder().spawn().await;
    let OrgUsers { org, admin, .. } = app.org_with_roles().await;
    let first = upload(
        &app,
        org,
        admin,
        "a.txt",
        b"Opening hours are nine to five.",
    )
    .await
    .expect(202)
    .body;
    let second = upload(
        &app,
        org,
        admin,
        "copy.txt",
        b"Opening hours are nine to five.",
    )
    .await
    .expect(200)
    .body;
    assert_eq!(second["asset"]["id"], first["asset"]["id"]);
    assert_eq!(second["asset"]["filename"], "a.txt");
    assert_eq!(second["job"], Value::Null);

    // Another org uploading the same bytes gets its own asset.
    let other_owner = Uuid::now_v7();
    let other = app.create_org(other_owner).await;
    let theirs = upload(
        &app,
        other,
        other_owner,
        "a.txt",
        b"Opening hours are nine to five.",
    )
    .await
    .expect(202)
    .body;
    assert_ne!(theirs["asset"]["id"], first["asset"]["id"]);
    let listed = app.get(&assets_path(org), admin).await.expect(200).body;
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn uploads_are_refused_with_problems_and_nothing_is_stored() {
    let app = TestApp::builder()
        .env("ASSET_MAX_BYTES", "4096")
        .spawn()
        .await;
    let OrgUsers {
        org, admin, member, ..
    } = app.org_with_roles().await;
    let stranger = Uuid::now_v7();

    // 401 without a token, 404 for another org, 403 for a member.
    let body = multipart(&[Part::File {
        name: "file",
        filename: Some("a.txt"),
        content_type: None,
        bytes: b"hello there",
    }]);
    let response = reqwest::Client::new()
        .post(app.url(&assets_path(org)))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={}", super::BOUNDARY),
        )
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    post_multipart(&app, org, stranger, body.clone())
        .await
        .expect_problem(404, "not_found");
    post_multipart(&app, org, member, body.clone())
        .await
        .expect_problem(403, "forbidden");

    // 413 past ASSET_MAX_BYTES: by the file, and by the whole body before it is read.
    upload(&app, org, admin, "big.txt", &vec![b'a'; 5000])
        .await
        .expect_problem(413, "payload_too_large");
    let huge = vec![b'a'; 4096 + 64 * 1024 + 1];
    upload(&app, org, admin, "huge.txt", &huge)
        .await
        .expect_problem(413, "payload_too_large");

    // 415: judged by content, whatever the name says; and a body that is not multipart.
    let png = [
        0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n', 0, 0, 0, 13,
    ];
    upload(&app, org, admin, "notes.txt", &png)
        .await
        .expect_problem(415, "unsupported_media_type");
    upload(&app, org, admin, "report.pdf", b"\x00\x01binary\x00junk")
        .await
        .expect_problem(415, "unsupported_media_type");
    app.post(&assets_path(org), admin, json!({"file": "x"}))
        .await
        .expect_problem(415, "unsupported_media_type");

    // 422: no file, an empty file, two files, an unknown field, a foreign agent.
    let r = post_multipart(
        &app,
        org,
        admin,
        multipart(&[Part::Text {
            name: "agent_id",
            value: &Uuid::now_v7().to_string(),
        }]),
    )
    .await
    .expect_problem(422, "validation_failed");
    assert_eq!(r.error_fields(), ["file"]);
    let r = upload(&app, org, admin, "empty.txt", b"")
        .await
        .expect_problem(422, "validation_failed");
    assert_eq!(r.error_fields(), ["file"]);
    let file = Part::File {
        name: "file",
        filename: Some("a.txt"),
        content_type: None,
        bytes: b"one",
    };
    let again = Part::File {
        name: "file",
        filename: Some("b.txt"),
        content_type: None,
        bytes: b"two",
    };
    post_multipart(&app, org, admin, multipart(&[file, again]))
        .await
        .expect_problem(422, "validation_failed");
    let r = post_multipart(
        &app,
        org,
        admin,
        multipart(&[
            Part::Text {
                name: "org_id",
                value: "x",
            },
            Part::File {
                name: "file",
                filename: Some("a.txt"),
                content_type: None,
                bytes: b"one",
            },
        ]),
    )
    .await
    .expect_problem(422, "validation_failed");
    assert_eq!(r.error_fields(), ["org_id"]);
    let other_owner = Uuid::now_v7();
    let other = app.create_org(other_owner).await;
    let foreign_agent = app.create_agent(other, other_owner, "Theirs").await;
    let r = post_multipart(
        &app,
        org,
        admin,
        multipart(&[
            Part::Text {
                name: "agent_id",
                value: foreign_agent["id"].as_str().unwrap(),
            },
            Part::File {
                name: "file",
                filename: Some("a.txt"),
                content_type: None,
                bytes: b"agent file",
            },
        ]),
    )
    .await
    .expect_problem(422, "validation_failed");
    assert_eq!(r.error_fields(), ["agent_id"]);
    let r = post_multipart(
        &app,
        org,
        admin,
        multipart(&[
            Part::Text {
                name: "agent_id",
                value: "not-a-uuid",
            },
            Part::File {
                name: "file",
                filename: Some("a.txt"),
                content_type: None,
                bytes: b"agent file",
            },
        ]),
    )
    .await
    .expect_problem(422, "validation_failed");
    assert_eq!(r.error_fields(), ["agent_id"]);

    // A truncated multipart body is a 400.
    let mut truncated = multipart(&[Part::File {
        name: "file",
        filename: Some("a.txt"),
        content_type: None,
        bytes: b"cut",
    }]);
    truncated.truncate(truncated.len() - 10);
    post_multipart(&app, org, admin, truncated)
        .await
        .expect_problem(400, "bad_request");

    // None of it left anything behind.
    let mut db = app.admin_db().await;
    let (assets, files, jobs): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM knowledge_assets), (SELECT count(*) FROM knowledge_asset_files),
                (SELECT count(*) FROM jobs)",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!((assets, files, jobs), (0, 0, 0));
}

#[tokio::test]
async fn assets_list_by_agent_and_status_and_paginate() {
    let app = TestApp::builder().spawn().await;
    let OrgUsers {
        org, admin, member, ..
    } = app.org_with_roles().await;
    let agent = app.create_agent(org, admin, "Sales").await;
    let agent_id = agent["id"].as_str().unwrap();
    for i in 0..3 {
        upload(
            &app,
            org,
            admin,
            &format!("org-{i}.txt"),
            format!("org file {i}").as_bytes(),
        )
        .await
        .expect(202);
    }
    let body = multipart(&[
        Part::Text {
            name: "agent_id",
            value: agent_id,
        },
        Part::File {
            name: "file",
            filename: Some("sales.md"),
            content_type: Some("text/markdown"),
            bytes: b"# Prices\n\nThe basic plan costs 10 euros.",
        },
    ]);
    let for_agent = post_multipart(&app, org, admin, body)
        .await
        .expect(202)
        .body;
    assert_eq!(for_agent["asset"]["agent_id"], agent["id"]);
    assert_eq!(for_agent["asset"]["format"], "markdown");
    assert_eq!(for_agent["asset"]["content_type"], "text/markdown");

    let page = app
        .get(&format!("{}?limit=2", assets_path(org)), member)
        .await
        .expect(200)
        .body;
    assert_eq!(page["data"].as_array().unwrap().len(), 2);
    assert_eq!(page["data"][0]["filename"], "sales.md", "newest first");
    let cursor = page["next_cursor"].as_str().unwrap();
    let rest = app
        .get(
            &format!("{}?limit=2&cursor={cursor}", assets_path(org)),
            member,
        )
        .await
        .expect(200)
        .body;
    assert_eq!(rest["data"].as_array().unwrap().len(), 2);
    assert_eq!(rest["next_cursor"], Value::Null);

    let only_agent = app
        .get(&format!("{}?agent_id={agent_id}", assets_path(org)), member)
        .await
        .expect(200)
        .body;
    assert_eq!(only_agent["data"].as_array().unwrap().len(), 1);
    let queued = app
        .get(&format!("{}?status=queued", assets_path(org)), member)
        .await
        .expect(200)
        .body;
    assert_eq!(queued["data"].as_array().unwrap().len(), 4);
    // As for every list: a query string that does not parse is a 400.
    app.get(&format!("{}?status=done", assets_path(org)), member)
        .await
        .expect_problem(400, "bad_request");
    app.get(&format!("{}?limit=0", assets_path(org)), member)
        .await
        .expect_problem(422, "validation_failed");

    // Another org's member sees none of it, and gets 404 for its ids.
    let stranger = Uuid::now_v7();
    let theirs = app.create_org(stranger).await;
    let listed = app
        .get(&assets_path(theirs), stranger)
        .await
        .expect(200)
        .body;
    assert!(listed["data"].as_array().unwrap().is_empty());
    let id = for_agent["asset"]["id"].as_str().unwrap();
    app.get(&format!("{}/{id}", assets_path(org)), stranger)
        .await
        .expect_problem(404, "not_found");
    app.get(&format!("{}/{id}", assets_path(theirs)), stranger)
        .await
        .expect_problem(404, "not_found");
    app.get(&format!("{}/{id}/chunks", assets_path(theirs)), stranger)
        .await
        .expect_problem(404, "not_found");
    app.delete(&format!("{}/{id}", assets_path(theirs)), stranger)
        .await
        .expect_problem(404, "not_found");
}

#[tokio::test]
async fn reprocess_replaces_the_chunks_and_delete_removes_everything() {
    let app = TestApp::builder().with_jobs().spawn().await;
    let OrgUsers {
        org, admin, member, ..
    } = app.org_with_roles().await;
    let text = super::prose("delivery", 900);
    let asset = upload_and_wait(&app, org, admin, "delivery.txt", text.as_bytes()).await;
    assert_eq!(asset["status"], "indexed", "{asset}");
    let id = asset["id"].as_str().unwrap();
    let before = all_chunks(&app, org, member, id).await;
    assert_eq!(before.len() as i64, asset["chunks_count"].as_i64().unwrap());

    // Members may not reprocess or delete.
    app.post(
        &format!("{}/{id}/reprocess", assets_path(org)),
        member,
        json!({}),
    )
    .await
    .expect_problem(403, "forbidden");
    app.delete(&format!("{}/{id}", assets_path(org)), member)
        .await
        .expect_problem(403, "forbidden");

    let job = app
        .post(
            &format!("{}/{id}/reprocess", assets_path(org)),
            admin,
            json!({}),
        )
        .await
        .expect(202)
        .body;
    assert_eq!(job["type"], "process-asset");
    let again = wait_settled(&app, org, member, id).await;
    assert_eq!(again["status"], "indexed");
    let after = all_chunks(&app, org, member, id).await;
    assert_eq!(after.len(), before.len(), "the same text, the same chunks");
    let texts = |chunks: &[Value]| -> Vec<String> {
        chunks
            .iter()
            .map(|c| c["content"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(texts(&after), texts(&before));
    assert_ne!(after[0]["id"], before[0]["id"], "the chunks were replaced");

    app.delete(&format!("{}/{id}", assets_path(org)), admin)
        .await
        .expect(204);
    app.get(&format!("{}/{id}", assets_path(org)), admin)
        .await
        .expect_problem(404, "not_found");
    app.delete(&format!("{}/{id}", assets_path(org)), admin)
        .await
        .expect_problem(404, "not_found");
    let mut db = app.admin_db().await;
    let (assets, files, chunks): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM knowledge_assets), (SELECT count(*) FROM knowledge_asset_files),
                (SELECT count(*) FROM knowledge_chunks)",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!((assets, files, chunks), (0, 0, 0));
    let actions: Vec<String> = sqlx::query_scalar(
        "SELECT action FROM audit_logs WHERE org_id = $1 AND action LIKE 'knowledge.%' ORDER BY created_at",
    )
    .bind(org)
    .fetch_all(&mut db)
    .await
    .unwrap();
    assert_eq!(
        actions,
        [
            "knowledge.asset.upload",
            "knowledge.asset.reprocess",
            "knowledge.asset.delete"
        ]
    );
}

#[tokio::test]
async fn reprocess_while_queued_is_a_conflict() {
    // No workers: the upload's job stays queued.
    let app = TestApp::builder().spawn().await;
    let OrgUsers { org, admin, .. } = app.org_with_roles().await;
    let uploaded = upload(&app, org, admin, "a.txt", b"Still waiting to be indexed.")
        .await
        .expect(202)
        .body;
    let id = uploaded["asset"]["id"].as_str().unwrap();
    app.post(
        &format!("{}/{id}/reprocess", assets_path(org)),
        admin,
        json!({}),
    )
    .await
    .expect_problem(409, "conflict");
    app.post(
        &format!("{}/{}/reprocess", assets_path(org), Uuid::now_v7()),
        admin,
        json!({}),
    )
    .await
    .expect_problem(404, "not_found");
}
