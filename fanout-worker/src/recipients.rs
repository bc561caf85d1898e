//! Recipients: turns connection ids into the Management API endpoint to call, from each connection's
//! record (`conn:{id}` hash: api id, stage, channel, subject, when it connected), read with one pipelined
//! round of `HMGET`s. Records written before the field names were shortened are read too (each field is
//! asked for under both names).
//!
//! An id without a record is stale (the hash expired, or a `$disconnect` removed it while a set still
//! named it): it is not called, and [`crate::gone::drop_stale`] takes it out of the sets it can name. An
//! id whose API id is not configured cannot be routed: that is a configuration error, kept and reported.

use crate::delivery::Endpoint;
use common::gateways::Gateways;
use common::keys::{Keyspace, conn_field as f};
use common::store::Redis;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// A connection to deliver to.
#[derive(Debug, Clone)]
pub struct Recipient {
    pub id: String,
    pub endpoint: Endpoint,
    pub channel: Option<String>,
    pub subject: Option<String>,
    /// When ingest accepted its `$connect` (Unix milliseconds), if the record says.
    pub connected_at_ms: Option<u64>,
}

impl Recipient {
    /// How much longer the connection's `$connect` may still be in flight at `now_ms`, if it connected less
    /// than `grace` ago. API Gateway answers 410 to posts for a connection until its `$connect`
    /// integration has returned, so a 410 in that window does not mean the connection is gone.
    pub fn connecting_for(&self, grace: Duration, now_ms: u64) -> Option<Duration> {
        let ends = self
            .connected_at_ms?
            .saturating_add(u64::try_from(grace.as_millis()).unwrap_or(u64::MAX));
        (ends > now_ms).then(|| Duration::from_millis(ends - now_ms))
    }
}

/// The ids of a job, sorted by what can be done with them.
#[derive(Debug, Default)]
pub struct Resolved {
    pub recipients: Vec<Recipient>,
    /// No record: nothing to call.
    pub stale: Vec<String>,
    /// A record whose API id is not in `FANOUT_API_GATEWAYS`.
    pub unroutable: Vec<String>,
}

/// The Management API endpoint of each configured API, and of its other stages.
#[derive(Debug, Clone)]
pub struct Routes {
    gateways: Gateways,
    default_region: Arc<str>,
    /// API id → stage → endpoint, for the configured stages (looked up by `&str`, without allocating, for
    /// every recipient).
    known: HashMap<String, HashMap<String, Endpoint>>,
}

impl Routes {
    pub fn new(gateways: Gateways, default_region: &str) -> Self {
        let default_region: Arc<str> = Arc::from(default_region);
        let mut known: HashMap<String, HashMap<String, Endpoint>> = HashMap::new();
        for api in gateways.iter() {
            let region = api
                .region
                .as_deref()
                .map_or_else(|| default_region.clone(), Arc::from);
            known.entry(api.api_id.clone()).or_default().insert(
                api.stage.clone(),
                Endpoint {
                    url: Arc::from(api.endpoint.as_str()),
                    region,
                },
            );
        }
        Self {
            gateways,
            default_region,
            known,
        }
    }

    /// The endpoint for a connection of `api_id` on `stage`. An explicit endpoint URL is used as it is; an
    /// AWS endpoint follows the connection's stage when it differs from the configured one.
    pub fn endpoint(&self, api_id: &str, stage: &str) -> Option<Endpoint> {
        if let Some(e) = self.known.get(api_id).and_then(|stages| stages.get(stage)) {
            return Some(e.clone());
        }
        let api = self.gateways.get(api_id)?;
        match &api.region {
            Some(region) if !stage.is_empty() => Some(Endpoint {
                url: Arc::from(format!(
                    "https://{api_id}.execute-api.{region}.amazonaws.com/{stage}"
                )),
                region: Arc::from(region.as_str()),
            }),
            _ => Some(Endpoint {
                url: Arc::from(api.endpoint.as_str()),
                region: api
                    .region
                    .as_deref()
                    .map_or_else(|| self.default_region.clone(), Arc::from),
            }),
        }
    }
}

/// Runs read commands in one round trip: a plain pipeline on a single node; on a cluster, each command to
/// its own node, concurrently.
pub async fn read_many(
    redis: &Redis,
    commands: Vec<redis::Cmd>,
) -> Result<Vec<redis::Value>, redis::RedisError> {
    if commands.is_empty() {
        return Ok(Vec::new());
    }
    if redis.is_cluster() {
        return redis.batch(commands).await;
    }
    let mut pipe = redis::pipe();
    for cmd in commands {
        pipe.add_command(cmd);
    }
    let mut conn = redis.clone();
    pipe.query_async(&mut conn).await
}

/// The record fields a delivery needs, under their names and then under the longer names of records
/// written before those (read until the last such record has expired).
const FIELDS: [&str; 10] = [
    f::API_ID,
    f::STAGE,
    f::CHANNEL,
    f::SUBJECT,
    f::CONNECTED_AT_MS,
    f::legacy::API_ID,
    f::legacy::STAGE,
    f::legacy::CHANNEL,
    f::legacy::SUBJECT,
    f::legacy::CONNECTED_AT_MS,
];

/// Reads the records of `ids`.
pub async fn resolve(
    redis: &Redis,
    keys: &Keyspace,
    routes: &Routes,
    ids: &[String],
) -> Result<Resolved, redis::RedisError> {
    let commands = ids
        .iter()
        .map(|id| {
            // Built in place (`.to_owned()` on the builder's `&mut` would copy every command).
            let mut cmd = redis::cmd("HMGET");
            cmd.arg(keys.connection(id)).arg(&FIELDS);
            cmd
        })
        .collect();
    let values = read_many(redis, commands).await?;
    let mut out = Resolved::default();
    for (id, value) in ids.iter().zip(values) {
        let [api_id, stage, channel, subject, connected_at_ms, old @ ..]: [Option<String>; 10] =
            redis::from_redis_value(value)?;
        // A record written before the field names were shortened has only the older names.
        let [
            old_api_id,
            old_stage,
            old_channel,
            old_subject,
            old_connected_at_ms,
        ] = old;
        let (api_id, stage, channel, subject, connected_at_ms) = (
            api_id.or(old_api_id),
            stage.or(old_stage),
            channel.or(old_channel),
            subject.or(old_subject),
            connected_at_ms.or(old_connected_at_ms),
        );
        let Some(api_id) = api_id else {
            out.stale.push(id.clone());
            continue;
        };
        match routes.endpoint(&api_id, stage.as_deref().unwrap_or_default()) {
            Some(endpoint) => out.recipients.push(Recipient {
                id: id.clone(),
                endpoint,
                channel,
                subject,
                // A value that does not parse counts as unknown: the connection is not treated as young.
                connected_at_ms: connected_at_ms.and_then(|t| t.parse().ok()),
            }),
            None => out.unroutable.push(id.clone()),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_follow_the_configuration() {
        let gateways = Gateways::parse(
            &[
                "abc/prod@eu-west-1".to_owned(),
                "local=http://127.0.0.1:4000/local".to_owned(),
            ],
            "us-east-1",
        )
        .unwrap();
        let routes = Routes::new(gateways, "us-east-1");
        let e = routes.endpoint("abc", "prod").unwrap();
        assert_eq!(
            &*e.url,
            "https://abc.execute-api.eu-west-1.amazonaws.com/prod"
        );
        assert_eq!(&*e.region, "eu-west-1");
        let e = routes.endpoint("abc", "beta").unwrap();
        assert_eq!(
            &*e.url,
            "https://abc.execute-api.eu-west-1.amazonaws.com/beta"
        );
        // A record without a stage: the configured endpoint, not a URL with an empty stage.
        let e = routes.endpoint("abc", "").unwrap();
        assert_eq!(
            &*e.url,
            "https://abc.execute-api.eu-west-1.amazonaws.com/prod"
        );
        let e = routes.endpoint("local", "whatever").unwrap();
        assert_eq!(&*e.url, "http://127.0.0.1:4000/local");
        assert_eq!(&*e.region, "us-east-1");
        assert!(routes.endpoint("nope", "prod").is_none());
    }

    /// A record written before the field names were shortened resolves like a new one; an id without a
    /// record is stale, one whose API id is not configured unroutable.
    #[tokio::test]
    async fn records_with_the_older_field_names_still_resolve() {
        let server = test_support::RedisServer::start();
        let redis = Redis::connect(&server.url()).await.unwrap();
        let keys = Keyspace::default();
        let routes = Routes::new(
            Gateways::parse(&["api1=http://127.0.0.1:9/test".to_owned()], "us-east-1").unwrap(),
            "us-east-1",
        );
        let write = |id: &str, names: [&str; 5], channel: &str, at: &str| {
            redis::cmd("HSET")
                .arg(keys.connection(id))
                .arg(names[0])
                .arg("api1")
                .arg(names[1])
                .arg("test")
                .arg(names[2])
                .arg(channel)
                .arg(names[3])
                .arg("ada")
                .arg(names[4])
                .arg(at)
                .to_owned()
        };
        let new = [
            f::API_ID,
            f::STAGE,
            f::CHANNEL,
            f::SUBJECT,
            f::CONNECTED_AT_MS,
        ];
        let old = [
            f::legacy::API_ID,
            f::legacy::STAGE,
            f::legacy::CHANNEL,
            f::legacy::SUBJECT,
            f::legacy::CONNECTED_AT_MS,
        ];
        // An API id not configured here, under either name: unroutable.
        let elsewhere = |id: &str, name: &str| {
            redis::cmd("HSET")
                .arg(keys.connection(id))
                .arg(name)
                .arg("api2")
                .to_owned()
        };
        redis
            .batch(vec![
                write("n1", new, "room-new", "1000"),
                write("o1", old, "room-old", "2000"),
                elsewhere("x1", f::API_ID),
                elsewhere("x2", f::legacy::API_ID),
            ])
            .await
            .unwrap();
        let ids = ["n1", "x1", "o1", "gone1", "x2"].map(String::from);
        let resolved = resolve(&redis, &keys, &routes, &ids).await.unwrap();
        assert_eq!(resolved.stale, ["gone1"]);
        assert_eq!(resolved.unroutable, ["x1", "x2"]);
        let got: Vec<_> = resolved
            .recipients
            .iter()
            .map(|r| {
                (
                    r.id.as_str(),
                    r.channel.as_deref(),
                    r.subject.as_deref(),
                    r.connected_at_ms,
                    &*r.endpoint.url,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (
                    "n1",
                    Some("room-new"),
                    Some("ada"),
                    Some(1000),
                    "http://127.0.0.1:9/test"
                ),
                (
                    "o1",
                    Some("room-old"),
                    Some("ada"),
                    Some(2000),
                    "http://127.0.0.1:9/test"
                ),
            ]
        );
    }

    #[test]
    fn a_connection_is_connecting_for_the_grace_after_its_connect() {
        let mut r = Recipient {
            id: "c".into(),
            endpoint: Endpoint {
                url: Arc::from("http://127.0.0.1:1/test"),
                region: Arc::from("us-east-1"),
            },
            channel: None,
            subject: None,
            connected_at_ms: Some(10_000),
        };
        let grace = Duration::from_secs(10);
        assert_eq!(
            r.connecting_for(grace, 10_000),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            r.connecting_for(grace, 19_999),
            Some(Duration::from_millis(1))
        );
        assert_eq!(r.connecting_for(grace, 20_000), None, "the grace is over");
        assert_eq!(r.connecting_for(Duration::ZERO, 10_000), None, "no grace");
        assert_eq!(
            r.connecting_for(Duration::MAX, 10_000),
            Some(Duration::from_millis(u64::MAX - 10_000))
        );
        r.connected_at_ms = None;
        assert_eq!(r.connecting_for(grace, 10_000), None, "unknown: not young");
    }
}
