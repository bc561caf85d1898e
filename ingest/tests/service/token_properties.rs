//! Property tests (proptest) for connect tokens against a real redis-server: whatever the subject and
//! channel list, a minted token is consumed exactly once with the claims it was minted with, Redis holds
//! only its hash, and any other string consumes nothing.

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
