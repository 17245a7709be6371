//! The audit log: changes write rows in their own transaction, admins read them, members
//! cannot, and no secret ever lands in a row.

use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::app::{OrgUsers, TestApp};

fn actions(body: &Value) -> Vec<String> {
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn changes_are_recorded_with_actor_request_and_fields() {
    let app = TestApp::builder().spawn().await;
    let OrgUsers {
        org,
        owner,
        admin,
        member,
    } = app.org_with_roles().await;
    let agent = app.create_agent(org, admin, "Alpha").await;
    let path = format!("/v1/orgs/{org}/agents/{}", agent["id"].as_str().unwrap());
    let r = app
        .client
        .patch(app.url(&path))
        .bearer_auth(app.token(admin))
        .header("x-request-id", "audit-req-1")
        .header("user-agent", "audit-test/1.0")
        .json(&json!({"name": "Renamed", "temperature": 1.2}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    app.delete(&path, admin).await.expect(204);
    app.delete(&format!("/v1/orgs/{org}/members/{member}"), owner)
        .await
        .expect(204);

    let log = app
        .get(&format!("/v1/orgs/{org}/audit-logs"), admin)
        .await
        .expect(200)
        .body;
    // Newest first.
    assert_eq!(
        actions(&log),
        [
            "member.remove",
            "agent.delete",
            "agent.update",
            "agent.create",
            "member.add",
            "member.add",
            "org.create"
        ]
    );
    let update = &log["data"][2];
    assert_eq!(update["actor_user_id"], admin.to_string());
    assert_eq!(update["actor_type"], "user");
    assert_eq!(update["entity"], "agent");
    assert_eq!(update["entity_id"], agent["id"]);
    assert_eq!(update["request_id"], "audit-req-1");
    assert_eq!(update["user_agent"], "audit-test/1.0");
    assert_eq!(update["ip"], "127.0.0.1");
    assert_eq!(update["changes"]["fields"], json!(["name", "temperature"]));
    assert!(update["created_at"].is_string());

    let page = app
        .get(&format!("/v1/orgs/{org}/audit-logs?limit=4"), owner)
        .await
        .expect(200)
        .body;
    assert_eq!(page["data"].as_array().unwrap().len(), 4);
    let cursor = page["next_cursor"].as_str().unwrap();
    let rest = app
        .get(
            &format!("/v1/orgs/{org}/audit-logs?limit=4&cursor={cursor}"),
            owner,
        )
        .await
        .expect(200)
        .body;
    assert_eq!(rest["data"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn only_admins_and_owners_read_the_log() {
    let app = TestApp::builder().spawn().await;
    let OrgUsers { org, member, .. } = app.org_with_roles().await;
    app.get(&format!("/v1/orgs/{org}/audit-logs"), member)
        .await
        .expect_problem(403, "forbidden");
    let outsider = Uuid::now_v7();
    app.create_org(outsider).await;
    app.get(&format!("/v1/orgs/{org}/audit-logs"), outsider)
        .await
        .expect_problem(404, "not_found");
}

#[tokio::test]
async fn a_refused_change_leaves_no_record() {
    let app = TestApp::builder().spawn().await;
    let OrgUsers { org, admin, .. } = app.org_with_roles().await;
    app.post(
        &format!("/v1/orgs/{org}/agents"),
        admin,
        json!({"name": "x", "model": "m"}),
    )
    .await
    .expect(422);
    let log = app
        .get(&format!("/v1/orgs/{org}/audit-logs"), admin)
        .await
        .expect(200)
        .body;
    assert!(!actions(&log).iter().any(|a| a.starts_with("agent.")));
}
