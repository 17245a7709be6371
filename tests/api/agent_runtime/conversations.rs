//! The conversations API: filters, pages of messages oldest first, and isolation.

use serde_json::json;

use super::*;

#[tokio::test]
async fn conversations_list_filter_paginate_and_stay_in_their_org() {
    let rt = Runtime::start(Options {
        routed: true,
        ..Options::default()
    })
    .await;
    let org = rt.org();
    rt.kommo.set_lead(&rt.domain, lead(LEAD + 7, OTHER_STAGE));
    rt.incoming("m-a1", "chat-a", LEAD, "one").await.expect(200);
    // Conversations are created by the webhook jobs, which may run side by side: chat-b
    // is newest only if chat-a exists before chat-b's delivery is posted.
    rt.conversation("chat-a").await;
    rt.incoming("m-b1", "chat-b", LEAD + 7, "two")
        .await
        .expect(200);
    rt.messages_when("chat-a", "answered", |m| m.len() == 2)
        .await;
    rt.messages_when("chat-b", "ignored", |m| {
        m.first().is_some_and(|m| m["delivery_status"] == "ignored")
    })
    .await;
    for i in 0..3 {
        rt.incoming(
            &format!("m-a{}", i + 2),
            "chat-a",
            LEAD,
            &format!("more {i}"),
        )
        .await
        .expect(200);
    }
    let (_, all) = rt
        .messages_when("chat-a", "all answered", |m| {
            m.iter().filter(|m| m["direction"] == "in").count() == 4
                && m.iter().all(|m| {
                    m["delivery_status"] != "received" && m["delivery_status"] != "pending"
                })
        })
        .await;

    let list = |query: String| {
        let app = &rt.app;
        let member = rt.users.member;
        async move {
            app.get(&format!("/v1/orgs/{org}/conversations{query}"), member)
                .await
                .expect(200)
                .body
        }
    };
    let chats = |page: &Value| -> Vec<String> {
        page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["chat_id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(chats(&list(String::new()).await), ["chat-b", "chat-a"]);
    assert_eq!(chats(&list(format!("?lead_id={LEAD}")).await), ["chat-a"]);
    assert_eq!(
        chats(&list(format!("?agent_id={}", rt.agent_id())).await),
        ["chat-a"]
    );
    assert_eq!(
        chats(&list("?status=handed_off".into()).await),
        Vec::<String>::new()
    );
    let first = list("?limit=1".into()).await;
    assert_eq!(chats(&first), ["chat-b"]);
    let next = list(format!(
        "?limit=1&cursor={}",
        first["next_cursor"].as_str().unwrap()
    ))
    .await;
    assert_eq!(chats(&next), ["chat-a"]);
    assert_eq!(next["next_cursor"], Value::Null);

    // Messages, oldest first, in pages.
    let id = rt.conversation("chat-a").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/v1/orgs/{org}/conversations/{id}");
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let query = match &cursor {
            Some(c) => format!("?limit=3&cursor={c}"),
            None => "?limit=3".to_owned(),
        };
        let page = rt
            .app
            .get(&format!("{path}{query}"), rt.users.member)
            .await
            .expect(200)
            .body;
        assert_eq!(page["chat_id"], "chat-a");
        seen.extend(
            page["messages"]["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["id"].clone()),
        );
        match page["messages"]["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let expected: Vec<Value> = all.iter().map(|m| m["id"].clone()).collect();
    assert_eq!(seen, expected);
    assert_eq!(all[0]["text"], "one", "oldest first");

    // Refusals.
    rt.app
        .get(
            &format!("/v1/orgs/{org}/conversations?status=closed"),
            rt.users.member,
        )
        .await
        .expect_problem(400, "bad_request");
    rt.app
        .get(
            &format!("/v1/orgs/{org}/conversations/{}", Uuid::now_v7()),
            rt.users.member,
        )
        .await
        .expect_problem(404, "not_found");
    rt.app
        .post(
            &format!("/v1/orgs/{org}/conversations/{}/resume", Uuid::now_v7()),
            rt.users.admin,
            json!({}),
        )
        .await
        .expect_problem(404, "not_found");
    let anonymous = reqwest::get(rt.app.url(&path)).await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let outsider = Uuid::now_v7();
    let other_org = rt.app.create_org(outsider).await;
    rt.app
        .get(&path, outsider)
        .await
        .expect_problem(404, "not_found");
    // Their own org's list does not show ours, and our id under their org is not found.
    let theirs = rt
        .app
        .get(&format!("/v1/orgs/{other_org}/conversations"), outsider)
        .await
        .expect(200)
        .body;
    assert_eq!(theirs["data"], json!([]));
    rt.app
        .get(
            &format!("/v1/orgs/{other_org}/conversations/{id}"),
            outsider,
        )
        .await
        .expect_problem(404, "not_found");
}
