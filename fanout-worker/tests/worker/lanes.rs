//! The two lanes in a worker, on Redis Streams: a direct message published while a paced broadcast is
//! being delivered overtakes it (the order of the calls the gateway received says so, not a clock), the
//! broadcast still finishes with every recipient once, its chunks travel on the bulk lane, and each
//! lane's receipts are counted. The control puts the same broadcast on the interactive lane, as on one
//! queue: the direct message then waits behind its queued chunks. The SQS form is in `sqs.rs`.

use crate::support::{Env, eventually, metric};
use common::job::{Lane, Target};
use serde_json::json;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);

/// A paced broadcast to 1,000 on `broadcast_lane`, and a direct message on the interactive lane once
/// 100 broadcast calls went out. Returns the broadcast calls before the publish and before the direct
/// message's call, after checking the broadcast finished with everyone once and each lane's receipts.
async fn direct_message_during_broadcast(broadcast_lane: Lane) -> (usize, usize) {
    let env = Env::start().await;
    let ids = env.register("b", 1000, "everyone", "bea").await;
    // 500 calls/s: the broadcast takes about 2 s, with its chunks queued far ahead of what is being
    // delivered.
    let worker = env
        .worker(&[
            "--account-rate-per-sec=500",
            "--account-burst=20",
            "--rate-headroom-percent=0",
            "--chunk-size=50",
            "--max-in-flight=16",
            "--max-jobs-in-hand=4",
        ])
        .await;
    let broadcast = env
        .publish_on(broadcast_lane, Target::All, json!({"kind": "broadcast"}))
        .await;
    eventually(LONG, "the broadcast under way", || async {
        env.gateway.count(200) >= 100
    })
    .await;
    let published_after = env.gateway.count(200);
    let direct_to = ids[999].clone();
    env.publish_on(
        Lane::Interactive,
        Target::Connections {
            ids: vec![direct_to.clone()],
        },
        json!({"kind": "direct"}),
    )
    .await;
    let is_direct = |c: &crate::support::gateway::Call| {
        c.status < 300 && c.connection_id == direct_to && c.body.as_ref() == br#"{"kind":"direct"}"#
    };
    eventually(LONG, "the direct message delivered", || async {
        env.gateway.calls().iter().any(is_direct)
    })
    .await;
    let calls = env.gateway.calls();
    let at = calls.iter().position(is_direct).unwrap();
    let broadcast_before = calls[..at].iter().filter(|c| c.status < 300).count();
    eprintln!(
        "broadcast on {broadcast_lane:?}: direct message published after {published_after} broadcast calls, delivered after {broadcast_before} of 1000"
    );
    // Bulk is not starved: the broadcast finishes, everyone once.
    env.finished(&broadcast.id, LONG).await;
    let delivered = env.gateway.delivered();
    for id in &ids {
        let broadcasts = delivered[id]
            .iter()
            .filter(|b| b.as_ref() == br#"{"kind":"broadcast"}"#)
            .count();
        assert_eq!(broadcasts, 1, "{id}");
    }
    // The everyone job and its chunks (20 or more: a checkpoint may cut one) on the broadcast's lane.
    let received = |lane: &str| {
        metric(
            &worker,
            "fanout_lane_jobs_received_total",
            &[("lane", lane)],
        )
    };
    let chunks = metric(&worker, "fanout_chunks_planned_total", &[]);
    assert!(chunks >= 20.0, "{chunks} chunks");
    match broadcast_lane {
        Lane::Bulk => {
            assert_eq!(received("interactive"), 1.0);
            assert_eq!(received("bulk"), 1.0 + chunks);
        }
        Lane::Interactive => {
            assert_eq!(received("interactive"), 2.0 + chunks);
            assert_eq!(received("bulk"), 0.0);
        }
    }
    worker.shutdown().await;
    (published_after, broadcast_before)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_message_published_during_a_broadcast_overtakes_it() {
    let (published_after, broadcast_before) = direct_message_during_broadcast(Lane::Bulk).await;
    // Between its publish and its delivery only the calls already in flight or holding tokens went out.
    assert!(
        broadcast_before < published_after + 150,
        "the direct message went out after {broadcast_before} broadcast calls (published after {published_after})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_one_lane_the_same_direct_message_waits_behind_the_broadcasts_chunks() {
    // The control: the broadcast on the interactive lane too, as on a single queue.
    let (_, broadcast_before) = direct_message_during_broadcast(Lane::Interactive).await;
    assert!(
        broadcast_before > 500,
        "behind the queued chunks, the direct message went out after {broadcast_before} broadcast calls"
    );
}
