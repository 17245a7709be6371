//! Every model call is counted: the per-org rate shared by replicas through Redis, the
//! usage per org and day (`GET …/usage`), the daily token quota, and the metrics.

use serde_json::json;
use uuid::Uuid;

use agents_api::ai::AiError;
use agents_api::domain::OrgId;

use crate::knowledge::upload_and_wait;
use crate::support::app::{OrgUsers, TestApp};
use crate::support::fake_ai::FakeAi;

fn usage_path(org: Uuid) -> String {
    format!("/v1/orgs/{org}/usage")
}

#[tokio::test]
async fn the_per_org_rate_is_shared_by_replicas_and_orgs_do_not_share_it() {
    let fake = FakeAi::start().await;
    let app = TestApp::builder()
        .env("AI_BASE_URL", &fake.base_url())
        .env("AI_REQUESTS_PER_MIN", "2")
        .spawn()
        .await;
    let replica = app.replica(false).await;
    let org = OrgId(app.create_org(Uuid::now_v7()).await);
    let provider = app
        .state
        .ai
        .provider_for(&app.state.db, org)
        .await
        .unwrap()
        .expect("the deployment's provider");
    let input = vec!["hello".to_owned()];

    // Two a minute: one here, one on the other replica, then the third waits past the
    // gate's patience and is refused without reaching the provider.
    app.state
        .ai
        .client()
        .embed(org.0, &provider, &input)
        .await
        .unwrap();
    replica
        .state
        .ai
        .client()
        .embed(org.0, &provider, &input)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let refused = app.state.ai.client().embed(org.0, &provider, &input).await;
    assert!(
        matches!(
            refused,
            Err(AiError::RateLimited {
                retry_after: Some(_)
            })
        ),
        "{refused:?}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(fake.embedding_calls().len(), 2);

    // Another org has its own budget.
    let other = OrgId(app.create_org(Uuid::now_v7()).await);
    replica
        .state
        .ai
        .client()
        .embed(other.0, &provider, &input)
        .await
        .unwrap();
    assert_eq!(fake.embedding_calls().len(), 3);
}

#[tokio::test]
async fn usage_is_recorded_per_org_and_day_and_the_quota_is_checked() {
    let fake = FakeAi::start().await;
    let app = TestApp::builder()
        .with_jobs()
        .with_pgvector()
        .env("AI_BASE_URL", &fake.base_url())
        .env("AI_DAILY_TOKEN_QUOTA", "5")
        .spawn()
        .await;
    let OrgUsers {
        org, admin, member, ..
    } = app.org_with_roles().await;
    let empty = app.get(&usage_path(org), member).await.expect(200).body;
    assert_eq!(empty["data"], json!([]), "{empty}");
    assert_eq!(empty["daily_token_quota"], 5);
    assert_eq!(empty["tokens_today"], 0);
    assert!(
        !app.state
            .ai
            .over_quota(&app.state.db, OrgId(org))
            .await
            .unwrap(),
        "nothing used yet"
    );

    let asset = upload_and_wait(
        &app,
        org,
        admin,
        "usage.txt",
        b"Embedding this text uses a handful of tokens from the daily quota.",
    )
    .await;
    assert_eq!(asset["embedded"], true, "{asset}");
    let usage = app.get(&usage_path(org), member).await.expect(200).body;
    let rows = usage["data"].as_array().unwrap();
    let embeddings = rows
        .iter()
        .find(|r| r["kind"] == "embeddings")
        .unwrap_or_else(|| panic!("{usage}"));
    assert_eq!(embeddings["requests"], 1, "{usage}");
    assert_eq!(embeddings["model"], "text-embedding-3-small");
    assert!(embeddings["prompt_tokens"].as_i64().unwrap() > 5, "{usage}");
    assert_eq!(
        embeddings["day"],
        chrono::Utc::now().date_naive().to_string()
    );
    assert!(usage["tokens_today"].as_i64().unwrap() > 5);
    assert!(
        app.state
            .ai
            .over_quota(&app.state.db, OrgId(org))
            .await
            .unwrap(),
        "over the 5-token quota"
    );

    // Another org's usage is its own.
    let stranger = Uuid::now_v7();
    let theirs = app.create_org(stranger).await;
    let their_usage = app
        .get(&usage_path(theirs), stranger)
        .await
        .expect(200)
        .body;
    assert_eq!(their_usage["data"], json!([]));
    app.get(&usage_path(org), stranger)
        .await
        .expect_problem(404, "not_found");

    // Bad ranges.
    let q = |query: &str| format!("{}?{query}", usage_path(org));
    app.get(&q("from=2026-02-01&to=2026-01-01"), member)
        .await
        .expect_problem(422, "validation_failed");
    app.get(&q("from=2024-01-01&to=2026-01-01"), member)
        .await
        .expect_problem(422, "validation_failed");
    app.get(&q("from=yesterday"), member)
        .await
        .expect_problem(400, "bad_request");
    let old = app
        .get(&q("from=2020-01-01&to=2020-01-31"), member)
        .await
        .expect(200)
        .body;
    assert_eq!(old["data"], json!([]));
}

#[tokio::test]
async fn provider_calls_are_counted_in_the_metrics() {
    let fake = FakeAi::start().await;
    let app = TestApp::builder()
        .env("AI_BASE_URL", &fake.base_url())
        .spawn()
        .await;
    let org = OrgId(app.create_org(Uuid::now_v7()).await);
    let provider = app
        .state
        .ai
        .provider_for(&app.state.db, org)
        .await
        .unwrap()
        .unwrap();
    let ai = app.state.ai.clone();
    let ok = |text: &str| {
        let families = agents_api::metrics::REGISTRY.gather();
        families
            .iter()
            .find(|f| f.name() == text)
            .map(|f| {
                f.get_metric()
                    .iter()
                    .filter(|m| {
                        m.get_label()
                            .iter()
                            .any(|l| l.name() == "kind" && l.value() == "embed")
                            && m.get_label()
                                .iter()
                                .any(|l| l.name() == "outcome" && l.value() == "ok")
                    })
                    .map(|m| m.get_counter().get_value())
                    .sum::<f64>()
            })
            .unwrap_or(0.0)
    };
    let before = ok("ai_requests_total");
    ai.embed(&app.state.db, org, &provider, &["counted".to_owned()])
        .await
        .unwrap();
    // Other tests run in this process too: at least ours was counted.
    assert!(ok("ai_requests_total") >= before + 1.0);
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&agents_api::metrics::REGISTRY.gather())
        .unwrap();
    assert!(
        text.contains("ai_request_duration_seconds_bucket{kind=\"embed\""),
        "latency histogram"
    );
    assert!(
        text.contains("ai_tokens_total{direction=\"prompt\",kind=\"embed\"}"),
        "tokens"
    );
}
