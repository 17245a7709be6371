//! Agents: every rule of the Agent resource, the list's filters, pagination and total,
//! and the refusals (401, 404 for other orgs, 403 for members, 422 for bad input).

use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::app::{OrgUsers, TestApp};

fn agents_path(org: Uuid) -> String {
    format!("/v1/orgs/{org}/agents")
}

fn agent_path(org: Uuid, agent: &Value) -> String {
    format!("/v1/orgs/{org}/agents/{}", agent["id"].as_str().unwrap())
}

fn valid_agent() -> Value {
    json!({"name": "Closer", "model": "gpt-4o-mini"})
}

/// A CRM connection of `org`, inserted directly (the CRM endpoints come later).
async fn insert_connection(app: &TestApp, org: Uuid, domain: &str) -> Uuid {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO crm_connections (id, org_id, provider, base_domain, status)
         VALUES ($1, $2, 'kommo', $3, 'connected')",
    )
    .bind(id)
    .bind(org)
    .bind(domain)
    .execute(&mut app.admin_db().await)
    .await
    .unwrap();
    id
}

#[tokio::test]
async fn create_applies_defaults_and_hides_nothing_it_should_show() {
    let app = TestApp::builder().spawn().await;
    let OrgUsers { org, admin, .. } = app.org_with_roles().await;
    let r = app
        .post(&agents_path(org), admin, valid_agent())
        .await
        .expect(201);
    let a = &r.body;
    assert_eq!(a["org_id"], org.to_string());
    assert_eq!(a["name"], "Closer");
    assert_eq!(a["status"], "draft");
    assert_eq!(a["instructions"], "");
    assert_eq!(a["channels"], json!(["chat"]));
    assert_eq!(a["temperature"], 0.7);
    assert_eq!(a["max_tokens"], 2048);
    assert_eq!(a["settings"], json!({}));
    assert_eq!(a["connection_id"], Value::Null);
    assert_eq!(a["schedule"], Value::Null);
    assert!(a["id"].as_str().unwrap().parse::<Uuid>().is_ok());
    assert!(a["created_at"].as_str().unwrap().ends_with('Z'));

    let got = app.get(&agent_path(org, a), admin).await.expect(200);
    assert_eq!(&got.body, a);
}

#[tokio::test]
async fn create_accepts_every_field_and_the_goal_alias() {
    let app = TestApp::builder().spawn().await;
    let OrgUsers { org, owner, .. } = app.org_with_roles().await;
    let connection = insert_connection(&app, org, "acme.kommo.com").await;
    let body = json!({
        "connection_id": connection,
        "name": "Full",
        "status": "active",
        "model": "openai/gpt-4.1:latest",
        "goal": "Book demos.",
        "channels": ["chat", "email"],
        "schedule": "Mon-Fri 9-18",
        "temperature": 2.0,
        "max_tokens": 32000,
        "settings": {"tone": "friendly", "nested": {"a": [1, 2]}},
    });
    let a = app
        .post(&agents_path(org), owner, body)
        .await
        .expect(201)
        .body;
    assert_eq!(a["instructions"], "Book demos.");
    assert_eq!(a["connection_id"], connection.to_string());
    assert_eq!(a["status"], "active");
    assert_eq!(a["channels"], json!(["chat", "email"]));
    assert_eq!(a["temperature"], 2.0);
    assert_eq!(a["max_tokens"], 32000);
    assert_eq!(a["settings"]["nested"]["a"], json!([1, 2]));
}

#[tokio::test]
async fn create_rejects_every_invalid_field_with_its_name() {
    let app = TestApp::builder().spawn().await;
    let OrgUsers { org, admin, .. } = app.org_with_roles().await;
    let big_settings = json!({"blob": "x".repeat(65 * 1024)});
    let cases: Vec<(&str, Value)> = vec![
        ("name", json!({"name": "x"})),
        ("name", json!({"name": "x".repeat(101)})),
        ("model", json!({"model": ""})),
        ("model", json!({"model": "has space"})),
        ("model", json!({"model": "m".repeat(101)})),
        ("instructions", json!({"instructions": "i".repeat(20001)})),
        ("channels", json!({"channels": []})),
        ("channels", json!({"channels": [""]})),
        ("channels", json!({"channels": ["c".repeat(51)]})),
        ("schedule", json!({"schedule": "s".repeat(201)})),
        ("temperature", json!({"temperature": 2.01})),
        ("temperature", json!({"temperature": -0.1})),
        ("max_tokens", json!({"max_tokens": 0})),
        ("max_tokens", json!({"max_tokens": 32001})),
        ("settings", json!({"settings": ["not", "an", "object"]})),
        ("settings", json!({"settings": big_settings})),
        ("status", json!({"status": "paused"})),
        ("temperature", json!({"temperature": "hot"})),
        ("id", json!({"id": Uuid::now_v7()})),
        ("org_id", json!({"org_id": Uuid::now_v7()})),
        ("created_at", json!({"created_at": "2026-01-01T00:00:00Z"})),
        ("connection_id", json!({"connection_id": "not-a-uuid"})),
    ];
    for (field, patch) in cases {
        let mut body = valid_agent();
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        let r = app
            .post(&agents_path(org), admin, body)
            .await
            .expect_problem(422, "validation_failed");
        assert!(
            r.error_fields().iter().any(|f| f == field),
            "{field}: {}",
            r.text
        );
    }
    // Missing required fields.
    for field in ["name", "model"] {
        let mut body = valid_agent();
        body.as_object_mut().unwrap().remove(field);
        app.post(&agents_path(org), admin, body)
            .await
            .expect_problem(422, "validation_failed");
    }
    // `goal` and `instructions` together are ambiguous.
    let mut body = valid_agent();
    body["goal"] = "a".into();
    body["instructions"] = "b".into();
    app.post(&agents_path(org), admin, body)
        .await
        .expect_problem(422, "validation_failed");

    // Nothing was created by any of the refused requests.
    let list = app.get(&agents_path(org), admin).await.expect(200);
    assert_eq!(list.body["total"], 0);
}

#[tokio::test]
async fn connection_of_another_org_is_refused() {
    let app = TestApp::builder().spawn().await;
    let OrgUsers { org, admin, .. } = app.org_with_roles().await;
    let other_owner = Uuid::now_v7();
    let other_org = app.create_org(other_owner).await;
    let foreign = insert_connection(&app, other_org, "other.amocrm.ru").await;
    let mut body = valid_agent();
    body["connection_id"] = json!(foreign);
    let r = app
        .post(&agents_path(org), admin, body)
        .await
        .expect_problem(422, "validation_failed");
    assert_eq!(r.error_fields(), vec!["connection_id"]);

    let agent = app.create_agent(org, admin, "Alpha").await;
    let r = app
        .patch(
            &agent_path(org, &agent),
            admin,
            json!({"connection_id": foreign}),
        )
        .await
        .expect_problem(422, "validation_failed");
    assert_eq!(r.error_fields(), vec!["connection_id"]);
}

#[tokio::test]
async fn patch_changes_only_present_fields_and_null_clears() {
    let app = TestApp::builder().spawn().await;
    let OrgUsers { org, admin, .. } = app.org_with_roles().await;
    let connection = insert_connection(&app, org, "acme.kommo.com").await;
    let mut body = valid_agent();
    body["schedule"] = "always".into();
    body["connection_id"] = json!(connection);
    body["instructions"] = "Original".into();
    let agent = app
        .post(&agents_path(org), admin, body)
        .await
        .expect(201)
        .body;
    let path = agent_path(org, &agent);

    let r = app
        .patch(&path, admin, json!({"name": "Renamed", "temperature": 1.5}))
        .await
        .expect(200);
    assert_eq!(r.body["name"], "Renamed");
    assert_eq!(r.body["temperature"], 1.5);
    assert_eq!(r.body["instructions"], "Original");
    assert_eq!(r.body["schedule"], "always");
    assert_eq!(r.body["connection_id"], connection.to_string());
    assert!(r.body["updated_at"].as_str() >= agent["updated_at"].as_str());

    let r = app
        .patch(
            &path,
            admin,
            json!({"schedule": null, "connection_id": null, "goal": "New goal"}),
        )
        .await
        .expect(200);
    assert_eq!(r.body["schedule"], Value::Null);
    assert_eq!(r.body["connection_id"], Value::Null);
    assert_eq!(r.body["instructions"], "New goal");
    assert_eq!(r.body["name"], "Renamed");

    // An invalid patch changes nothing.
    for bad in [
        json!({"name": "x"}),
        json!({"max_tokens": 0}),
        json!({"channels": []}),
        json!({"org_id": Uuid::now_v7()}),
        json!({"name": null}),
        json!({"max_tokens": null}),
        json!({"schedule": "s".repeat(201)}),
    ] {
        app.patch(&path, admin, bad)
            .await
            .expect_problem(422, "validation_failed");
    }
    let after = app.get(&path, admin).await.expect(200);
    assert_eq!(after.body["name"], "Renamed");
    assert_eq!(after.body["max_tokens"], 2048);
}

#[tokio::test]
async fn status_endpoint_sets_status() {
    let app = TestApp::builder().spawn().await;
    let OrgUsers {
        org, admin, member, ..
    } = app.org_with_roles().await;
    let agent = app.create_agent(org, admin, "Alpha").await;
    let path = format!("{}/status", agent_path(org, &agent));
    let r = app
        .post(&path, admin, json!({"status": "active"}))
        .await
        .expect(200);
    assert_eq!(r.body["status"], "active");
    app.post(&path, admin, json!({"status": "running"}))
        .await
        .expect_problem(422, "validation_failed");
    app.post(&path, admin, json!({}))
        .await
        .expect_problem(422, "validation_failed");
    app.post(&path, member, json!({"status": "inactive"}))
        .await
        .expect_problem(403, "forbidden");
    let r = app.get(&agent_path(org, &agent), member).await.expect(200);
    assert_eq!(r.body["status"], "active");
    let missing = format!("/v1/orgs/{org}/agents/{}/status", Uuid::now_v7());
    app.post(&missing, admin, json!({"status": "active"}))
        .await
        .expect_problem(404, "not_found");
}

#[tokio::test]
async fn delete_removes_the_agent() {
    let app = TestApp::builder().spawn().await;
    let OrgUsers {
        org, admin, member, ..
    } = app.org_with_roles().await;
    let agent = app.create_agent(org, admin, "Alpha").await;
    let path = agent_path(org, &agent);
    app.delete(&path, member)
        .await
        .expect_problem(403, "forbidden");
    app.delete(&path, admin).await.expect(204);
    app.get(&path, admin).await.expect_problem(404, "not_found");
    app.delete(&path, admin)
        .await
        .expect_problem(404, "not_found");
}

#[tokio::test]
async fn list_filters_paginates_and_counts() {
    let app = TestApp::builder().spawn().await;
    let OrgUsers {
        org, admin, member, ..
    } = app.org_with_roles().await;
    for i in 0..7 {
        let mut body = json!({"name": format!("Sales Bot {i}"), "model": "m"});
        if i % 2 == 0 {
            body["status"] = "active".into();
        }
        app.post(&agents_path(org), admin, body).await.expect(201);
    }
    app.post(
        &agents_path(org),
        admin,
        json!({"name": "100% closer", "model": "m"}),
    )
    .await
    .expect(201);
    app.post(
        &agents_path(org),
        admin,
        json!({"name": "Support_desk", "model": "m"}),
    )
    .await
    .expect(201);

    // Walk every page as a member (reading needs no more).
    let mut names = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut path = format!("{}?limit=4", agents_path(org));
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let r = app.get(&path, member).await.expect(200);
        assert_eq!(r.body["total"], 9);
        pages += 1;
        for a in r.body["data"].as_array().unwrap() {
            names.push(a["name"].as_str().unwrap().to_string());
        }
        match r.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(names.len(), 9);
    // Newest first.
    assert_eq!(names[0], "Support_desk");
    assert_eq!(names[8], "Sales Bot 0");

    let r = app
        .get(&format!("{}?status=active", agents_path(org)), member)
        .await
        .expect(200);
    assert_eq!(r.body["total"], 4);
    assert!(
        r.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["status"] == "active")
    );

    let r = app
        .get(
            &format!("{}?search=sALES%20bot&status=draft", agents_path(org)),
            member,
        )
        .await
        .expect(200);
    assert_eq!(r.body["total"], 3);

    // LIKE wildcards in the search are literal characters.
    let r = app
        .get(&format!("{}?search=%25", agents_path(org)), member)
        .await
        .expect(200);
    assert_eq!(r.body["total"], 1);
    assert_eq!(r.body["data"][0]["name"], "100% closer");
    let r = app
        .get(&format!("{}?search=_", agents_path(org)), member)
        .await
        .expect(200);
    assert_eq!(r.body["total"], 1);
    assert_eq!(r.body["data"][0]["name"], "Support_desk");

    // Bad query parameters.
    for (query, status, code) in [
        ("limit=0", 422, "validation_failed"),
        ("limit=101", 422, "validation_failed"),
        ("limit=ten", 400, "bad_request"),
        ("status=paused", 400, "bad_request"),
        ("cursor=%%%", 400, "bad_request"),
        ("cursor=bm90LWEtdXVpZA", 400, "bad_request"),
        (
            format!("search={}", "a".repeat(101)).as_str(),
            422,
            "validation_failed",
        ),
    ] {
        app.get(&format!("{}?{query}", agents_path(org)), member)
            .await
            .expect_problem(status, code);
    }
}

/// The list reads its rows in PostgreSQL's text format (its statement runs inside a
/// simple query) and writes them from the rows as they lie (`AgentView`), the other
/// routes through `Agent` in the binary one: every field must come out the same.
#[tokio::test]
async fn the_list_shows_each_agent_exactly_as_show_does() {
    let app = TestApp::builder().spawn().await;
    let OrgUsers {
        org, owner, member, ..
    } = app.org_with_roles().await;
    let connection = insert_connection(&app, org, "acme.kommo.com").await;
    let full = app
        .post(
            &agents_path(org),
            owner,
            json!({
                "connection_id": connection,
                "name": "O'Brien \\ \"Продажи\" {1,2}",
                "status": "inactive",
                "model": "openai/gpt-4.1:latest",
                "instructions": "Line one.\nLine two, with a tab\tand NUL-free unicode: 日本語 🙂",
                "channels": ["chat", "e mail", "a,b", "{x}", "q\"uote", "back\\slash", "NULL"],
                "schedule": "Mon-Fri 9-18",
                "temperature": 0.3,
                "max_tokens": 32000,
                "settings": {"tone": "friendly", "nested": {"a": [1, 2.5, null, "ü"]}},
                "working_hours": {"timezone": "Europe/Moscow", "days": {"mon": [["09:00", "18:00"]]}},
                "response_delay_secs": 45,
                "off_hours_reply": "We're closed; back at 9.",
                "handoff_keywords": ["manager", "оператор", "a,b", "\"quoted\""],
                "max_turns": 12,
            }),
        )
        .await
        .expect(201)
        .body;
    let bare = app.create_agent(org, owner, "Bare").await;
    let listed = app.get(&agents_path(org), member).await.expect(200);
    // JSON columns pass through as PostgreSQL printed them, less the spaces.
    assert_eq!(
        agents_api::domain::json::compact(&listed.text),
        listed.text,
        "the list's JSON has whitespace between tokens"
    );
    let listed = listed.body;
    assert_eq!(listed["total"], 2);
    let shown_full = app
        .get(&agent_path(org, &full), member)
        .await
        .expect(200)
        .body;
    let shown_bare = app
        .get(&agent_path(org, &bare), member)
        .await
        .expect(200)
        .body;
    assert_eq!(listed["data"], json!([shown_bare, shown_full]));
    assert_eq!(shown_full, full);

    // A search travels as a literal inside the statement: quotes and backslashes in it
    // are the user's characters, not SQL.
    let r = app
        .get(
            &format!("{}?search=O%27Brien%20%5C", agents_path(org)),
            member,
        )
        .await
        .expect(200);
    assert_eq!(r.body["total"], 1);
    assert_eq!(r.body["data"][0]["id"], full["id"]);
    let r = app
        .get(
            &format!(
                "{}?search=%27%3B%20DROP%20TABLE%20agents%3B--",
                agents_path(org)
            ),
            member,
        )
        .await
        .expect(200);
    assert_eq!(r.body["total"], 0);
    assert_eq!(r.body["data"], json!([]));

    // A page past the last row is empty and still counts every match.
    let r = app
        .get(
            &format!("{}?cursor=AAAAAAAAAAAAAAAAAAAAAA", agents_path(org)),
            member,
        )
        .await
        .expect(200);
    assert_eq!(r.body["data"], json!([]));
    assert_eq!(r.body["total"], 2);
    assert_eq!(r.body["next_cursor"], Value::Null);
}

#[tokio::test]
async fn list_shows_only_the_orgs_own_agents() {
    let app = TestApp::builder().spawn().await;
    let (alice, bob) = (Uuid::now_v7(), Uuid::now_v7());
    let org_a = app.create_org(alice).await;
    let org_b = app.create_org(bob).await;
    app.create_agent(org_a, alice, "Alpha").await;
    app.create_agent(org_b, bob, "Bravo").await;
    let r = app.get(&agents_path(org_a), alice).await.expect(200);
    assert_eq!(r.body["total"], 1);
    assert_eq!(r.body["data"][0]["name"], "Alpha");
}

#[tokio::test]
async fn members_may_read_but_not_write() {
    let app = TestApp::builder().spawn().await;
    let OrgUsers {
        org, admin, member, ..
    } = app.org_with_roles().await;
    let agent = app.create_agent(org, admin, "Alpha").await;
    app.get(&agents_path(org), member).await.expect(200);
    app.get(&agent_path(org, &agent), member).await.expect(200);
    app.post(&agents_path(org), member, valid_agent())
        .await
        .expect_problem(403, "forbidden");
    app.patch(&agent_path(org, &agent), member, json!({"name": "Mine"}))
        .await
        .expect_problem(403, "forbidden");
}

/// Every org route of this resource, as (method, path, body).
fn org_routes(org: Uuid, agent: Uuid) -> Vec<(Method, String, Option<Value>)> {
    let base = agents_path(org);
    vec![
        (Method::GET, format!("/v1/orgs/{org}"), None),
        (Method::GET, format!("/v1/orgs/{org}/members"), None),
        (
            Method::PUT,
            format!("/v1/orgs/{org}/members/{}", Uuid::now_v7()),
            Some(json!({"role": "member"})),
        ),
        (
            Method::DELETE,
            format!("/v1/orgs/{org}/members/{}", Uuid::now_v7()),
            None,
        ),
        (Method::GET, base.clone(), None),
        (Method::POST, base.clone(), Some(valid_agent())),
        (Method::GET, format!("{base}/{agent}"), None),
        (
            Method::PATCH,
            format!("{base}/{agent}"),
            Some(json!({"name": "Mine"})),
        ),
        (
            Method::POST,
            format!("{base}/{agent}/status"),
            Some(json!({"status": "active"})),
        ),
        (Method::DELETE, format!("{base}/{agent}"), None),
    ]
}

#[tokio::test]
async fn every_org_route_needs_a_token() {
    let app = TestApp::builder().spawn().await;
    let OrgUsers { org, admin, .. } = app.org_with_roles().await;
    let agent = app.create_agent(org, admin, "Alpha").await;
    let agent_id: Uuid = agent["id"].as_str().unwrap().parse().unwrap();
    for (method, path, body) in org_routes(org, agent_id) {
        let r = app.send(method.clone(), &path, None, body).await;
        assert_eq!(r.status, 401, "{method} {path}: {}", r.text);
    }
}

#[tokio::test]
async fn every_org_route_is_404_for_other_orgs_users() {
    let app = TestApp::builder().spawn().await;
    let OrgUsers { org, admin, .. } = app.org_with_roles().await;
    let agent = app.create_agent(org, admin, "Alpha").await;
    let agent_id: Uuid = agent["id"].as_str().unwrap().parse().unwrap();
    // Bob owns an org of his own, so he is a real, fully privileged user elsewhere.
    let bob = Uuid::now_v7();
    app.create_org(bob).await;
    let token = app.token(bob);
    for (method, path, body) in org_routes(org, agent_id) {
        let r = app.send(method.clone(), &path, Some(&token), body).await;
        assert_eq!(r.status, 404, "{method} {path}: {}", r.text);
        assert_eq!(r.body["code"], "not_found");
    }
    // And the agent is untouched.
    let r = app.get(&agent_path(org, &agent), admin).await.expect(200);
    assert_eq!(r.body["name"], "Alpha");
}

/// `total` comes from counts a trigger keeps: they must follow every create, status
/// change and delete, also many at once, and agree with the rows themselves.
#[tokio::test]
async fn total_follows_creates_status_changes_and_deletes() {
    let app = TestApp::builder().spawn().await;
    let alice = Uuid::now_v7();
    let org = app.create_org(alice).await;
    let total = |status: &'static str| {
        let app = &app;
        async move {
            let query = if status.is_empty() {
                String::new()
            } else {
                format!("?status={status}")
            };
            let r = app
                .get(&format!("{}{query}", agents_path(org)), alice)
                .await
                .expect(200);
            r.body["total"].as_i64().unwrap()
        }
    };
    // Twelve at once, then half of them flipped between two statuses at once: rows
    // changing in opposite directions must not deadlock on the counts.
    let send = |method: reqwest::Method, path: String, body: Value| {
        let request = app
            .client
            .request(method, app.url(&path))
            .bearer_auth(app.token(alice))
            .json(&body);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let mut creates = tokio::task::JoinSet::new();
    for i in 0..12 {
        creates.spawn(send(
            reqwest::Method::POST,
            agents_path(org),
            json!({"name": format!("Agent {i}"), "model": "gpt-4o-mini"}),
        ));
    }
    let created: Vec<Value> = creates
        .join_all()
        .await
        .into_iter()
        .map(|(status, body)| {
            assert_eq!(status, 201, "{body}");
            body
        })
        .collect();
    assert_eq!(total("").await, 12);
    assert_eq!(total("draft").await, 12);
    let mut flips = tokio::task::JoinSet::new();
    for (i, agent) in created.iter().take(6).enumerate() {
        let status = if i % 2 == 0 { "active" } else { "inactive" };
        flips.spawn(send(
            reqwest::Method::PATCH,
            format!("{}/{}", agents_path(org), agent["id"].as_str().unwrap()),
            json!({"status": status}),
        ));
    }
    for (status, body) in flips.join_all().await {
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(total("").await, 12);
    assert_eq!(total("active").await, 3);
    assert_eq!(total("inactive").await, 3);
    assert_eq!(total("draft").await, 6);
    for agent in created.iter().skip(9) {
        app.delete(
            &format!("{}/{}", agents_path(org), agent["id"].as_str().unwrap()),
            alice,
        )
        .await
        .expect(204);
    }
    assert_eq!(total("").await, 9);
    assert_eq!(total("draft").await, 3);

    // The counts agree with the rows.
    let mut admin = app.admin_db().await;
    let mismatched: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT org_id, status, count(*) AS n FROM agents GROUP BY 1, 2) a
         FULL JOIN agent_counts c USING (org_id, status)
         WHERE coalesce(a.n, 0) <> coalesce(c.n, 0)",
    )
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!(mismatched, 0);

    // Deleting the org takes its counts along (the cascade removes counts and agents in
    // one statement, the trigger included).
    sqlx::query("DELETE FROM organizations WHERE id = $1")
        .bind(org)
        .execute(&mut admin)
        .await
        .unwrap();
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM agent_counts WHERE org_id = $1")
        .bind(org)
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert_eq!(left, 0);
}
