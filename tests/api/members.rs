//! `GET /v1/orgs/{org_id}/members`, `PUT` and `DELETE …/members/{user_id}`.

use std::collections::{BTreeSet, HashMap};

use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::app::TestApp;

fn members_path(org: Uuid) -> String {
    format!("/v1/orgs/{org}/members")
}

fn member_path(org: Uuid, user: Uuid) -> String {
    format!("/v1/orgs/{org}/members/{user}")
}

/// Every member of the org as seen by `viewer`: user id → role (one page of 100).
async fn roles(app: &TestApp, org: Uuid, viewer: Uuid) -> HashMap<Uuid, String> {
    let r = app
        .get(&format!("{}?limit=100", members_path(org)), viewer)
        .await
        .expect(200);
    assert_eq!(r.body["next_cursor"], Value::Null, "{}", r.text);
    r.body["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|m| {
            (
                m["user_id"]
                    .as_str()
                    .expect("user_id")
                    .parse()
                    .expect("uuid"),
                m["role"].as_str().expect("role").to_owned(),
            )
        })
        .collect()
}

// ---- GET members ----

#[tokio::test]
async fn any_member_can_list_members() {
    let app = TestApp::builder().spawn().await;
    let users = app.org_with_roles().await;
    let expected: HashMap<Uuid, String> = [
        (users.owner, "owner".to_string()),
        (users.admin, "admin".to_string()),
        (users.member, "member".to_string()),
    ]
    .into();
    for viewer in [users.owner, users.admin, users.member] {
        let r = app.get(&members_path(users.org), viewer).await.expect(200);
        assert_eq!(r.body["next_cursor"], Value::Null, "{}", r.text);
        let data = r.body["data"].as_array().expect("data");
        assert_eq!(data.len(), 3, "{}", r.text);
        for m in data {
            assert!(m["created_at"].is_string(), "{}", r.text);
            assert!(m["updated_at"].is_string(), "{}", r.text);
            // Members belong to the org of the path: no org id to leak or to trust.
            assert!(m.get("org_id").is_none(), "{}", r.text);
        }
        assert_eq!(roles(&app, users.org, viewer).await, expected);
    }
}

#[tokio::test]
async fn members_are_paginated_with_a_cursor() {
    let app = TestApp::builder().spawn().await;
    let owner = Uuid::now_v7();
    let org = app.create_org(owner).await;
    let mut expected = BTreeSet::from([owner]);
    for _ in 0..6 {
        let user = Uuid::now_v7();
        app.add_member(org, owner, user, "member").await;
        expected.insert(user);
    }

    // 7 members, 3 a page: 3 + 3 + 1.
    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            None => format!("{}?limit=3", members_path(org)),
            Some(c) => format!("{}?limit=3&cursor={c}", members_path(org)),
        };
        let r = app.get(&path, owner).await.expect(200);
        let data = r.body["data"].as_array().expect("data");
        sizes.push(data.len());
        seen.extend(data.iter().map(|m| {
            m["user_id"]
                .as_str()
                .expect("user_id")
                .parse::<Uuid>()
                .expect("uuid")
        }));
        match r.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => {
                assert_eq!(r.body["next_cursor"], Value::Null, "{}", r.text);
                break;
            }
        }
        assert!(sizes.len() <= 3, "too many pages: {sizes:?}");
    }
    assert_eq!(sizes, vec![3, 3, 1]);
    assert_eq!(
        seen.len(),
        expected.len(),
        "a member was listed twice: {seen:?}"
    );
    assert_eq!(seen.iter().copied().collect::<BTreeSet<_>>(), expected);

    // The default page holds them all.
    let r = app.get(&members_path(org), owner).await.expect(200);
    assert_eq!(r.body["data"].as_array().map(Vec::len), Some(7));
    assert_eq!(r.body["next_cursor"], Value::Null);

    // A page that ends exactly at the last member has no next cursor.
    let r = app
        .get(&format!("{}?limit=7", members_path(org)), owner)
        .await
        .expect(200);
    assert_eq!(r.body["data"].as_array().map(Vec::len), Some(7));
    assert_eq!(r.body["next_cursor"], Value::Null);
}

#[tokio::test]
async fn another_orgs_user_cannot_list_members() {
    let app = TestApp::builder().spawn().await;
    let users = app.org_with_roles().await;
    let stranger = Uuid::now_v7();
    app.create_org(stranger).await;
    let r = app
        .get(&members_path(users.org), stranger)
        .await
        .expect_problem(404, "not_found");
    assert!(!r.text.contains(&users.owner.to_string()), "{}", r.text);
}

#[tokio::test]
async fn listing_members_without_a_token_is_unauthorized() {
    let app = TestApp::builder().spawn().await;
    let users = app.org_with_roles().await;
    let r = app
        .send(Method::GET, &members_path(users.org), None, None)
        .await
        .expect_problem(401, "unauthorized");
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
}

#[tokio::test]
async fn limit_out_of_range_is_a_validation_error() {
    let app = TestApp::builder().spawn().await;
    let users = app.org_with_roles().await;
    for limit in ["0", "101", "-1"] {
        let r = app
            .get(
                &format!("{}?limit={limit}", members_path(users.org)),
                users.member,
            )
            .await
            .expect_problem(422, "validation_failed");
        assert_eq!(r.error_fields(), vec!["limit"], "limit={limit}: {}", r.text);
    }
    // The bounds themselves are fine.
    for limit in ["1", "100"] {
        app.get(
            &format!("{}?limit={limit}", members_path(users.org)),
            users.member,
        )
        .await
        .expect(200);
    }
}

#[tokio::test]
async fn non_numeric_limit_is_a_bad_request() {
    let app = TestApp::builder().spawn().await;
    let users = app.org_with_roles().await;
    let r = app
        .get(
            &format!("{}?limit=abc", members_path(users.org)),
            users.member,
        )
        .await
        .expect_problem(400, "bad_request");
    assert!(r.body["detail"].is_string(), "{}", r.text);
}

#[tokio::test]
async fn garbage_cursor_is_a_bad_request() {
    let app = TestApp::builder().spawn().await;
    let users = app.org_with_roles().await;
    for cursor in ["garbage", "!!!", "AAAA"] {
        app.get(
            &format!("{}?cursor={cursor}", members_path(users.org)),
            users.member,
        )
        .await
        .expect_problem(400, "bad_request");
    }
}

// ---- PUT members/{user_id} ----

#[tokio::test]
async fn owner_adds_an_admin_then_changes_the_role() {
    let app = TestApp::builder().spawn().await;
    let owner = Uuid::now_v7();
    let org = app.create_org(owner).await;
    let user = Uuid::now_v7();

    let r = app
        .put(&member_path(org, user), owner, json!({"role": "admin"}))
        .await
        .expect(201);
    assert_eq!(r.body["user_id"], user.to_string());
    assert_eq!(r.body["role"], "admin");
    assert!(r.body["created_at"].is_string(), "{}", r.text);
    let shown = app.get(&format!("/v1/orgs/{org}"), user).await.expect(200);
    assert_eq!(shown.body["role"], "admin");

    let r = app
        .put(&member_path(org, user), owner, json!({"role": "member"}))
        .await
        .expect(200);
    assert_eq!(r.body["user_id"], user.to_string());
    assert_eq!(r.body["role"], "member");
    assert_eq!(roles(&app, org, owner).await[&user], "member");

    // Promoting to owner works too.
    let r = app
        .put(&member_path(org, user), owner, json!({"role": "owner"}))
        .await
        .expect(200);
    assert_eq!(r.body["role"], "owner");
    let shown = app.get(&format!("/v1/orgs/{org}"), user).await.expect(200);
    assert_eq!(shown.body["role"], "owner");
}

#[tokio::test]
async fn admin_adds_a_new_member() {
    let app = TestApp::builder().spawn().await;
    let users = app.org_with_roles().await;
    let newcomer = Uuid::now_v7();
    let r = app
        .put(
            &member_path(users.org, newcomer),
            users.admin,
            json!({"role": "member"}),
        )
        .await
        .expect(201);
    assert_eq!(r.body["user_id"], newcomer.to_string());
    assert_eq!(r.body["role"], "member");
    let shown = app
        .get(&format!("/v1/orgs/{}", users.org), newcomer)
        .await
        .expect(200);
    assert_eq!(shown.body["role"], "member");
}

#[tokio::test]
async fn admin_cannot_promote_to_admin() {
    let app = TestApp::builder().spawn().await;
    let users = app.org_with_roles().await;
    let newcomer = Uuid::now_v7();
    for role in ["admin", "owner"] {
        app.put(
            &member_path(users.org, newcomer),
            users.admin,
            json!({"role": role}),
        )
        .await
        .expect_problem(403, "forbidden");
    }
    // Nor promote an existing member.
    app.put(
        &member_path(users.org, users.member),
        users.admin,
        json!({"role": "admin"}),
    )
    .await
    .expect_problem(403, "forbidden");
    let after = roles(&app, users.org, users.owner).await;
    assert!(!after.contains_key(&newcomer), "{after:?}");
    assert_eq!(after[&users.member], "member");
}

#[tokio::test]
async fn admin_cannot_change_an_existing_members_role() {
    let app = TestApp::builder().spawn().await;
    let users = app.org_with_roles().await;
    let other_admin = Uuid::now_v7();
    app.add_member(users.org, users.owner, other_admin, "admin")
        .await;

    // Demoting another admin or the owner to `member` is still a role change.
    for target in [other_admin, users.owner] {
        app.put(
            &member_path(users.org, target),
            users.admin,
            json!({"role": "member"}),
        )
        .await
        .expect_problem(403, "forbidden");
    }
    let after = roles(&app, users.org, users.owner).await;
    assert_eq!(after[&other_admin], "admin");
    assert_eq!(after[&users.owner], "owner");
}

#[tokio::test]
async fn member_cannot_manage_members() {
    let app = TestApp::builder().spawn().await;
    let users = app.org_with_roles().await;
    let newcomer = Uuid::now_v7();
    app.put(
        &member_path(users.org, newcomer),
        users.member,
        json!({"role": "member"}),
    )
    .await
    .expect_problem(403, "forbidden");
    app.put(
        &member_path(users.org, users.member),
        users.member,
        json!({"role": "admin"}),
    )
    .await
    .expect_problem(403, "forbidden");
    let after = roles(&app, users.org, users.owner).await;
    assert_eq!(after.len(), 3, "{after:?}");
    assert_eq!(after[&users.member], "member");
}

#[tokio::test]
async fn invalid_role_is_a_validation_error() {
    let app = TestApp::builder().spawn().await;
    let users = app.org_with_roles().await;
    let newcomer = Uuid::now_v7();
    for role in [
        json!("superuser"),
        json!("Owner"),
        json!(""),
        json!(1),
        Value::Null,
    ] {
        let r = app
            .put(
                &member_path(users.org, newcomer),
                users.owner,
                json!({"role": role}),
            )
            .await
            .expect_problem(422, "validation_failed");
        assert_eq!(r.error_fields(), vec!["role"], "role {role}: {}", r.text);
    }
    assert!(
        !roles(&app, users.org, users.owner)
            .await
            .contains_key(&newcomer)
    );
}

#[tokio::test]
async fn put_member_rejects_unknown_fields() {
    let app = TestApp::builder().spawn().await;
    let users = app.org_with_roles().await;
    let newcomer = Uuid::now_v7();
    for field in ["org_id", "user_id"] {
        let mut body = json!({"role": "member"});
        body[field] = json!(Uuid::now_v7());
        let r = app
            .put(&member_path(users.org, newcomer), users.owner, body)
            .await
            .expect_problem(422, "validation_failed");
        assert_eq!(r.error_fields(), vec![field], "{}", r.text);
    }
    assert!(
        !roles(&app, users.org, users.owner)
            .await
            .contains_key(&newcomer)
    );
}

#[tokio::test]
async fn another_orgs_user_cannot_add_members() {
    let app = TestApp::builder().spawn().await;
    let users = app.org_with_roles().await;
    let stranger = Uuid::now_v7();
    app.create_org(stranger).await;
    // Not even themselves, not even as an owner of another org.
    for target in [stranger, Uuid::now_v7()] {
        app.put(
            &member_path(users.org, target),
            stranger,
            json!({"role": "owner"}),
        )
        .await
        .expect_problem(404, "not_found");
    }
    assert_eq!(roles(&app, users.org, users.owner).await.len(), 3);
}

#[tokio::test]
async fn non_uuid_member_id_is_not_found() {
    let app = TestApp::builder().spawn().await;
    let users = app.org_with_roles().await;
    app.put(
        &format!("{}/not-a-uuid", members_path(users.org)),
        users.owner,
        json!({"role": "member"}),
    )
    .await
    .expect_problem(404, "not_found");
    app.delete(
        &format!("{}/not-a-uuid", members_path(users.org)),
        users.owner,
    )
    .await
    .expect_problem(404, "not_found");
}

#[tokio::test]
async fn last_owner_cannot_demote_themselves() {
    let app = TestApp::builder().spawn().await;
    let users = app.org_with_roles().await;
    for role in ["admin", "member"] {
        app.put(
            &member_path(users.org, users.owner),
            users.owner,
            json!({"role": role}),
        )
        .await
        .expect_problem(409, "conflict");
    }
    assert_eq!(
        roles(&app, users.org, users.owner).await[&users.owner],
        "owner"
    );
    // Setting the role they already have is not a demotion.
    app.put(
        &member_path(users.org, users.owner),
        users.owner,
        json!({"role": "owner"}),
    )
    .await
    .expect(200);
}

#[tokio::test]
async fn an_owner_can_step_down_when_another_owner_remains() {
    let app = TestApp::builder().spawn().await;
    let users = app.org_with_roles().await;
    app.put(
        &member_path(users.org, users.admin),
        users.owner,
        json!({"role": "owner"}),
    )
    .await
    .expect(200);
    let r = app
        .put(
            &member_path(users.org, users.owner),
            users.owner,
            json!({"role": "member"}),
        )
        .await
        .expect(200);
    assert_eq!(r.body["role"], "member");
    let after = roles(&app, users.org, users.admin).await;
    assert_eq!(after[&users.owner], "member");
    assert_eq!(after[&users.admin], "owner");
}

// ---- DELETE members/{user_id} ----

#[tokio::test]
async fn owner_removes_a_member() {
    let app = TestApp::builder().spawn().await;
    let users = app.org_with_roles().await;
    let r = app
        .delete(&member_path(users.org, users.member), users.owner)
        .await
        .expect(204);
    assert!(r.text.is_empty(), "{}", r.text);

    // The removed user has lost all access, as if the org did not exist.
    app.get(&format!("/v1/orgs/{}", users.org), users.member)
        .await
        .expect_problem(404, "not_found");
    app.get(&members_path(users.org), users.member)
        .await
        .expect_problem(404, "not_found");
    let me = app.get("/v1/me", users.member).await.expect(200);
    assert_eq!(me.body["orgs"], json!([]));

    let after = roles(&app, users.org, users.owner).await;
    assert_eq!(after.len(), 2, "{after:?}");
    assert!(!after.contains_key(&users.member));

    // A second removal finds nobody.
    app.delete(&member_path(users.org, users.member), users.owner)
        .await
        .expect_problem(404, "not_found");
}

#[tokio::test]
async fn admin_cannot_remove_members() {
    let app = TestApp::builder().spawn().await;
    let users = app.org_with_roles().await;
    app.delete(&member_path(users.org, users.member), users.admin)
        .await
        .expect_problem(403, "forbidden");
    assert_eq!(roles(&app, users.org, users.owner).await.len(), 3);
}

#[tokio::test]
async fn member_cannot_remove_members() {
    let app = TestApp::builder().spawn().await;
    let users = app.org_with_roles().await;
    for target in [users.admin, users.owner] {
        app.delete(&member_path(users.org, target), users.member)
            .await
            .expect_problem(403, "forbidden");
    }
    assert_eq!(roles(&app, users.org, users.owner).await.len(), 3);
}

/// Members and admins could not leave at all, and an owner's leave failed its audit
/// insert and rolled back. Each may leave now, with an audit row the owners can read.
#[tokio::test]
async fn members_admins_and_a_second_owner_may_leave() {
    let app = TestApp::builder().spawn().await;
    let users = app.org_with_roles().await;
    let second = Uuid::now_v7();
    app.add_member(users.org, users.owner, second, "owner")
        .await;
    for leaver in [users.member, users.admin, users.owner] {
        app.delete(&member_path(users.org, leaver), leaver)
            .await
            .expect(204);
        app.get(&format!("/v1/orgs/{}", users.org), leaver)
            .await
            .expect_problem(404, "not_found");
    }
    let after = roles(&app, users.org, second).await;
    assert_eq!(after.len(), 1, "{after:?}");
    let audit = app
        .get(&format!("/v1/orgs/{}/audit-logs", users.org), second)
        .await
        .expect(200);
    let leaves: Vec<&Value> = audit.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "member.leave")
        .collect();
    assert_eq!(leaves.len(), 3, "{}", audit.text);
    // The last owner still cannot.
    app.delete(&member_path(users.org, second), second)
        .await
        .expect_problem(409, "conflict");
}

#[tokio::test]
async fn another_orgs_user_cannot_remove_members() {
    let app = TestApp::builder().spawn().await;
    let users = app.org_with_roles().await;
    let stranger = Uuid::now_v7();
    app.create_org(stranger).await;
    app.delete(&member_path(users.org, users.member), stranger)
        .await
        .expect_problem(404, "not_found");
    assert_eq!(roles(&app, users.org, users.owner).await.len(), 3);
}

#[tokio::test]
async fn removing_a_non_member_is_not_found() {
    let app = TestApp::builder().spawn().await;
    let users = app.org_with_roles().await;
    // A member of another org is not a member of this one.
    let elsewhere = Uuid::now_v7();
    app.create_org(elsewhere).await;
    for target in [Uuid::now_v7(), elsewhere] {
        app.delete(&member_path(users.org, target), users.owner)
            .await
            .expect_problem(404, "not_found");
    }
    // And their own org is untouched.
    let me = app.get("/v1/me", elsewhere).await.expect(200);
    assert_eq!(me.body["orgs"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn last_owner_cannot_leave() {
    let app = TestApp::builder().spawn().await;
    let users = app.org_with_roles().await;
    let r = app
        .delete(&member_path(users.org, users.owner), users.owner)
        .await
        .expect_problem(409, "conflict");
    assert!(
        r.body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("owner")),
        "{}",
        r.text
    );
    let shown = app
        .get(&format!("/v1/orgs/{}", users.org), users.owner)
        .await
        .expect(200);
    assert_eq!(shown.body["role"], "owner");
}

#[tokio::test]
async fn an_owner_can_remove_another_owner() {
    let app = TestApp::builder().spawn().await;
    let users = app.org_with_roles().await;
    let second = Uuid::now_v7();
    app.add_member(users.org, users.owner, second, "owner")
        .await;

    app.delete(&member_path(users.org, users.owner), second)
        .await
        .expect(204);
    let after = roles(&app, users.org, second).await;
    assert!(!after.contains_key(&users.owner), "{after:?}");
    assert_eq!(after[&second], "owner");
    app.get(&format!("/v1/orgs/{}", users.org), users.owner)
        .await
        .expect_problem(404, "not_found");

    // Now `second` is the last owner and cannot leave.
    app.delete(&member_path(users.org, second), second)
        .await
        .expect_problem(409, "conflict");
}

#[tokio::test]
async fn removing_a_member_without_a_token_is_unauthorized() {
    let app = TestApp::builder().spawn().await;
    let users = app.org_with_roles().await;
    let r = app
        .send(
            Method::DELETE,
            &member_path(users.org, users.member),
            None,
            None,
        )
        .await
        .expect_problem(401, "unauthorized");
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    assert_eq!(roles(&app, users.org, users.owner).await.len(), 3);
}

#[tokio::test]
async fn two_owners_removing_each_other_at_once_leave_one_owner() {
    let app = TestApp::builder().spawn().await;
    // Several rounds, each on a fresh org, so the two requests really overlap at least
    // some of the time; each round must hold on its own.
    for round in 0..5 {
        let a = Uuid::now_v7();
        let b = Uuid::now_v7();
        let org = app.create_org(a).await;
        app.add_member(org, a, b, "owner").await;

        let (remove_b, remove_a) = (member_path(org, b), member_path(org, a));
        let (a_removes_b, b_removes_a) =
            tokio::join!(app.delete(&remove_b, a), app.delete(&remove_a, b));
        let statuses = [a_removes_b.status.as_u16(), b_removes_a.status.as_u16()];
        for r in [&a_removes_b, &b_removes_a] {
            // The loser sees either the conflict or, when the winner committed first, an
            // org it no longer belongs to; never a server error such as a deadlock.
            assert!(
                matches!(r.status.as_u16(), 204 | 404 | 409),
                "round {round}: {} {}",
                r.status,
                r.text
            );
        }
        assert!(
            statuses.iter().filter(|s| **s == 204).count() <= 1,
            "round {round}: both owners were removed: {statuses:?}"
        );

        // Whoever is left is still an owner of the org, and a 204 meant a removal.
        let viewer = if statuses[0] == 204 { a } else { b };
        let after = roles(&app, org, viewer).await;
        let owners: Vec<Uuid> = after
            .iter()
            .filter(|(_, role)| role.as_str() == "owner")
            .map(|(user, _)| *user)
            .collect();
        assert!(
            !owners.is_empty(),
            "round {round}: no owner left ({statuses:?})"
        );
        assert_eq!(after.contains_key(&b), statuses[0] != 204, "round {round}");
        assert_eq!(after.contains_key(&a), statuses[1] != 204, "round {round}");
    }
}
