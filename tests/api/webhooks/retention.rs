use super::*;

#[tokio::test]
async fn retention_deletes_old_deliveries_their_events_and_old_finished_jobs() {
    let h = Hooked::start(
        true,
        &[
            ("RETENTION_WEBHOOK_DAYS", "30"),
            ("RETENTION_JOBS_DAYS", "7"),
        ],
    )
    .await;
    h.send_ok(lead_added(LEAD_ID), "accepted").await;
    h.send_ok(lead_added(LEAD_ID + 1), "accepted").await;
    h.wait_events("", 2).await;
    h.wait_webhook_jobs(2).await;
    let mut db = h.app.admin_db().await;
    // One delivery 31 days old, and the job of the other finished 8 days ago.
    sqlx::query(
        "UPDATE webhook_events SET received_at = now() - interval '31 days'
         WHERE id = (SELECT delivery_id FROM webhook_events WHERE kind = 'event' AND entity_id = $1)",
    )
    .bind(LEAD_ID)
    .execute(&mut db)
    .await
    .unwrap();
    sqlx::query(
        "UPDATE jobs SET finished_at = now() - interval '8 days'
         WHERE id = (SELECT id FROM jobs WHERE type = 'kommo:webhook' ORDER BY created_at DESC LIMIT 1)",
    )
    .execute(&mut db)
    .await
    .unwrap();
    let started = Instant::now();
    loop {
        let (events, deliveries, jobs): (i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM webhook_events WHERE kind = 'event'),
                    (SELECT count(*) FROM webhook_events WHERE kind = 'delivery'),
                    (SELECT count(*) FROM jobs WHERE type = 'kommo:webhook')",
        )
        .fetch_one(&mut db)
        .await
        .unwrap();
        if (events, deliveries, jobs) == (1, 1, 1) {
            break;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "retention left {events} events, {deliveries} deliveries, {jobs} jobs"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // What is left is the newer delivery's event.
    let listed = h.wait_events("", 1).await;
    assert_eq!(listed[0]["entity_id"], LEAD_ID + 1);
}

#[tokio::test]
async fn retention_of_zero_days_keeps_everything() {
    let h = Hooked::start(
        true,
        &[
            ("RETENTION_WEBHOOK_DAYS", "0"),
            ("RETENTION_JOBS_DAYS", "0"),
        ],
    )
    .await;
    h.send_ok(lead_added(LEAD_ID), "accepted").await;
    h.wait_webhook_jobs(1).await;
    let mut db = h.app.admin_db().await;
    sqlx::query("UPDATE webhook_events SET received_at = now() - interval '3650 days'")
        .execute(&mut db)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE jobs SET finished_at = now() - interval '3650 days' WHERE finished_at IS NOT NULL",
    )
    .execute(&mut db)
    .await
    .unwrap();
    let count_jobs = "SELECT count(*) FROM jobs WHERE finished_at < now() - interval '3000 days'";
    let before: i64 = sqlx::query_scalar(count_jobs)
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert!(before >= 1);
    // Several scheduler ticks (JOB_HEARTBEAT_SECS=1 in these apps).
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(h.deliveries().await, 1);
    let after: i64 = sqlx::query_scalar(count_jobs)
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(after, before);
}

// ---------------------------------------------------------------------------------------
// 6. Content types and sizes
// ---------------------------------------------------------------------------------------
