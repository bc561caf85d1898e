//! Ingest on a three-node Redis Cluster: connect, messages, publishing and disconnect work when the
//! state store and the Redis Streams queue are a cluster, so no operation spans slots where it must not, and
//! `$connect`'s checks (taken in steps there) refuse what they refuse on a single node.

use crate::support::{Ingest, connection, payload};
use common::keys::Keyspace;
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn the_whole_callback_flow_works_on_redis_cluster() {
    let ingest = Ingest::start_on_cluster(&["--chat-channel=*"]).await;
    assert!(ingest.state.redis.is_cluster());
    ingest.join("cl1", "alice", "general").await;
    ingest.join("cl2", "bob", "general").await;
    let (status, _) = ingest
        .message(
            "cl1",
            json!({"action": "change_channel", "channel": "support"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        ingest
            .smembers(&Keyspace::default().channel("support"))
            .await,
        ["cl1"]
    );
    assert_eq!(
        ingest
            .smembers(&Keyspace::default().channel("general"))
            .await,
        ["cl2"]
    );
    let (status, _) = ingest
        .message("cl2", json!({"action": "chat_message", "message": "hi"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = ingest
        .message("cl2", json!({"action": "fetch_history"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let r = ingest
        .api(Method::POST, "/v1/broadcast")
        .json(&json!({"type": "system"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = ingest
        .api(Method::GET, "/v1/channels/general")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["connections"],
        1
    );
    let kinds: Vec<String> = ingest
        .jobs()
        .await
        .iter()
        .map(|j| payload(j)["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        kinds,
        ["channel_changed", "chat_message", "history", "system"]
    );
    assert_eq!(
        ingest
            .callback("disconnect", "cl1")
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert!(
        ingest
            .smembers(&Keyspace::default().channel("support"))
            .await
            .is_empty()
    );
    assert!(
        ingest
            .smembers(&Keyspace::default().subject("alice"))
            .await
            .is_empty()
    );
    let text = ingest.metrics_text().await;
    assert!(text.contains("fanout_live_connections 1"), "{text}");
}

/// The node (its port) that holds `key`, read from the cluster's slot map.
async fn node_of(seed: &mut redis::aio::MultiplexedConnection, key: &str) -> i64 {
    let slot: i64 = redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query_async(seed)
        .await
        .unwrap();
    let ranges: Vec<redis::Value> = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(seed)
        .await
        .unwrap();
    for range in ranges {
        let redis::Value::Array(parts) = range else {
            continue;
        };
        let int = |v: &redis::Value| match v {
            redis::Value::Int(n) => *n,
            other => panic!("not an integer: {other:?}"),
        };
        let (start, end) = (int(&parts[0]), int(&parts[1]));
        if (start..=end).contains(&slot) {
            let redis::Value::Array(primary) = &parts[2] else {
                panic!("no primary for slots {start}-{end}");
            };
            return int(&primary[1]);
        }
    }
    panic!("slot {slot} has no node");
}

#[tokio::test]
async fn a_connection_record_is_acknowledged_before_any_set_names_it() {
    // On a cluster the record and the sets live on different nodes. If the sets were written first (or
    // at the same time), a planner could find the id with no record and drop a live connection. Pause
    // writes on the record's node: while it is paused, no set may name the connection.
    let ingest = Ingest::start_on_cluster(&[]).await;
    let cluster = ingest.cluster.as_ref().unwrap();
    let keys = Keyspace::default();
    let mut seed = redis::Client::open(cluster.node_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let channel_node = node_of(&mut seed, &keys.channel("general")).await;
    let mut id = String::new();
    let mut record_node = channel_node;
    for i in 0..100 {
        id = format!("order{i}");
        record_node = node_of(&mut seed, &keys.connection(&id)).await;
        if record_node != channel_node {
            break;
        }
    }
    assert_ne!(record_node, channel_node, "no id found on another node");
    let conn = connection(&id, "general", None);
    let mut paused = redis::Client::open(format!("redis://127.0.0.1:{record_node}/"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(700)
        .arg("WRITE")
        .query_async(&mut paused)
        .await
        .unwrap();
    let state = ingest.state.clone();
    let register =
        tokio::spawn(async move { ingest::membership::register(&state, &conn).await.unwrap() });
    // Readers of their own on each node (a shared connection would queue behind the paused write).
    let node = |port: i64| async move {
        redis::Client::open(format!("redis://127.0.0.1:{port}/"))
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    };
    let (mut sets, mut records) = (node(channel_node).await, node(record_node).await);
    let started = std::time::Instant::now();
    while started.elapsed() < std::time::Duration::from_millis(500) {
        let member: bool = redis::cmd("SISMEMBER")
            .arg(keys.channel("general"))
            .arg(&id)
            .query_async(&mut sets)
            .await
            .unwrap();
        let record: bool = redis::cmd("EXISTS")
            .arg(keys.connection(&id))
            .query_async(&mut records)
            .await
            .unwrap();
        assert!(
            record || !member,
            "the channel names {id} before its record exists"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    register.await.unwrap();
    assert_eq!(
        ingest.smembers(&keys.channel("general")).await,
        [id.clone()]
    );
}

/// `$connect`'s checks on a cluster, where the IP counter, the token and the subject's keys are in
/// different slots and are asked in steps: the per-IP limit (an attempt over it spends no token), the
/// per-subject limit, a token minted before its subject was revoked, and a channel the token does not
/// allow, each refused with its own error and nothing registered.
#[tokio::test]
async fn connect_checks_hold_on_redis_cluster() {
    let ingest = Ingest::start_on_cluster(&["--connect-limit-per-minute=2"]).await;
    let keys = Keyspace::default();
    let connect = |id: &'static str, ip: &'static str, query: String| {
        let ingest = &ingest;
        async move {
            let r = ingest
                .callback(&format!("connect?{query}"), id)
                .headers(crate::support::set("X-Ws-Source-Ip", ip))
                .send()
                .await
                .unwrap();
            let status = r.status();
            let code = r.json::<serde_json::Value>().await.unwrap_or_default()["error"]["code"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            (status, code)
        }
    };
    let ok = (StatusCode::OK, String::new());
    let refused = |status: StatusCode, code: &str| (status, code.to_owned());

    // Per IP: two attempts within the limit, the third refused before its token is looked at.
    let token = ingest.token("alice", None).await;
    assert_eq!(
        connect(
            "a1",
            "192.0.2.1",
            format!("channel=general&ws_token={token}")
        )
        .await,
        ok
    );
    assert_eq!(
        connect("a2", "192.0.2.1", "channel=general".to_owned()).await,
        refused(StatusCode::BAD_REQUEST, "invalid_or_expired_token")
    );
    let unspent = ingest.token("alice", None).await;
    let query = format!("channel=general&ws_token={unspent}");
    assert_eq!(
        connect("a3", "192.0.2.1", query.clone()).await,
        refused(StatusCode::BAD_REQUEST, "too_many_connection_attempts")
    );
    // The token survived the refusal: from another address it connects.
    assert_eq!(connect("a3", "192.0.2.2", query).await, ok);
    assert_eq!(ingest.smembers(&keys.subject("alice")).await, ["a1", "a3"]);

    // Per subject, across addresses: alice has used her two connects.
    let token = ingest.token("alice", None).await;
    assert_eq!(
        connect(
            "a4",
            "192.0.2.3",
            format!("channel=general&ws_token={token}")
        )
        .await,
        refused(StatusCode::BAD_REQUEST, "too_many_connection_attempts")
    );

    // A token minted before its subject was revoked.
    let old = ingest.token("bob", None).await;
    let r = ingest
        .api(Method::POST, "/v1/users/bob/revoke")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(
        connect("b1", "192.0.2.4", format!("channel=general&ws_token={old}")).await,
        refused(StatusCode::BAD_REQUEST, "invalid_or_expired_token")
    );

    // A channel the token does not allow.
    let token = ingest.token("carol", Some(&["room-1"])).await;
    assert_eq!(
        connect(
            "c1",
            "192.0.2.5",
            format!("channel=general&ws_token={token}")
        )
        .await,
        refused(StatusCode::FORBIDDEN, "permission_denied")
    );
    let mut redis = ingest.redis().await;
    for refused in ["a2", "a4", "b1", "c1"] {
        let record: bool = redis::cmd("EXISTS")
            .arg(keys.connection(refused))
            .query_async(&mut redis)
            .await
            .unwrap();
        assert!(!record, "{refused} has no record");
    }
    assert_eq!(
        ingest.smembers(&keys.channel("general")).await,
        ["a1", "a3"]
    );
    assert!(ingest.smembers(&keys.subject("bob")).await.is_empty());
    assert!(ingest.smembers(&keys.subject("carol")).await.is_empty());
}

/// `register` answers what joining did on a cluster (where its writes are steps, not one script) as on a
/// single node: the first time added, the channel occupied and the member in presence; again, nothing.
#[tokio::test]
async fn registering_twice_answers_the_same_on_a_cluster_as_on_one_node() {
    use ingest::membership::{Joined, register};
    let conn = connection("r1", "room", Some("ada"));
    let first = Joined {
        added: true,
        occupied: true,
        presence: true,
    };
    for ingest in [
        Ingest::start(&["--presence-channel=room"]).await,
        Ingest::start_on_cluster(&["--presence-channel=room"]).await,
    ] {
        let store = if ingest.state.redis.is_cluster() {
            "cluster"
        } else {
            "one node"
        };
        assert_eq!(
            register(&ingest.state, &conn).await.unwrap(),
            first,
            "{store}"
        );
        assert_eq!(
            register(&ingest.state, &conn).await.unwrap(),
            Joined::default(),
            "{store}: already registered"
        );
        assert_eq!(
            ingest.smembers(&Keyspace::default().channel("room")).await,
            ["r1"],
            "{store}"
        );
    }
}
