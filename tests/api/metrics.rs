//! `GET /metrics`, read with a Prometheus text-format parser.

use serde_json::json;

use crate::helpers::*;

async fn scrape_metrics(app: &TestApp) -> prometheus_parse::Scrape {
    let response = reqwest::get(app.url("/metrics")).await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let body = response.text().await.unwrap();
    prometheus_parse::Scrape::parse(body.lines().map(|line| Ok(line.to_owned())))
        .expect("Prometheus text format")
}

/// The value of `name` with `label` (if given), counters, gauges and
/// histogram counts alike.
fn value(scrape: &prometheus_parse::Scrape, name: &str, label: Option<(&str, &str)>) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
        .map(|s| match &s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            prometheus_parse::Value::Histogram(buckets) => buckets.last().map_or(0.0, |b| b.count),
            prometheus_parse::Value::Summary(_) => 0.0,
        })
        .sum()
}

#[tokio::test]
async fn metrics_count_connections_messages_errors_and_commits() {
    let app = spawn_app().await;
    let mut alice = app.connect("alice").await;
    alice.join("doc").await;
    alice
        .send(
            json!({"type": "cursor_move", "document_id": "doc", "cursor": {"line": 1, "column": 2}, "id": 1}),
        )
        .await;
    alice.recv_until("ack").await;
    alice
        .expect_error(json!({"type": "nonsense"}), "unknown_type")
        .await;
    let update = b64::encode(YPeer::new(9).insert(0, "counted"));
    alice
        .send(json!({"type": "sync_update", "document_id": "doc", "update": update, "id": "u"}))
        .await;
    assert_eq!(alice.recv_until("ack").await["id"], "u");

    let scrape = scrape_metrics(&app).await;
    assert_eq!(
        value(&scrape, "tandem_connections", Some(("protocol", "json"))),
        1.0
    );
    assert_eq!(value(&scrape, "tandem_rooms", None), 1.0);
    assert_eq!(
        value(&scrape, "tandem_redis_up", None),
        0.0,
        "no Redis configured"
    );
    // Counters are per process (other tests' gateways count too): at least ours.
    assert!(
        value(
            &scrape,
            "tandem_connections_opened_total",
            Some(("protocol", "json"))
        ) >= 1.0
    );
    assert!(
        value(
            &scrape,
            "tandem_messages_received_total",
            Some(("type", "cursor_move"))
        ) >= 1.0
    );
    assert!(
        value(
            &scrape,
            "tandem_errors_sent_total",
            Some(("code", "unknown_type"))
        ) >= 1.0
    );
    assert!(value(&scrape, "tandem_updates_stored_total", None) >= 1.0);
    assert!(
        value(&scrape, "tandem_commit_seconds", None) >= 1.0,
        "the commit latency histogram"
    );

    let (status, _) = upgrade_status(&app, "not-a-jwt").await;
    assert_eq!(status, 401);
    let refused = scrape_metrics(&app).await;
    assert!(
        value(&refused, "tandem_upgrades_refused_total", Some(("status", "401"))) >= 1.0,
        "a refused upgrade counts against the connection success rate"
    );

    drop(alice);
    eventually("the closed connection is counted", || async {
        let scrape = scrape_metrics(&app).await;
        (value(&scrape, "tandem_connections", Some(("protocol", "json"))) == 0.0
            && value(&scrape, "tandem_connections_closed_total", None) >= 1.0)
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn metrics_count_fan_out_relay_time_presence_rows_compactions_and_sweeps() {
    use sea_orm::{ActiveModelTrait, IntoActiveModel};

    let app = spawn_app_with(&Backend::Sqlite, |config| config.compact_after_updates = 2).await;
    let before = scrape_metrics(&app).await;
    let mut alice = app.connect("alice").await;
    let mut bob = app.connect("bob").await;
    alice.join("doc").await;
    bob.join("doc").await;
    alice
        .send(
            json!({"type": "cursor_move", "document_id": "doc", "cursor": {"line": 1, "column": 2}, "id": "c"}),
        )
        .await;
    alice.recv_until("ack").await;
    bob.recv_until("cursor_move").await;
    let peer = YPeer::new(21);
    for (n, word) in ["one ", "two ", "three "].into_iter().enumerate() {
        let update = b64::encode(peer.insert(0, word));
        alice
            .send(json!({"type": "sync_update", "document_id": "doc", "update": update, "id": n}))
            .await;
        alice.recv_until("ack").await;
    }

    // A session of a process that crashed long ago: the sweep ends it.
    let stale = chrono::Utc::now() - chrono::Duration::hours(1);
    let session_id = uuid::Uuid::now_v7();
    entity::user_sessions::Model {
        id: session_id,
        user_id: "ghost".into(),
        user_name: None,
        connection_id: uuid::Uuid::now_v7(),
        is_active: true,
        user_agent: None,
        ip_address: None,
        device_type: "desktop".into(),
        current_document_id: None,
        instance_id: "crashed".into(),
        created_at: stale,
        last_seen_at: stale,
        disconnected_at: None,
        resumed_count: 0,
    }
    .into_active_model()
    .insert(&app.state.db)
    .await
    .expect("insert a stale session");
    tandem::app::sweep(&app.state).await.expect("sweep");

    let grew = |after: &prometheus_parse::Scrape, name: &str, label: Option<(&str, &str)>| {
        value(after, name, label) - value(&before, name, label)
    };
    let after = eventually("presence rows and a compaction are counted", || async {
        let after = scrape_metrics(&app).await;
        (grew(&after, "tandem_presence_rows_written_total", None) >= 2.0
            && grew(&after, "tandem_compactions_total", Some(("result", "folded"))) >= 1.0)
            .then_some(after)
    })
    .await;
    assert!(
        grew(&after, "tandem_fanout_deliveries_total", None) >= 5.0,
        "bob got alice's cursor and three updates, alice bob's join"
    );
    assert!(
        grew(&after, "tandem_relay_seconds", None) >= 4.0,
        "a relay time per cursor move and update"
    );
    assert!(grew(&after, "tandem_session_rows_written_total", None) >= 2.0);
    assert!(grew(&after, "tandem_sessions_swept_total", Some(("reason", "stale"))) >= 1.0);
    for gauge in [
        "tandem_write_backlog",
        "tandem_send_queue_messages",
        "tandem_send_queue_bytes",
        "tandem_send_queue_deepest_messages",
    ] {
        assert!(
            after.samples.iter().any(|s| s.metric == gauge),
            "the {gauge} gauge"
        );
    }
    drop((alice, bob));
}

/// The alert rules in deploy/ name only series the gateway exports, and
/// every one is there before its first event (a counter at 0), so `rate()`
/// and `increase()` have a series to work on.
#[tokio::test]
async fn every_metric_the_alert_rules_use_is_scraped() {
    let app = spawn_app().await;
    let mut alice = app.connect("alice").await;
    alice.join("doc").await;
    let update = b64::encode(YPeer::new(5).insert(0, "x"));
    alice
        .send(json!({"type": "sync_update", "document_id": "doc", "update": update, "id": "u"}))
        .await;
    alice.recv_until("ack").await;
    let scrape = scrape_metrics(&app).await;
    let rules = include_str!("../../deploy/alerts.yml");
    let mut used: Vec<&str> = rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|token| token.starts_with("tandem_"))
        .map(|token| token.strip_suffix("_bucket").unwrap_or(token))
        .collect();
    used.sort_unstable();
    used.dedup();
    assert!(used.len() >= 10, "the rules use {used:?}");
    for name in used {
        assert!(
            scrape.samples.iter().any(|s| s.metric == name),
            "deploy/alerts.yml uses {name}, which /metrics does not export"
        );
    }
    let sample = |name: &str, label: (&str, &str)| {
        scrape
            .samples
            .iter()
            .any(|s| s.metric == name && s.labels.get(label.0) == Some(label.1))
    };
    assert!(
        sample("tandem_compactions_total", ("result", "failed")),
        "failures at 0 from the start"
    );
    assert!(sample("tandem_sessions_swept_total", ("reason", "dead_instance")));
    assert_eq!(
        scrape.docs.get("tandem_compactions_total").map(String::as_str),
        Some("Document compactions, by result"),
        "series carry HELP text"
    );
    drop(alice);
}
