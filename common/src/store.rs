//! The Redis connection behind one type, [`Redis`], whether the deployment runs a single node (or a
//! primary with replicas) or Redis Cluster (ElastiCache cluster mode).
//!
//! `redis://host:port/db` (or `rediss://` for TLS) selects a single node; `redis+cluster://host:port,host:port`
//! (or `rediss+cluster://`) selects a cluster, seeded with those nodes. Both reconnect by themselves and
//! put a timeout on every command, so a Redis outage turns into errors (which the services answer with
//! 503) rather than requests that hang.

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};
use std::time::Duration;

/// How long one Redis command may take before it fails.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// A cheaply cloneable Redis connection, single node or cluster.
#[derive(Clone)]
pub enum Redis {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Redis::Single(_) => "Redis::Single",
            Redis::Cluster(_) => "Redis::Cluster",
        })
    }
}

/// Why a Redis URL could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "invalid Redis URL: {0} (expected redis://host:port/db or redis+cluster://host:port,host:port)"
    )]
    Url(String),
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
}

impl Redis {
    /// Connects to the URL. A single node is connected lazily (the first command connects, and start-up
    /// does not fail while Redis is still starting); a cluster must answer to learn its slot map.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        if let Some(seeds) = cluster_seeds(url)? {
            let client = redis::cluster::ClusterClient::builder(seeds)
                .connection_timeout(COMMAND_TIMEOUT)
                .response_timeout(COMMAND_TIMEOUT)
                .build()?;
            return Ok(Redis::Cluster(client.get_async_connection().await?));
        }
        let client = redis::Client::open(url).map_err(|e| StoreError::Url(e.to_string()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        Ok(Redis::Single(ConnectionManager::new_lazy_with_config(
            client, config,
        )?))
    }

    /// True on Redis Cluster, where a transaction (MULTI) may only touch keys of one slot.
    pub fn is_cluster(&self) -> bool {
        matches!(self, Redis::Cluster(_))
    }

    /// Runs `commands` together. On a single node they form one MULTI/EXEC transaction: all or nothing,
    /// one round trip. On a cluster a transaction cannot span slots, so each command is routed to its own
    /// node and all are sent concurrently; callers order their writes so that a partial failure leaves
    /// only state the TTLs and the worker's `GoneException` handling clean up.
    pub async fn batch(&self, commands: Vec<Cmd>) -> Result<Vec<Value>, redis::RedisError> {
        match self {
            Redis::Single(_) => {
                let mut pipe = redis::pipe();
                pipe.atomic();
                for cmd in commands {
                    pipe.add_command(cmd);
                }
                let mut conn = self.clone();
                pipe.query_async(&mut conn).await
            }
            Redis::Cluster(_) => {
                let calls = commands.into_iter().map(|cmd| {
                    let mut conn = self.clone();
                    async move { cmd.query_async::<Value>(&mut conn).await }
                });
                futures::future::try_join_all(calls).await
            }
        }
    }

    /// Runs `steps` in order, each step's commands together: one MULTI/EXEC of everything on a single
    /// node; on a cluster each step as [`Redis::batch`] does, and the next step only once every command of
    /// the previous one was acknowledged. For writes that others must see in an order (a connection's
    /// record before the sets that name it).
    pub async fn batch_in_order(
        &self,
        steps: Vec<Vec<Cmd>>,
    ) -> Result<Vec<Value>, redis::RedisError> {
        if !self.is_cluster() {
            return self.batch(steps.into_iter().flatten().collect()).await;
        }
        let mut answers = Vec::new();
        for step in steps {
            answers.extend(self.batch(step).await?);
        }
        Ok(answers)
    }

    /// PING.
    pub async fn ping(&self) -> Result<(), redis::RedisError> {
        let mut conn = self.clone();
        redis::cmd("PING").query_async::<()>(&mut conn).await
    }
}

/// Parses `redis+cluster://a:1,b:2` into seed URLs; `None` for a single-node URL.
fn cluster_seeds(url: &str) -> Result<Option<Vec<String>>, StoreError> {
    let (scheme, rest) = match url.split_once("://") {
        Some(("redis+cluster", rest)) => ("redis", rest),
        Some(("rediss+cluster", rest)) => ("rediss", rest),
        Some(("redis" | "rediss" | "unix" | "redis+unix", _)) => return Ok(None),
        _ => return Err(StoreError::Url("unknown scheme".into())),
    };
    let (auth, hosts) = match rest.rsplit_once('@') {
        Some((auth, hosts)) => (format!("{auth}@"), hosts),
        None => (String::new(), rest),
    };
    let hosts = hosts.trim_end_matches('/');
    let seeds: Vec<String> = hosts
        .split(',')
        .filter(|h| !h.is_empty())
        .map(|h| format!("{scheme}://{auth}{h}"))
        .collect();
    if seeds.is_empty() {
        return Err(StoreError::Url(
            "a cluster URL needs at least one host:port".into(),
        ));
    }
    Ok(Some(seeds))
}

impl ConnectionLike for Redis {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Redis::Single(c) => c.req_packed_command(cmd),
            Redis::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Redis::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Redis::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Redis::Single(c) => c.get_db(),
            Redis::Cluster(c) => c.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cluster_seeds() {
        assert_eq!(cluster_seeds("redis://h:1/0").unwrap(), None);
        assert_eq!(
            cluster_seeds("redis+cluster://:pw@a:1,b:2/").unwrap(),
            Some(vec![
                "redis://:pw@a:1".to_owned(),
                "redis://:pw@b:2".to_owned()
            ])
        );
        assert_eq!(
            cluster_seeds("rediss+cluster://a:1").unwrap(),
            Some(vec!["rediss://a:1".to_owned()])
        );
        assert!(cluster_seeds("http://a").is_err());
        assert!(cluster_seeds("redis+cluster://").is_err());
    }
}
