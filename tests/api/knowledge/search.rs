//! Search over indexed chunks: a small labelled set in English and Russian, scoping to
//! an agent, isolation between orgs, the modes, and the refusals.

use serde_json::json;
use uuid::Uuid;

use super::*;
use crate::support::app::{OrgUsers, TestApp};

/// (file, text): one topic each, in English or Russian.
pub(super) const DOCUMENTS: &[(&str, &str)] = &[
    (
        "refunds.txt",
        "Refunds are issued within 14 days of the purchase when the product is returned unused in its original packaging.",
    ),
    (
        "shipping.txt",
        "We ship orders with DHL and UPS; international delivery takes five to ten working days.",
    ),
    (
        "warranty.txt",
        "Every laptop carries a two-year warranty covering manufacturing defects; batteries are covered for one year.",
    ),
    (
        "payment.txt",
        "We accept Visa, Mastercard and bank transfers; invoices are payable within thirty days.",
    ),
    (
        "hours.txt",
        "Our support office is open Monday to Friday from nine in the morning until six in the evening.",
    ),
    (
        "discounts.txt",
        "Students and teachers get a fifteen percent discount with a valid university card.",
    ),
    (
        "privacy.txt",
        "Personal data is stored in Frankfurt data centres and never sold to advertisers.",
    ),
    (
        "subscription.txt",
        "The premium subscription renews automatically every month unless cancelled in the account settings.",
    ),
    (
        "ru_delivery.txt",
        "Доставка по Москве осуществляется курьером в течение двух дней после оплаты заказа.",
    ),
    (
        "ru_returns.txt",
        "Возврат денег производится на банковскую карту покупателя в течение десяти рабочих дней.",
    ),
    (
        "ru_installation.txt",
        "Установка кондиционера выполняется нашими мастерами бесплатно при покупке в интернет-магазине.",
    ),
    (
        "ru_contacts.txt",
        "Позвоните на нашу горячую линию по телефону: операторы отвечают круглосуточно и без выходных.",
    ),
];

/// (question, the file whose chunk must rank first).
pub(super) const QUESTIONS: &[(&str, &str)] = &[
    (
        "When are refunds issued for a returned product?",
        "refunds.txt",
    ),
    ("Do you ship international orders?", "shipping.txt"),
    ("laptop warranty for batteries", "warranty.txt"),
    ("Do you accept Mastercard or bank transfers?", "payment.txt"),
    ("Is the support office open on Monday?", "hours.txt"),
    ("discount for students", "discounts.txt"),
    ("where is personal data stored", "privacy.txt"),
    ("how to cancel the premium subscription", "subscription.txt"),
    ("доставка курьером по Москве", "ru_delivery.txt"),
    ("возврат денег на карту", "ru_returns.txt"),
    ("бесплатная установка кондиционеров", "ru_installation.txt"),
    ("телефон горячей линии", "ru_contacts.txt"),
];

pub(super) async fn indexed_library(app: &TestApp, org: Uuid, admin: Uuid) {
    for (file, text) in DOCUMENTS {
        let asset = upload_and_wait(app, org, admin, file, text.as_bytes()).await;
        assert_eq!(asset["status"], "indexed", "{asset}");
    }
}

#[tokio::test]
async fn the_right_passage_ranks_first_for_every_labelled_question() {
    let app = TestApp::builder().with_jobs().spawn().await;
    let OrgUsers {
        org, admin, member, ..
    } = app.org_with_roles().await;
    indexed_library(&app, org, admin).await;

    let mut misses = Vec::new();
    for (question, expected) in QUESTIONS {
        let files = search_files(&app, org, member, question).await;
        if files.first().map(String::as_str) != Some(*expected) {
            misses.push(format!("{question:?}: expected {expected}, got {files:?}"));
        }
    }
    assert!(misses.is_empty(), "{}", misses.join("\n"));

    // The answer carries the chunk, its asset, a score, and says what ran.
    let found = search(
        &app,
        org,
        member,
        json!({"query": "laptop warranty", "limit": 1}),
    )
    .await
    .expect(200)
    .body;
    assert_eq!(
        found["mode"], "fulltext",
        "no embeddings: hybrid runs as full text"
    );
    let hits = found["data"].as_array().unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0]["filename"], "warranty.txt");
    assert!(
        hits[0]["content"]
            .as_str()
            .unwrap()
            .contains("two-year warranty")
    );
    assert!(hits[0]["score"].as_f64().unwrap() > 0.0);
    assert!(hits[0]["chunk_id"].is_string() && hits[0]["asset_id"].is_string());

    // Web-search syntax: a phrase and an exclusion narrow the answer.
    assert_eq!(
        search_files(&app, org, member, "\"bank transfers\"").await,
        ["payment.txt"]
    );
    assert!(
        search_files(&app, org, member, "\"bank transfers\" -visa")
            .await
            .is_empty()
    );
    assert!(
        search_files(&app, org, member, "zebra giraffe")
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn search_is_scoped_to_the_org_and_to_the_agent_when_asked() {
    let app = TestApp::builder().with_jobs().spawn().await;
    let OrgUsers {
        org, admin, member, ..
    } = app.org_with_roles().await;
    let sales = app.create_agent(org, admin, "Sales").await;
    let support = app.create_agent(org, admin, "Support").await;
    let with_agent = |agent: &serde_json::Value, file: &'static str, text: &'static str| {
        let agent_id = agent["id"].as_str().unwrap().to_owned();
        multipart(&[
            Part::Text {
                name: "agent_id",
                value: &agent_id,
            },
            Part::File {
                name: "file",
                filename: Some(file),
                content_type: None,
                bytes: text.as_bytes(),
            },
        ])
    };
    for body in [
        with_agent(
            &sales,
            "sales.txt",
            "Pricing: the pro plan costs forty euros.",
        ),
        with_agent(
            &support,
            "support.txt",
            "Pricing questions go to the billing team.",
        ),
    ] {
        let uploaded = post_multipart(&app, org, admin, body)
            .await
            .expect(202)
            .body;
        wait_settled(&app, org, admin, uploaded["asset"]["id"].as_str().unwrap()).await;
    }
    upload_and_wait(
        &app,
        org,
        admin,
        "everyone.txt",
        b"Pricing is in euros for everyone.",
    )
    .await;

    let files = |agent: Option<&serde_json::Value>| {
        let mut body = json!({"query": "pricing", "mode": "fulltext"});
        if let Some(agent) = agent {
            body["agent_id"] = agent["id"].clone();
        }
        let app = &app;
        async move {
            let found = search(app, org, member, body).await.expect(200).body;
            let mut names: Vec<String> = found["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| h["filename"].as_str().unwrap().to_owned())
                .collect();
            names.sort();
            names
        }
    };
    assert_eq!(
        files(None).await,
        ["everyone.txt", "sales.txt", "support.txt"]
    );
    assert_eq!(files(Some(&sales)).await, ["everyone.txt", "sales.txt"]);
    assert_eq!(files(Some(&support)).await, ["everyone.txt", "support.txt"]);

    // Another org with the same words sees only its own.
    let stranger = Uuid::now_v7();
    let theirs = app.create_org(stranger).await;
    let found = search(&app, theirs, stranger, json!({"query": "pricing"}))
        .await
        .expect(200)
        .body;
    assert!(found["data"].as_array().unwrap().is_empty(), "{found}");
    // The search checks the membership itself (in its first transaction), in every mode.
    for mode in ["hybrid", "fulltext", "vector"] {
        search(
            &app,
            org,
            stranger,
            json!({"query": "pricing", "mode": mode}),
        )
        .await
        .expect_problem(404, "not_found");
    }
}

#[tokio::test]
async fn search_refuses_bad_requests_with_problems() {
    let app = TestApp::builder().spawn().await;
    let OrgUsers { org, member, .. } = app.org_with_roles().await;
    let response = app
        .send(
            reqwest::Method::POST,
            &format!("/v1/orgs/{org}/knowledge/search"),
            None,
            Some(json!({"query": "x"})),
        )
        .await;
    assert_eq!(response.status, 401);
    for (body, field) in [
        (json!({}), "query"),
        (json!({"query": ""}), "query"),
        (json!({"query": "   "}), "query"),
        (json!({"query": "x".repeat(1001)}), "query"),
        (json!({"query": "x", "limit": 0}), "limit"),
        (json!({"query": "x", "limit": 51}), "limit"),
        (json!({"query": "x", "mode": "semantic"}), "mode"),
        (json!({"query": "x", "org_id": org}), "org_id"),
    ] {
        let r = search(&app, org, member, body.clone())
            .await
            .expect_problem(422, "validation_failed");
        assert_eq!(r.error_fields(), [field], "{body}");
    }
    // Vector search needs embeddings, which need a provider.
    search(&app, org, member, json!({"query": "x", "mode": "vector"}))
        .await
        .expect_problem(409, "conflict");
}

/// Chunks with some of a query's words are looked up by its rarer words first (by the
/// search index's statistics): a chunk with the rare word is found even when thousands
/// of chunks before it hold only the common one. When the rare words' chunks are fewer
/// than the statistics promised, those with the other words fill the list.
#[tokio::test]
async fn chunks_with_the_rarer_words_are_found_among_many_with_common_ones() {
    let app = TestApp::builder().with_jobs().spawn().await;
    let OrgUsers { org, admin, .. } = app.org_with_roles().await;
    let asset = upload_and_wait(&app, org, admin, "seed.txt", b"Seed text for the library.").await;
    let asset_id: Uuid = asset["id"].as_str().unwrap().parse().unwrap();
    let mut db = app.admin_db().await;
    // 2,000 chunks with the common word first in the table, then 400 with the rare one
    // (said three times, so they outrank a chunk with the common word once).
    sqlx::query(
        "INSERT INTO knowledge_chunks (id, org_id, asset_id, agent_id, generation, position,
                                       content, token_count, metadata)
         SELECT gen_random_uuid(), a.org_id, a.id, NULL, a.generation, 1000 + i,
                CASE WHEN i < 2000 THEN 'kettle number ' || i
                     ELSE 'zebra zebra zebra number ' || i END,
                4, '{}'::jsonb
         FROM knowledge_assets a, generate_series(0, 2399) AS i
         WHERE a.id = $1",
    )
    .bind(asset_id)
    .execute(&mut db)
    .await
    .unwrap();
    sqlx::query("ANALYZE knowledge_chunks")
        .execute(&mut db)
        .await
        .unwrap();
    let hits = |found: &Value| -> Vec<String> {
        found["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|hit| hit["content"].as_str().unwrap().to_owned())
            .collect()
    };
    let query = json!({"query": "kettle zebra", "mode": "fulltext", "limit": 8});
    let found = search(&app, org, admin, query.clone())
        .await
        .expect(200)
        .body;
    let contents = hits(&found);
    assert_eq!(contents.len(), 8, "{found}");
    assert!(
        contents.iter().all(|c| c.starts_with("zebra")),
        "the rare word's chunks rank first: {contents:?}"
    );

    // The statistics still count 400 chunks with the rare word; 3 are left.
    sqlx::query(
        "DELETE FROM knowledge_chunks
         WHERE asset_id = $1 AND content LIKE 'zebra%' AND position >= 3003",
    )
    .bind(asset_id)
    .execute(&mut db)
    .await
    .unwrap();
    let found = search(&app, org, admin, query).await.expect(200).body;
    let contents = hits(&found);
    assert_eq!(
        contents.len(),
        8,
        "the common word's chunks fill the list: {found}"
    );
    assert!(
        contents[..3].iter().all(|c| c.starts_with("zebra")),
        "{contents:?}"
    );
    assert!(
        contents[3..].iter().all(|c| c.starts_with("kettle")),
        "{contents:?}"
    );
}
