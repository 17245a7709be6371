//! `POST /v1/orgs`, `GET /v1/orgs/{org_id}` and `GET /v1/me`.

use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::app::{TestApp, exec};

/// The slug rule of the `organizations` table.
fn is_valid_slug(slug: &str) -> bool {
    let bytes = slug.as_bytes();
    (2..=63).contains(&bytes.len())
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

fn role_in(me: &Value, org: Uuid) -> Option<String> {
    me["orgs"]
        .as_array()?
        .iter()
        .find(|o| o["id"] == org.to_string())
        .and_then(|o| o["role"].as_str().map(str::to_owned))
}

// ---- POST /v1/orgs ----

#[tokio::test]
async fn create_org_makes_the_caller_its_owner() {
    let app = TestApp::builder().spawn().await;
    let user = Uuid::now_v7();
    let r = app
        .post("/v1/orgs", user, json!({"name": "Acme Sales"}))
        .await
        .expect(201);
    let id: Uuid = r.body["id"].as_str().expect("id").parse().expect("uuid id");
    assert_eq!(r.body["name"], "Acme Sales");
    assert_eq!(r.body["role"], "owner");
    assert!(r.body["created_at"].is_string(), "{}", r.text);
    assert!(r.body["updated_at"].is_string(), "{}", r.text);

    // The membership is real: the org is readable and the caller listed as its owner.
    let org = app.get(&format!("/v1/orgs/{id}"), user).await.expect(200);
    assert_eq!(org.body["id"], id.to_string());
    assert_eq!(org.body["role"], "owner");
    let members = app
        .get(&format!("/v1/orgs/{id}/members"), user)
        .await
        .expect(200);
    assert_eq!(
        members.body["data"],
        json!([{
            "user_id": user.to_string(),
            "role": "owner",
            "created_at": members.body["data"][0]["created_at"],
            "updated_at": members.body["data"][0]["updated_at"],
        }])
    );
}

#[tokio::test]
async fn create_org_generates_a_valid_slug_when_absent() {
    let app = TestApp::builder().spawn().await;
    let user = Uuid::now_v7();
    let first = app
        .post("/v1/orgs", user, json!({"name": "Acme Sales"}))
        .await
        .expect(201);
    let slug = first.body["slug"].as_str().expect("slug").to_owned();
    assert!(is_valid_slug(&slug), "{slug}");
    assert!(slug.starts_with("acme-sales"), "{slug}");

    // Two orgs of the same name do not collide.
    let second = app
        .post("/v1/orgs", user, json!({"name": "Acme Sales"}))
        .await
        .expect(201);
    let other = second.body["slug"].as_str().expect("slug");
    assert!(is_valid_slug(other), "{other}");
    assert_ne!(slug, other);

    // A name with nothing usable for a slug still gets a valid one.
    let odd = app
        .post("/v1/orgs", user, json!({"name": "☃ ☃ ☃"}))
        .await
        .expect(201);
    let odd = odd.body["slug"].as_str().expect("slug");
    assert!(is_valid_slug(odd), "{odd}");
}

#[tokio::test]
async fn create_org_keeps_an_explicit_slug() {
    let app = TestApp::builder().spawn().await;
    let user = Uuid::now_v7();
    let r = app
        .post("/v1/orgs", user, json!({"name": "Acme", "slug": "acme-hq"}))
        .await
        .expect(201);
    assert_eq!(r.body["slug"], "acme-hq");
    let id = r.body["id"].as_str().expect("id");
    let org = app.get(&format!("/v1/orgs/{id}"), user).await.expect(200);
    assert_eq!(org.body["slug"], "acme-hq");
}

#[tokio::test]
async fn duplicate_slug_is_a_conflict() {
    let app = TestApp::builder().spawn().await;
    let first = Uuid::now_v7();
    let second = Uuid::now_v7();
    app.post("/v1/orgs", first, json!({"name": "Acme", "slug": "acme"}))
        .await
        .expect(201);
    let r = app
        .post(
            "/v1/orgs",
            second,
            json!({"name": "Other Acme", "slug": "acme"}),
        )
        .await
        .expect_problem(409, "conflict");
    assert!(r.body["detail"].as_str().is_some_and(|d| !d.is_empty()));
    // Nothing was half-created for the second user.
    let me = app.get("/v1/me", second).await.expect(200);
    assert_eq!(me.body["orgs"], json!([]));
}

#[tokio::test]
async fn invalid_slug_is_rejected() {
    let app = TestApp::builder().spawn().await;
    let user = Uuid::now_v7();
    for slug in ["Acme", "acme hq", "-acme", "a", "acme_hq", &"a".repeat(64)] {
        let r = app
            .post("/v1/orgs", user, json!({"name": "Acme", "slug": slug}))
            .await
            .expect_problem(422, "validation_failed");
        assert_eq!(r.error_fields(), vec!["slug"], "slug {slug:?}: {}", r.text);
    }
    let me = app.get("/v1/me", user).await.expect(200);
    assert_eq!(me.body["orgs"], json!([]));
}

#[tokio::test]
async fn name_too_short_is_rejected() {
    let app = TestApp::builder().spawn().await;
    let user = Uuid::now_v7();
    for name in ["", "A"] {
        let r = app
            .post("/v1/orgs", user, json!({"name": name}))
            .await
            .expect_problem(422, "validation_failed");
        assert_eq!(r.error_fields(), vec!["name"], "{}", r.text);
    }
    let r = app
        .post("/v1/orgs", user, json!({"name": "x".repeat(101)}))
        .await
        .expect_problem(422, "validation_failed");
    assert_eq!(r.error_fields(), vec!["name"], "{}", r.text);
}

#[tokio::test]
async fn blank_name_is_rejected() {
    // A name of spaces has the length but, trimmed, is empty: a validation error, never
    // a database constraint surfacing as a 500.
    let app = TestApp::builder().spawn().await;
    let user = Uuid::now_v7();
    for name in ["   ", " a "] {
        let r = app
            .post("/v1/orgs", user, json!({"name": name}))
            .await
            .expect_problem(422, "validation_failed");
        assert_eq!(r.error_fields(), vec!["name"], "{}", r.text);
    }
}

#[tokio::test]
async fn create_org_rejects_unknown_fields() {
    let app = TestApp::builder().spawn().await;
    let user = Uuid::now_v7();
    for (field, value) in [
        ("id", json!(Uuid::now_v7())),
        ("owner", json!(Uuid::now_v7())),
        ("created_at", json!("2020-01-01T00:00:00Z")),
    ] {
        let mut body = json!({"name": "Acme"});
        body[field] = value;
        let r = app
            .post("/v1/orgs", user, body)
            .await
            .expect_problem(422, "validation_failed");
        assert_eq!(r.error_fields(), vec![field], "{}", r.text);
    }
    let me = app.get("/v1/me", user).await.expect(200);
    assert_eq!(me.body["orgs"], json!([]));
}

#[tokio::test]
async fn create_org_requires_a_name() {
    let app = TestApp::builder().spawn().await;
    let user = Uuid::now_v7();
    let r = app
        .post("/v1/orgs", user, json!({"slug": "acme"}))
        .await
        .expect_problem(422, "validation_failed");
    // The problem names the missing field, like any other invalid one.
    assert_eq!(r.error_fields(), vec!["name"], "{}", r.text);
    let r = app
        .post("/v1/orgs", user, json!({"name": null}))
        .await
        .expect_problem(422, "validation_failed");
    assert_eq!(r.error_fields(), vec!["name"], "{}", r.text);
}

#[tokio::test]
async fn create_org_without_a_token_is_unauthorized() {
    let app = TestApp::builder().spawn().await;
    let r = app
        .send(
            Method::POST,
            "/v1/orgs",
            None,
            Some(json!({"name": "Acme"})),
        )
        .await
        .expect_problem(401, "unauthorized");
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
}

// ---- GET /v1/orgs/{org_id} ----

#[tokio::test]
async fn show_org_returns_the_callers_role() {
    let app = TestApp::builder().spawn().await;
    let users = app.org_with_roles().await;
    for (user, role) in [
        (users.owner, "owner"),
        (users.admin, "admin"),
        (users.member, "member"),
    ] {
        let r = app
            .get(&format!("/v1/orgs/{}", users.org), user)
            .await
            .expect(200);
        assert_eq!(r.body["id"], users.org.to_string());
        assert_eq!(r.body["name"], "Test Org");
        assert!(
            r.body["slug"].as_str().is_some_and(is_valid_slug),
            "{}",
            r.text
        );
        assert_eq!(r.body["role"], role);
    }
}

#[tokio::test]
async fn another_orgs_user_gets_not_found() {
    let app = TestApp::builder().spawn().await;
    let users = app.org_with_roles().await;
    let stranger = Uuid::now_v7();
    app.create_org(stranger).await;
    let r = app
        .get(&format!("/v1/orgs/{}", users.org), stranger)
        .await
        .expect_problem(404, "not_found");
    // Nothing about the org leaks into the refusal.
    assert!(!r.text.contains("Test Org"), "{}", r.text);
    assert!(r.body.get("role").is_none(), "{}", r.text);
}

#[tokio::test]
async fn unknown_org_is_not_found() {
    let app = TestApp::builder().spawn().await;
    let user = Uuid::now_v7();
    app.create_org(user).await;
    app.get(&format!("/v1/orgs/{}", Uuid::now_v7()), user)
        .await
        .expect_problem(404, "not_found");
}

#[tokio::test]
async fn non_uuid_org_id_is_not_found() {
    let app = TestApp::builder().spawn().await;
    let user = Uuid::now_v7();
    app.create_org(user).await;
    for id in ["not-a-uuid", "123", "acme"] {
        app.get(&format!("/v1/orgs/{id}"), user)
            .await
            .expect_problem(404, "not_found");
    }
}

#[tokio::test]
async fn show_org_without_a_token_is_unauthorized() {
    let app = TestApp::builder().spawn().await;
    let owner = Uuid::now_v7();
    let org = app.create_org(owner).await;
    let r = app
        .send(Method::GET, &format!("/v1/orgs/{org}"), None, None)
        .await
        .expect_problem(401, "unauthorized");
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    assert!(!r.text.contains("Test Org"), "{}", r.text);
}

// ---- GET /v1/me ----

#[tokio::test]
async fn me_lists_the_callers_orgs_with_roles() {
    let app = TestApp::builder().spawn().await;
    let users = app.org_with_roles().await;
    // The admin also owns an org of their own.
    let own = app
        .post("/v1/orgs", users.admin, json!({"name": "Admin's Own"}))
        .await
        .expect(201);
    let own: Uuid = own.body["id"].as_str().expect("id").parse().expect("uuid");

    let r = app.get("/v1/me", users.admin).await.expect(200);
    assert_eq!(r.body["user_id"], users.admin.to_string());
    assert_eq!(
        r.body["email"],
        format!("{}@example.com", users.admin.simple())
    );
    let orgs = r.body["orgs"].as_array().expect("orgs");
    assert_eq!(orgs.len(), 2, "{}", r.text);
    assert_eq!(role_in(&r.body, users.org).as_deref(), Some("admin"));
    assert_eq!(role_in(&r.body, own).as_deref(), Some("owner"));
    for org in orgs {
        assert!(org["name"].is_string(), "{}", r.text);
    }

    let r = app.get("/v1/me", users.member).await.expect(200);
    assert_eq!(r.body["user_id"], users.member.to_string());
    assert_eq!(r.body["orgs"].as_array().map(Vec::len), Some(1));
    assert_eq!(role_in(&r.body, users.org).as_deref(), Some("member"));
    assert_eq!(r.body["orgs"][0]["name"], "Test Org");
}

#[tokio::test]
async fn me_without_orgs_has_an_empty_list() {
    let app = TestApp::builder().spawn().await;
    // Someone else's org must not show up.
    app.create_org(Uuid::now_v7()).await;
    let user = Uuid::now_v7();
    let r = app.get("/v1/me", user).await.expect(200);
    assert_eq!(r.body["user_id"], user.to_string());
    assert_eq!(r.body["email"], format!("{}@example.com", user.simple()));
    assert_eq!(r.body["orgs"], json!([]));
}

#[tokio::test]
async fn me_without_a_token_is_unauthorized() {
    let app = TestApp::builder().spawn().await;
    let r = app
        .send(Method::GET, "/v1/me", None, None)
        .await
        .expect_problem(401, "unauthorized");
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
}

/// Whether `org`'s knowledge chunks go to partition `remainder` of the 64.
async fn chunks_go_to(admin: &mut sqlx::PgConnection, org: Uuid, remainder: i32) -> bool {
    sqlx::query_scalar("SELECT satisfies_hash_partition('knowledge_chunks'::regclass, 64, $1, $2)")
        .bind(remainder)
        .bind(org)
        .fetch_one(admin)
        .await
        .expect("partition check")
}

/// Where a new org's id sends its knowledge chunks: the partition with the fewest (as its
/// statistics say). By hash alone an org would land in a given partition once in 64.
#[tokio::test]
async fn a_new_org_goes_to_the_knowledge_partition_with_the_fewest_chunks() {
    let app = TestApp::builder().spawn().await;
    let mut admin = app.admin_db().await;
    let load = |quiet: &str| {
        format!(
            "UPDATE pg_class SET reltuples = CASE relname WHEN '{quiet}' THEN 10 ELSE 100000 END
             WHERE relname ~ '^knowledge_chunks_p[0-9]+$'"
        )
    };
    exec(&mut admin, &load("knowledge_chunks_p17")).await;
    for _ in 0..5 {
        let org = app.create_org(Uuid::now_v7()).await;
        assert!(
            chunks_go_to(&mut admin, org, 17).await,
            "org {org} is not in p17"
        );
    }
    exec(&mut admin, &load("knowledge_chunks_p42")).await;
    for _ in 0..5 {
        let org = app.create_org(Uuid::now_v7()).await;
        assert!(
            chunks_go_to(&mut admin, org, 42).await,
            "org {org} is not in p42"
        );
    }
    // The ids stay time-ordered (v7): the org list's newest-first order relies on it.
    let org = app.create_org(Uuid::now_v7()).await;
    assert_eq!(org.get_version_num(), 7);
}
