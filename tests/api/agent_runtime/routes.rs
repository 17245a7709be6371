//! `PUT/GET …/agents/{agent_id}/routes` and the agent runtime fields: what is stored,
//! the refusals, and one active agent per stage.

use serde_json::json;

use super::*;

#[tokio::test]
async fn routes_are_replaced_read_back_and_refused_with_problems() {
    let rt = Runtime::start(Options::default()).await;
    let org = rt.org();
    let path = format!("/v1/orgs/{org}/agents/{}/routes", rt.agent_id());
    assert_eq!(
        rt.app.get(&path, rt.users.member).await.expect(200).body,
        json!([])
    );

    let routes = json!([
        {"connection_id": rt.connection, "pipeline_id": PIPELINE, "stage_ids": [STAGE, OTHER_STAGE]},
        {"connection_id": rt.connection, "pipeline_id": 555, "stage_ids": "all"},
    ]);
    let stored = rt.put_routes(routes.clone()).await.expect(200).body;
    let expected = json!([
        {"connection_id": rt.connection, "pipeline_id": 555, "stage_ids": "all"},
        {"connection_id": rt.connection, "pipeline_id": PIPELINE, "stage_ids": [STAGE, OTHER_STAGE]},
    ]);
    assert_eq!(stored, expected);
    assert_eq!(
        rt.app.get(&path, rt.users.member).await.expect(200).body,
        expected
    );

    // Refusals.
    rt.app
        .put(&path, rt.users.member, routes.clone())
        .await
        .expect_problem(403, "forbidden");
    for (bad, field) in [
        (
            json!([{"connection_id": rt.connection, "pipeline_id": 0, "stage_ids": "all"}]),
            "[0].pipeline_id",
        ),
        (
            json!([{"connection_id": rt.connection, "pipeline_id": 1, "stage_ids": []}]),
            "[0].stage_ids",
        ),
        (
            json!([{"connection_id": rt.connection, "pipeline_id": 1, "stage_ids": [-3]}]),
            "[0].stage_ids",
        ),
        (
            json!([{"connection_id": Uuid::now_v7(), "pipeline_id": 1, "stage_ids": "all"}]),
            "[0].connection_id",
        ),
    ] {
        let refused = rt
            .put_routes(bad)
            .await
            .expect_problem(422, "validation_failed");
        assert_eq!(refused.error_fields(), [field], "{:?}", refused.body);
    }
    rt.put_routes(json!([{"connection_id": rt.connection, "pipeline_id": 1, "stage_ids": "some"}]))
        .await
        .expect_problem(422, "validation_failed");
    rt.put_routes(json!([{"connection_id": rt.connection, "pipeline_id": 1, "stage_ids": "all", "org_id": org}]))
        .await
        .expect_problem(422, "validation_failed");
    let outsider = Uuid::now_v7();
    rt.app.create_org(outsider).await;
    rt.app
        .get(&path, outsider)
        .await
        .expect_problem(404, "not_found");
    rt.app
        .get(
            &format!("/v1/orgs/{org}/agents/{}/routes", Uuid::now_v7()),
            rt.users.member,
        )
        .await
        .expect_problem(404, "not_found");
    let anonymous = reqwest::get(rt.app.url(&path)).await.unwrap();
    assert_eq!(anonymous.status(), 401);
    // Unchanged by the refusals; an empty list removes every route.
    assert_eq!(
        rt.app.get(&path, rt.users.member).await.expect(200).body,
        expected
    );
    assert_eq!(rt.put_routes(json!([])).await.expect(200).body, json!([]));
}

#[tokio::test]
async fn one_active_agent_per_stage() {
    let rt = Runtime::start(Options {
        routed: true,
        ..Options::default()
    })
    .await;
    let org = rt.org();
    let second = rt
        .app
        .post(
            &format!("/v1/orgs/{org}/agents"),
            rt.users.admin,
            json!({"name": "Boris", "model": "gpt-4o-mini", "status": "active"}),
        )
        .await
        .expect(201)
        .body;
    let second_routes = format!(
        "/v1/orgs/{org}/agents/{}/routes",
        second["id"].as_str().unwrap()
    );
    // The same stage, or every stage of the pipeline: taken by the first agent.
    for routes in [
        json!([{"connection_id": rt.connection, "pipeline_id": PIPELINE, "stage_ids": [STAGE]}]),
        json!([{"connection_id": rt.connection, "pipeline_id": PIPELINE, "stage_ids": "all"}]),
    ] {
        let refused = rt
            .app
            .put(&second_routes, rt.users.admin, routes)
            .await
            .expect_problem(409, "conflict");
        assert!(
            refused.body["detail"].as_str().unwrap().contains("Anna"),
            "{:?}",
            refused.body
        );
    }
    // Another stage is free; a draft agent may share a stage, but not become active.
    rt.app
        .put(
            &second_routes,
            rt.users.admin,
            json!([{"connection_id": rt.connection, "pipeline_id": PIPELINE, "stage_ids": [OTHER_STAGE]}]),
        )
        .await
        .expect(200);
    let status = format!(
        "/v1/orgs/{org}/agents/{}/status",
        second["id"].as_str().unwrap()
    );
    rt.app
        .post(&status, rt.users.admin, json!({"status": "draft"}))
        .await
        .expect(200);
    rt.app
        .put(
            &second_routes,
            rt.users.admin,
            json!([{"connection_id": rt.connection, "pipeline_id": PIPELINE, "stage_ids": [STAGE]}]),
        )
        .await
        .expect(200);
    rt.app
        .post(&status, rt.users.admin, json!({"status": "active"}))
        .await
        .expect_problem(409, "conflict");
    rt.app
        .patch(
            &format!("/v1/orgs/{org}/agents/{}", second["id"].as_str().unwrap()),
            rt.users.admin,
            json!({"status": "active"}),
        )
        .await
        .expect_problem(409, "conflict");
    let still = rt
        .app
        .get(
            &format!("/v1/orgs/{org}/agents/{}", second["id"].as_str().unwrap()),
            rt.users.admin,
        )
        .await
        .expect(200)
        .body;
    assert_eq!(
        still["status"], "draft",
        "the refused change was rolled back"
    );
}

#[tokio::test]
async fn runtime_fields_are_stored_and_checked() {
    let rt = Runtime::start(Options::default()).await;
    let path = format!("/v1/orgs/{}/agents/{}", rt.org(), rt.agent_id());
    assert_eq!(rt.agent["response_delay_secs"], 0);
    assert_eq!(rt.agent["working_hours"], Value::Null);
    assert_eq!(rt.agent["handoff_keywords"], json!([]));
    let hours = json!({"timezone": "Asia/Tokyo", "days": {"sat": [["10:00", "14:00"]]}});
    let updated = rt
        .app
        .patch(
            &path,
            rt.users.admin,
            json!({
                "working_hours": hours,
                "response_delay_secs": 30,
                "off_hours_reply": "Closed.",
                "handoff_keywords": [" manager "],
                "max_turns": 10,
            }),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(updated["working_hours"]["timezone"], "Asia/Tokyo");
    assert_eq!(updated["response_delay_secs"], 30);
    assert_eq!(updated["off_hours_reply"], "Closed.");
    assert_eq!(updated["handoff_keywords"], json!(["manager"]));
    assert_eq!(updated["max_turns"], 10);
    for (bad, field) in [
        (
            json!({"working_hours": {"timezone": "Mars/Olympus", "days": {}}}),
            "working_hours.timezone",
        ),
        (
            json!({"working_hours": {"timezone": "UTC", "days": {"mon": [["18:00", "09:00"]]}}}),
            "working_hours.days.mon[0]",
        ),
        (json!({"response_delay_secs": 3601}), "response_delay_secs"),
        (json!({"max_turns": 0}), "max_turns"),
        (json!({"off_hours_reply": ""}), "off_hours_reply"),
        (json!({"handoff_keywords": [""]}), "handoff_keywords"),
    ] {
        let refused = rt
            .app
            .patch(&path, rt.users.admin, bad.clone())
            .await
            .expect_problem(422, "validation_failed");
        assert!(
            refused.error_fields().iter().any(|f| f.starts_with(field)),
            "{bad}: {:?}",
            refused.body
        );
    }
    // `null` clears what may be empty.
    let cleared = rt
        .app
        .patch(
            &path,
            rt.users.admin,
            json!({"working_hours": null, "off_hours_reply": null, "max_turns": null}),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(cleared["working_hours"], Value::Null);
    assert_eq!(cleared["max_turns"], Value::Null);
}
