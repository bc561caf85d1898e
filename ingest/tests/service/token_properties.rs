//! Property tests (proptest) for connect tokens against a real redis-server: whatever the subject and
//! channel list, a minted token is consumed exactly once with the claims it was minted with, Redis holds
//! only its hash, and any other string consumes nothing; an empty or over-long string is refused without
//! asking Redis.

use crate::support::Ingest;
use common::names::{ChannelName, Subject};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use std::time::Duration;

#[test]
fn tokens_are_single_use_and_stored_only_as_hashes() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ingest = rt.block_on(Ingest::start(&[]));
    let strategy = (
        "[!-z|~]{1,40}",
        prop::option::of(prop::collection::vec("[A-Za-z0-9_-]{1,20}", 0..5)),
        "[0-9a-f]{0,80}",
    );
    let mut runner = TestRunner::new(Config::with_cases(128));
    runner
        .run(&strategy, |(subject, channels, other)| {
            let subject = Subject::parse(&subject).unwrap();
            let channels: Option<Vec<ChannelName>> = channels.map(|list| {
                list.iter()
                    .map(|c| ChannelName::parse(c).unwrap())
                    .collect()
            });
            rt.block_on(async {
                let state = &ingest.state;
                let token = ingest::tokens::issue(
                    state,
                    &subject,
                    channels.clone(),
                    7,
                    Duration::from_secs(60),
                )
                .await
                .unwrap();
                prop_assert_eq!(token.len(), 64);
                let stored: Option<String> = redis::cmd("GET")
                    .arg(state.keys.token(&token))
                    .query_async(&mut ingest.redis().await)
                    .await
                    .unwrap();
                let stored = stored.expect("stored under the hash");
                prop_assert!(!stored.contains(&token));
                if other != token {
                    prop_assert!(
                        ingest::tokens::consume(state, &other)
                            .await
                            .unwrap()
                            .is_none()
                    );
                }
                let claims = ingest::tokens::consume(state, &token).await.unwrap();
                let claims = claims.expect("the first use succeeds");
                prop_assert_eq!(claims.sub.as_str(), subject.as_str());
                prop_assert_eq!(claims.generation, 7);
                prop_assert_eq!(
                    claims.ch,
                    channels.map(|c| c.iter().map(|n| n.as_str().to_owned()).collect())
                );
                prop_assert!(
                    ingest::tokens::consume(state, &token)
                        .await
                        .unwrap()
                        .is_none()
                );
                Ok(())
            })
        })
        .unwrap();
}

/// Resets the command statistics of the Redis behind `ingest`, for [`getdels`].
async fn reset_stats(ingest: &Ingest) {
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut ingest.redis().await)
        .await
        .unwrap();
}

/// How many `GETDEL`s the Redis behind `ingest` has run since its statistics were reset.
async fn getdels(ingest: &Ingest) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut ingest.redis().await)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_getdel:calls="))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

#[tokio::test]
async fn an_empty_or_over_long_token_is_refused_without_a_redis_round_trip() {
    let ingest = Ingest::start(&[]).await;
    let state = &ingest.state;
    reset_stats(&ingest).await;
    for refused in [String::new(), "a".repeat(257), "a".repeat(10_000)] {
        let claims = ingest::tokens::consume(state, &refused).await.unwrap();
        assert!(claims.is_none(), "{} characters", refused.len());
    }
    assert_eq!(getdels(&ingest).await, 0, "refused before Redis is asked");
    // 256 characters is the longest string still looked up (and, being unknown, consumes nothing).
    let longest = "a".repeat(256);
    assert!(
        ingest::tokens::consume(state, &longest)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(getdels(&ingest).await, 1);
}

/// `$connect`'s single-node script counts the IP's attempt and spends the token in one call; an empty
/// or over-long token is not looked up there either (the attempt is still counted).
#[tokio::test]
async fn a_connect_with_an_empty_or_over_long_token_looks_nothing_up() {
    let ingest = Ingest::start(&[]).await;
    let state = &ingest.state;
    reset_stats(&ingest).await;
    for refused in [String::new(), "a".repeat(257), "a".repeat(10_000)] {
        let (within, claims) =
            ingest::tokens::consume_within_limit(state, Some("192.0.2.1"), 100, Some(&refused))
                .await
                .unwrap();
        assert!(within, "{} characters", refused.len());
        assert!(claims.is_none(), "{} characters", refused.len());
    }
    assert_eq!(getdels(&ingest).await, 0, "no token looked up");
    let attempts: u64 = redis::cmd("GET")
        .arg(state.keys.rate_limit("ip", "192.0.2.1"))
        .query_async(&mut ingest.redis().await)
        .await
        .unwrap();
    assert_eq!(attempts, 3, "every attempt counted");
    // 256 characters is the longest string still looked up.
    let longest = "a".repeat(256);
    let (within, claims) =
        ingest::tokens::consume_within_limit(state, Some("192.0.2.1"), 100, Some(&longest))
            .await
            .unwrap();
    assert!(within && claims.is_none());
    assert_eq!(getdels(&ingest).await, 1);
}
