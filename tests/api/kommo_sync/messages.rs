use super::*;

#[tokio::test]
async fn message_is_posted_as_a_note() {
    let c = Connected::start().await;
    let path = format!("/v1/orgs/{}/kommo/messages", c.users.org);

    let r = c
        .app
        .post(
            &path,
            c.users.admin,
            json!({"deal_id": 42, "channel": "chat", "message": {"body": "Hello"}}),
        )
        .await
        .expect(202);
    assert_eq!(r.body["type"], "kommo:send-message", "{}", r.text);
    assert_eq!(r.body["status"], "queued", "{}", r.text);
    let done = c.finished(&r.body).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["attempts"], 1, "{done}");
    let notes = c.fake.notes(DOMAIN);
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert_eq!(notes[0]["note_type"], "common");
    // The text ends with the job's marker, which a rerun looks for before posting again.
    let marker = format!("\n\n[ref:{}]", done["id"].as_str().unwrap());
    assert_eq!(notes[0]["params"]["text"], format!("Hello{marker}"));
    assert_eq!(notes[0]["entity_id"], 42);
    assert_eq!(done["result"]["note_id"], notes[0]["id"], "{done}");
    assert_eq!(done["result"]["deal_id"], 42, "{done}");
    let posts = c.fake.requests_to(DOMAIN, "/api/v4/leads/42/notes");
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0].method, "POST");

    // Email: an outgoing_email note with the subject (the connection named explicitly).
    let r = c
        .app
        .post(
            &path,
            c.users.admin,
            json!({"connection_id": c.connection, "deal_id": 43, "channel": "email",
                   "message": {"subject": "Your offer", "body": "Hi, here it is."}}),
        )
        .await
        .expect(202);
    let done = c.finished(&r.body).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let notes = c.fake.notes(DOMAIN);
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert_eq!(notes[1]["note_type"], "outgoing_email");
    assert_eq!(notes[1]["params"]["subject"], "Your offer");
    let marker = format!("\n\n[ref:{}]", done["id"].as_str().unwrap());
    assert_eq!(
        notes[1]["params"]["text"],
        format!("Hi, here it is.{marker}")
    );
    assert_eq!(notes[1]["entity_id"], 43);

    // Attachments are listed under the text.
    let r = c
        .app
        .post(
            &path,
            c.users.admin,
            json!({"deal_id": 44, "channel": "chat", "message": {"body": "See the offer",
                   "attachments": [{"url": "https://files.example.com/offer.pdf",
                                    "name": "offer.pdf"}]}}),
        )
        .await
        .expect(202);
    let done = c.finished(&r.body).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let notes = c.fake.notes(DOMAIN);
    assert_eq!(notes.len(), 3, "{notes:?}");
    assert_eq!(notes[2]["note_type"], "common");
    let marker = format!("\n\n[ref:{}]", done["id"].as_str().unwrap());
    assert_eq!(
        notes[2]["params"]["text"],
        format!("See the offer\noffer.pdf: https://files.example.com/offer.pdf{marker}")
    );
    assert_eq!(notes[2]["entity_id"], 44);

    // Refusals: nothing is queued or posted.
    let (other_users, other_connection) = connect(&c.app, &c.fake, "other.kommo.com").await;
    let cases = [
        (
            json!({"deal_id": 42, "channel": "email", "message": {"body": "Hi"}}),
            "message.subject",
        ),
        (
            json!({"deal_id": 42, "channel": "chat", "message": {"body": "Hi"}, "priority": 1}),
            "priority",
        ),
        (
            json!({"deal_id": 42, "channel": "chat", "message": {"body": "Hi", "html": "<b>"}}),
            "message.html",
        ),
        (
            json!({"deal_id": 0, "channel": "chat", "message": {"body": "Hi"}}),
            "deal_id",
        ),
        (
            json!({"deal_id": -5, "channel": "chat", "message": {"body": "Hi"}}),
            "deal_id",
        ),
        (
            json!({"deal_id": 42, "channel": "sms", "message": {"body": "Hi"}}),
            "channel",
        ),
        (
            json!({"deal_id": 42, "channel": "chat", "message": {"body": ""}}),
            "message.body",
        ),
        (
            json!({"deal_id": 42, "channel": "chat", "message": {"body": "Hi",
                   "attachments": [{"url": "ftp://files.example.com/a", "name": "a"}]}}),
            "message.attachments[0].url",
        ),
        (
            json!({"connection_id": other_connection, "deal_id": 42, "channel": "chat",
                   "message": {"body": "Hi"}}),
            "connection_id",
        ),
    ];
    for (body, field) in cases {
        let r = c.app.post(&path, c.users.admin, body.clone()).await;
        let r = r.expect_problem(422, "validation_failed");
        assert!(
            r.error_fields().iter().any(|f| f == field),
            "{body}: expected {field} in {}",
            r.text
        );
    }
    let chat = json!({"deal_id": 42, "channel": "chat", "message": {"body": "Hi"}});
    c.app
        .post(&path, c.users.member, chat.clone())
        .await
        .expect_problem(403, "forbidden");
    c.app
        .post(&path, other_users.owner, chat)
        .await
        .expect_problem(404, "not_found");
    let sent = c
        .app
        .get(
            &format!("/v1/orgs/{}/jobs?type=kommo:send-message", c.users.org),
            c.users.admin,
        )
        .await
        .expect(200)
        .body;
    assert_eq!(sent["data"].as_array().unwrap().len(), 3, "{sent}");
    assert_eq!(c.fake.notes(DOMAIN).len(), 3);
    assert!(c.fake.notes("other.kommo.com").is_empty());
}
