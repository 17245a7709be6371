use super::*;

#[tokio::test]
async fn wrong_token_unknown_connection_and_malformed_urls_are_the_same_404() {
    let h = Hooked::start(false, &[]).await;
    let body = lead_added(LEAD_ID);
    let wrong = forged_token();

    let wrong_token = post_webhook(
        &h.app,
        &format!("/v1/kommo/webhooks/{}/{wrong}", h.connection),
        Some(FORM),
        body.clone(),
        &[],
    )
    .await
    .expect_problem(404, "not_found");
    assert_secret_absent(&wrong_token, &wrong);
    assert_secret_absent(&wrong_token, &h.token);

    let unknown = post_webhook(
        &h.app,
        &format!("/v1/kommo/webhooks/{}/{}", Uuid::now_v7(), h.token),
        Some(FORM),
        body.clone(),
        &[],
    )
    .await
    .expect_problem(404, "not_found");
    assert_secret_absent(&unknown, &h.token);
    assert_eq!(
        without_request_id(&wrong_token.body),
        without_request_id(&unknown.body),
        "a wrong token and an unknown connection must not be told apart"
    );
    assert_ne!(wrong_token.body["request_id"], unknown.body["request_id"]);
    // Nor by their headers (beyond the request id and the date).
    let header_names = |r: &Response| {
        let mut names: Vec<(String, String)> = r
            .headers
            .iter()
            .filter(|(n, _)| !matches!(n.as_str(), "x-request-id" | "date"))
            .map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
            .collect();
        names.sort();
        names
    };
    assert_eq!(header_names(&wrong_token), header_names(&unknown));

    // The token of one connection does not open another one's URL, and a prefix or an
    // extension of the right token is wrong too.
    for token in [
        &h.token[..h.token.len() - 1],
        &format!("{}A", h.token),
        &h.token.to_uppercase(),
    ] {
        let r = post_webhook(
            &h.app,
            &format!("/v1/kommo/webhooks/{}/{token}", h.connection),
            Some(FORM),
            body.clone(),
            &[],
        )
        .await
        .expect_problem(404, "not_found");
        assert_eq!(
            without_request_id(&r.body),
            without_request_id(&unknown.body)
        );
    }

    let not_uuid = post_webhook(
        &h.app,
        &format!("/v1/kommo/webhooks/not-a-uuid/{}", h.token),
        Some(FORM),
        body.clone(),
        &[],
    )
    .await
    .expect_problem(404, "not_found");
    assert_secret_absent(&not_uuid, &h.token);
    assert_eq!(
        without_request_id(&not_uuid.body),
        without_request_id(&unknown.body)
    );

    // Without the token segment there is no such route at all.
    for path in [
        format!("/v1/kommo/webhooks/{}", h.connection),
        format!("/v1/kommo/webhooks/{}/", h.connection),
    ] {
        let r = post_webhook(&h.app, &path, Some(FORM), body.clone(), &[])
            .await
            .expect_problem(404, "not_found");
        assert_eq!(
            without_request_id(&r.body),
            without_request_id(&unknown.body)
        );
    }

    assert_eq!(h.deliveries().await, 0, "nothing stored for a bad URL");
    // The right URL works.
    h.send_ok(body, "accepted").await;
    assert_eq!(h.deliveries().await, 1);
}

// ---------------------------------------------------------------------------------------
// 5. The account check
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_body_from_another_kommo_account_is_refused_and_not_stored() {
    let h = Hooked::start(true, &[]).await;
    let r = h
        .send(FORM, lead_added_with(LEAD_ID, 29_085_955, "Deal #1"))
        .await
        .expect_problem(422, "validation_failed");
    assert_eq!(r.error_fields(), vec!["account[id]"], "{}", r.text);
    assert_secret_absent(&r, &h.token);
    assert_eq!(h.deliveries().await, 0);

    // The same lead from the right account is accepted (the refusal was not remembered
    // as a duplicate either).
    h.send_ok(lead_added(LEAD_ID), "accepted").await;
    let events = h.wait_events("", 1).await;
    assert_eq!(events[0]["entity_id"], LEAD_ID);
    assert_eq!(h.deliveries().await, 1);
    let jobs = h.wait_webhook_jobs(1).await;
    assert_eq!(jobs[0]["status"], "succeeded");
}

#[tokio::test]
async fn an_account_id_that_is_not_exactly_ours_is_refused() {
    let h = Hooked::start(false, &[]).await;
    let lead = format!("leads[add][0][id]={LEAD_ID}");
    for account in [
        format!("account[id]={ACCOUNT_ID}.0"),
        "account[id]=1e3".to_string(),
        format!("account[id][]={ACCOUNT_ID}"),
        format!("account[id]={ACCOUNT_ID}x"),
        format!("account[id]=%20{ACCOUNT_ID}"),
    ] {
        let r = h
            .send(FORM, format!("{lead}&{account}"))
            .await
            .expect_problem(422, "validation_failed");
        assert_eq!(
            r.error_fields(),
            vec!["account[id]"],
            "{account}: {}",
            r.text
        );
    }
    for body in [
        json!({"leads": {"add": [{"id": LEAD_ID}]}, "account": {"id": ACCOUNT_ID as f64}}),
        json!({"leads": {"add": [{"id": LEAD_ID}]}, "account": {"id": format!("{ACCOUNT_ID}x")}}),
    ] {
        h.send(JSON, body.to_string())
            .await
            .expect_problem(422, "validation_failed");
    }
    assert_eq!(h.deliveries().await, 0);
    h.send_ok(format!("{lead}&account[id]={ACCOUNT_ID}"), "accepted")
        .await;
}

// ---------------------------------------------------------------------------------------
// 5b. Hostile bodies: nesting, counts, fan-out
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn an_address_outside_the_allow_list_gets_403() {
    let h = Hooked::start(false, &[("WEBHOOK_ALLOWED_CIDRS", "10.0.0.0/8")]).await;
    let r = h
        .send(FORM, lead_added(LEAD_ID))
        .await
        .expect_problem(403, "forbidden");
    assert_secret_absent(&r, &h.token);
    assert_eq!(h.deliveries().await, 0);
}

#[tokio::test]
async fn an_address_inside_the_allow_list_is_accepted() {
    let h = Hooked::start(false, &[("WEBHOOK_ALLOWED_CIDRS", "127.0.0.1/32")]).await;
    h.send_ok(lead_added(LEAD_ID), "accepted").await;
    assert_eq!(h.deliveries().await, 1);
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_rightmost_untrusted_hop_is_checked() {
    let h = Hooked::start(
        false,
        &[
            ("TRUSTED_PROXIES", "127.0.0.1/32"),
            ("WEBHOOK_ALLOWED_CIDRS", "198.51.100.0/24"),
        ],
    )
    .await;
    let send = |lead: i64, xff: Option<&'static str>| {
        let headers: Vec<(&str, &str)> = xff.map(|v| ("x-forwarded-for", v)).into_iter().collect();
        let app = &h.app;
        let path = h.path.clone();
        async move { post_webhook(app, &path, Some(FORM), lead_added(lead), &headers).await }
    };

    let r = send(1, Some("198.51.100.7")).await.expect(200);
    assert_eq!(r.body, json!({"status": "accepted"}));
    // The client forged the first hop; our proxy appended the real one, which is allowed.
    let r = send(2, Some("203.0.113.5, 198.51.100.7")).await.expect(200);
    assert_eq!(r.body, json!({"status": "accepted"}));
    // The rightmost untrusted hop is 203.0.113.5, whatever the client claimed before it.
    send(3, Some("198.51.100.7, 203.0.113.5"))
        .await
        .expect_problem(403, "forbidden");
    // No header: the (trusted) peer itself is the client, and it is not allowed.
    send(4, None).await.expect_problem(403, "forbidden");
    // Garbage in the header: no proxy of ours wrote it.
    send(5, Some("not-an-ip"))
        .await
        .expect_problem(403, "forbidden");
    assert_eq!(h.deliveries().await, 2);
}

#[tokio::test]
async fn a_forged_forwarded_for_from_an_untrusted_peer_is_ignored() {
    let h = Hooked::start(false, &[("WEBHOOK_ALLOWED_CIDRS", "198.51.100.0/24")]).await;
    let r = post_webhook(
        &h.app,
        &h.path,
        Some(FORM),
        lead_added(LEAD_ID),
        &[("x-forwarded-for", "198.51.100.7")],
    )
    .await
    .expect_problem(403, "forbidden");
    assert_secret_absent(&r, &h.token);
    post_webhook(
        &h.app,
        &h.path,
        Some(FORM),
        lead_added(LEAD_ID),
        &[
            ("x-real-ip", "198.51.100.7"),
            ("forwarded", "for=198.51.100.7"),
        ],
    )
    .await
    .expect_problem(403, "forbidden");
    assert_eq!(h.deliveries().await, 0);
}

// ---------------------------------------------------------------------------------------
// 8. Rate limit per connection
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn rotating_the_secret_retires_the_old_url() {
    let h = Hooked::start(false, &[]).await;
    h.send_ok(lead_added(LEAD_ID), "accepted").await;
    let rotate = format!(
        "/v1/orgs/{}/crm/connections/{}/webhook-secret",
        h.users.org, h.connection
    );

    h.app
        .post(&rotate, h.users.member, json!({}))
        .await
        .expect_problem(403, "forbidden");
    // The member's attempt changed nothing.
    h.send_ok(lead_added(LEAD_ID + 1), "accepted").await;

    let r = h
        .app
        .post(&rotate, h.users.admin, json!({}))
        .await
        .expect(200);
    assert_secret_absent(&r, &h.token);
    let url = r.body["webhook_url"]
        .as_str()
        .unwrap_or_else(|| panic!("a webhook_url: {}", r.text));
    let (new_path, new_token) = split_webhook_url(url, h.connection);
    assert_ne!(new_token, h.token);

    let old = h
        .send(FORM, lead_added(LEAD_ID + 2))
        .await
        .expect_problem(404, "not_found");
    assert_secret_absent(&old, &h.token);
    let r = post_webhook(&h.app, &new_path, Some(FORM), lead_added(LEAD_ID + 2), &[])
        .await
        .expect(200);
    assert_eq!(r.body, json!({"status": "accepted"}));
    assert_secret_absent(&r, &new_token);

    // The owner may rotate too; an unknown connection is 404.
    let r = h
        .app
        .post(&rotate, h.users.owner, json!({}))
        .await
        .expect(200);
    let (_, newest) = split_webhook_url(r.body["webhook_url"].as_str().unwrap(), h.connection);
    assert_ne!(newest, new_token);
    post_webhook(&h.app, &new_path, Some(FORM), lead_added(LEAD_ID + 3), &[])
        .await
        .expect_problem(404, "not_found");
    h.app
        .post(
            &format!(
                "/v1/orgs/{}/crm/connections/{}/webhook-secret",
                h.users.org,
                Uuid::now_v7()
            ),
            h.users.admin,
            json!({}),
        )
        .await
        .expect_problem(404, "not_found");
    assert_eq!(h.deliveries().await, 3);
}

// ---------------------------------------------------------------------------------------
// 10. Bodies that cannot be parsed
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn another_org_cannot_see_the_events() {
    let h = Hooked::start(true, &[]).await;
    h.send_ok(lead_added(LEAD_ID), "accepted").await;
    h.wait_events("", 1).await;

    let stranger = Uuid::now_v7();
    let own_org = h.app.create_org(stranger).await;
    h.app
        .get(&h.events_path(""), stranger)
        .await
        .expect_problem(404, "not_found");
    h.app
        .get(&h.events_path("?type=leads"), stranger)
        .await
        .expect_problem(404, "not_found");
    let own = h
        .app
        .get(&format!("/v1/orgs/{own_org}/webhook-events"), stranger)
        .await
        .expect(200);
    assert_eq!(own.body["data"], json!([]), "{}", own.text);
    assert!(own.body["next_cursor"].is_null());
    // Anonymous: 401.
    h.app
        .send(reqwest::Method::GET, &h.events_path(""), None, None)
        .await
        .expect_problem(401, "unauthorized");

    // A connection of another org (with its own events) does not leak into ours.
    let (other_users, _, other_path, _) = connect(&h.app, &h.fake, "beta.kommo.com").await;
    post_webhook(
        &h.app,
        &other_path,
        Some(FORM),
        contact_updated(CONTACT_ID),
        &[],
    )
    .await
    .expect(200);
    let started = Instant::now();
    loop {
        let theirs = h
            .app
            .get(
                &format!("/v1/orgs/{}/webhook-events", other_users.org),
                other_users.member,
            )
            .await
            .expect(200)
            .body;
        if theirs["data"].as_array().map(Vec::len) == Some(1) {
            assert_eq!(theirs["data"][0]["type"], "contacts");
            break;
        }
        assert!(started.elapsed() < PATIENCE, "{theirs}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ours = h.events("").await;
    assert_eq!(ours["data"].as_array().map(Vec::len), Some(1), "{ours}");
    assert_eq!(ours["data"][0]["type"], "leads");
}

// ---------------------------------------------------------------------------------------
// Slow senders
// ---------------------------------------------------------------------------------------

/// The test's runtime has one thread, so a thread-local subscriber sees the app's
/// handlers and job workers too.
#[tokio::test]
async fn the_token_never_reaches_the_logs() {
    let (logs, _guard) = crate::support::logs::Captured::start();

    let h = Hooked::start(true, &[("RATE_LIMIT_WEBHOOK_PER_MIN", "5")]).await;
    // Other tests' threads may have registered callsites (the access log's among them)
    // while this subscriber was being installed, caching "no interest"; ask again.
    tracing::callsite::rebuild_interest_cache();
    let wrong = forged_token();
    h.send_ok(lead_added(LEAD_ID), "accepted").await;
    h.send_ok(lead_added(LEAD_ID), "duplicate").await;
    h.send_ok("[x]=1", "accepted").await;
    h.send("text/plain", "hello")
        .await
        .expect_problem(415, "unsupported_media_type");
    h.send(FORM, lead_added_with(LEAD_ID, 1, "x"))
        .await
        .expect_problem(422, "validation_failed");
    // Until the connection's budget (5 a minute) is spent, whichever of the requests
    // above counted against it.
    let mut limited = None;
    let mut more = 0;
    for lead in 1..=6 {
        let r = h.send(FORM, lead_added(LEAD_ID + lead)).await;
        if r.status == 429 {
            limited = Some(r);
            break;
        }
        r.expect(200);
        more += 1;
    }
    limited
        .expect("a 429 within 6 more webhooks")
        .expect_problem(429, "rate_limited");
    post_webhook(
        &h.app,
        &format!("/v1/kommo/webhooks/{}/{wrong}", h.connection),
        Some(FORM),
        lead_added(LEAD_ID),
        &[],
    )
    .await
    .expect_problem(404, "not_found");
    post_webhook(
        &h.app,
        &format!("/v1/kommo/webhooks/not-a-uuid/{wrong}"),
        Some(FORM),
        lead_added(LEAD_ID),
        &[],
    )
    .await
    .expect_problem(404, "not_found");
    // The lead, the unparseable body, and the extra leads.
    h.wait_events("", 2 + more).await;
    h.wait_webhook_jobs(2 + more).await;

    let text = logs.text();
    assert!(
        text.contains("/v1/kommo/webhooks/"),
        "the access log names the route: {text}"
    );
    for secret in [&h.token, &wrong] {
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.contains(secret.as_str()))
            .collect();
        assert!(lines.is_empty(), "the token is in the logs: {lines:#?}");
    }
}
