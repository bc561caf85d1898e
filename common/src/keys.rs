//! The Redis keyspace: every key the product reads or writes is built here and nowhere else.
//!
//! Each key family carries a Redis Cluster hash tag (`{...}`) around the part that decides its slot, so
//! the same code runs on a single node and on a cluster (ElastiCache cluster mode). Keys that one
//! operation must touch together share a tag: the queue's stream, delayed set and dead-letter stream
//! all use `{queue name}`. Keys of different concepts (a connection and its channel) live in different
//! slots; operations that span them are ordered so that a partial failure leaves only state the worker
//! and the TTLs clean up (see ARCHITECTURE.md, "Invariants").
//!
//! | key | type | what |
//! |---|---|---|
//! | `{p}conn:{id}` | hash | one connection: channel, subject, allowed channels, api id, stage, connected-at, source ip, token hash, client info (short field names: [`conn_field`]), with a TTL |
//! | `{p}chan:{name}` | set | connection ids in a channel |
//! | `{p}user:{subject}` | set | connection ids of a subject |
//! | `{p}all:{n}` | set | every connection id, split into [`ALL_BUCKETS`] buckets by a hash of the id |
//! | `{p}loc:{n}` | hash | where each connection is (id → channel and subject), in the slot of `all:{n}`: what the stale-connection sweep reads once a record has expired |
//! | `{p}pres:{name}` | hash | a presence channel's members (id → user id and client info), in the slot of `chan:{name}` |
//! | `{p}sweep:{n}` | string | the lease of the sweep of bucket `n` (one ingest replica sweeps it per interval) |
//! | `{p}hist:{name}` | list | the channel's recent messages, newest first, capped |
//! | `{p}ordq:{name}` | list | an ordered channel's backlog: encoded jobs in publish order, in the slot of `chan:{name}` |
//! | `{p}ords:{name}` | string | set while the backlog has a drain job on the queue or a worker draining it |
//! | `{p}ordl:{name}` | string | the drain that holds the channel (`JOB_ID/TOKEN`), with a TTL |
//! | `{p}ordb:{name}` | string | the size of the batch being delivered at the backlog's head (`FIRST_ID N`) |
//! | `{p}tok:{sha256}` | string | a connect token's claims, stored under the hash of the token, with its TTL |
//! | `{p}rl:{kind}:{who}` | string | a rate-limit counter with the window as TTL |
//! | `{p}revoked:{id}` | string | a kicked connection's revocation mark: its callbacks are refused until it expires |
//! | `{p}usergen:{subject}` | string | a subject's token generation, raised by a revoke: older tokens are refused |
//! | `{p}q:{queue}:…` | stream, zset | the Redis Streams queue: jobs, delayed jobs, dead letters |
//! | `{p}bcast:{id}` | hash | a broadcast's delivery report (fields in [`report_field`]), with a TTL |
//! | `{p}bcast:{id}:done` | set | the chunk attempts of a broadcast already counted in its report |
//! | `{p}job:{tag}:lease:{job}` | string | a job's fencing token: the number of its latest receipt |
//! | `{p}job:{tag}:progress:{job}` | set | the connection ids a job has already delivered or found gone |
//! | `{p}gov:{name}` | hash | the workers' shared `PostToConnection` token bucket |
//! | `{p}idem:{sha256}` | hash | a publish's `Idempotency-Key` record (job id, state), per API key, with a TTL |

use sha2::{Digest, Sha256};

/// How many sets hold "every connection". Spreading them lets a broadcast to everyone be scanned in
/// parallel and keeps any one set (and its cluster slot) from holding millions of members.
pub const ALL_BUCKETS: u32 = 16;

/// Field names of the connection hash: one or two characters each, since every byte of a record is kept
/// once per live connection (a record is a small `listpack` hash; see README, "Memory per connection").
pub mod conn_field {
    pub const CHANNEL: &str = "c";
    /// The subject (user id); absent for an anonymous connection.
    pub const SUBJECT: &str = "u";
    /// Comma-separated channel patterns the connection may join; absent means any channel.
    pub const ALLOWED: &str = "p";
    pub const API_ID: &str = "a";
    pub const STAGE: &str = "s";
    /// When ingest accepted the `$connect`, ms since the epoch.
    pub const CONNECTED_AT_MS: &str = "t";
    pub const SOURCE_IP: &str = "ip";
    /// The first 128 bits (32 hex characters) of the SHA-256 of the token the connection was opened
    /// with: lets a repeated `$connect` be recognised (see [`super::record_token_hash`]).
    pub const TOKEN_HASH: &str = "h";
    /// The client info from the connect token's claims (a small JSON object), shown in presence.
    pub const INFO: &str = "i";

    /// The names records had before they were shortened, still read (never written) so that records
    /// registered before an upgrade keep working until they expire.
    pub mod legacy {
        pub const CHANNEL: &str = "channel";
        pub const SUBJECT: &str = "subject";
        pub const ALLOWED: &str = "allowed";
        pub const API_ID: &str = "api_id";
        pub const STAGE: &str = "stage";
        pub const CONNECTED_AT_MS: &str = "connected_at_ms";
        pub const SOURCE_IP: &str = "source_ip";
        /// The full 64-character hash.
        pub const TOKEN_HASH: &str = "token_hash";
        pub const INFO: &str = "info";
    }

    /// Every field with the name it had before, new name first.
    pub const WITH_LEGACY: [(&str, &str); 9] = [
        (CHANNEL, legacy::CHANNEL),
        (SUBJECT, legacy::SUBJECT),
        (ALLOWED, legacy::ALLOWED),
        (API_ID, legacy::API_ID),
        (STAGE, legacy::STAGE),
        (CONNECTED_AT_MS, legacy::CONNECTED_AT_MS),
        (SOURCE_IP, legacy::SOURCE_IP),
        (TOKEN_HASH, legacy::TOKEN_HASH),
        (INFO, legacy::INFO),
    ];
}

/// Field names of a broadcast's delivery report hash (`bcast:{id}`), written by the workers and read by
/// ingest's `GET /v1/broadcasts/{id}`.
pub mod report_field {
    /// Deliveries answered 200.
    pub const SENT: &str = "sent";
    /// Recipients whose connection was gone (410, or no record left in Redis).
    pub const GONE: &str = "gone";
    /// 429 answers seen (each one retried; not a final outcome by itself).
    pub const THROTTLED: &str = "throttled";
    /// Recipients that could not be delivered and went to the dead-letter queue.
    pub const FAILED: &str = "failed";
    /// Posts answered 200 for a recipient this broadcast had already delivered (a re-taken or re-planned
    /// chunk); `sent` counts each recipient once.
    pub const DUPLICATES: &str = "duplicates";
    /// Calls retried after a 429, a 5xx, a timeout or a network failure.
    pub const RETRIES: &str = "retries";
    /// When the first worker started on the broadcast, ms since the epoch.
    pub const STARTED_MS: &str = "started_ms";
    /// When the last recipient reached a final outcome, ms since the epoch (absent while running).
    pub const FINISHED_MS: &str = "finished_ms";
    /// When the originating job was accepted, ms since the epoch.
    pub const ENQUEUED_MS: &str = "enqueued_ms";
    /// The broadcast's target kind (`channel`, `subject`, `all`).
    pub const TARGET: &str = "target";
    /// Chunk jobs planned so far.
    pub const CHUNKS: &str = "chunks";
    /// Chunk jobs (and their retries) not yet at a final outcome.
    pub const OUTSTANDING: &str = "outstanding";
    /// `1` once planning has read the whole target.
    pub const PLANNED: &str = "planned";
    /// Planning's resume point: the `all:{n}` bucket and the `SSCAN` cursor after the last chunk sent.
    pub const PLAN_BUCKET: &str = "plan_bucket";
    pub const PLAN_CURSOR: &str = "plan_cursor";
    /// The set the broadcast reads (so a chunk can clean stale ids out of it).
    pub const SOURCE: &str = "source";
}

/// Builds key names under a prefix (default `fo:`).
#[derive(Debug, Clone)]
pub struct Keyspace {
    prefix: String,
}

impl Default for Keyspace {
    fn default() -> Self {
        Self::new("fo:")
    }
}

impl Keyspace {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn connection(&self, id: &str) -> String {
        format!("{}conn:{{{id}}}", self.prefix)
    }

    pub fn channel(&self, name: &str) -> String {
        format!("{}chan:{{{name}}}", self.prefix)
    }

    pub fn subject(&self, subject: &str) -> String {
        format!("{}user:{{{subject}}}", self.prefix)
    }

    /// The "every connection" bucket that holds `connection_id`.
    pub fn all_bucket_of(&self, connection_id: &str) -> String {
        self.all_bucket(bucket_of(connection_id))
    }

    pub fn all_bucket(&self, bucket: u32) -> String {
        format!("{}all:{{{bucket}}}", self.prefix)
    }

    /// Where the connections of bucket `bucket` are (a hash, id → channel and subject); same hash tag as
    /// [`Keyspace::all_bucket`], so one script updates both.
    pub fn location_bucket(&self, bucket: u32) -> String {
        format!("{}loc:{{{bucket}}}", self.prefix)
    }

    /// The [`Keyspace::location_bucket`] that holds `connection_id`.
    pub fn location_of(&self, connection_id: &str) -> String {
        self.location_bucket(bucket_of(connection_id))
    }

    /// A presence channel's members (a hash, id → member); same hash tag as [`Keyspace::channel`], so
    /// joining the channel and its presence is one script on a cluster too.
    pub fn presence(&self, channel: &str) -> String {
        format!("{}pres:{{{channel}}}", self.prefix)
    }

    /// The lease of the stale-connection sweep of bucket `bucket`.
    pub fn sweep_lease(&self, bucket: u32) -> String {
        format!("{}sweep:{{{bucket}}}", self.prefix)
    }

    pub fn history(&self, channel: &str) -> String {
        format!("{}hist:{{{channel}}}", self.prefix)
    }

    /// The channel's stream position (`epoch`, last `offset`); same hash tag as [`Keyspace::history`],
    /// so both are written in one script on a cluster too.
    pub fn history_position(&self, channel: &str) -> String {
        format!("{}hpos:{{{channel}}}", self.prefix)
    }

    /// An ordered channel's backlog: a list of encoded jobs in publish order, drained by one worker at a
    /// time; same hash tag as [`Keyspace::channel`], as are the three keys after it.
    pub fn ordered_backlog(&self, channel: &str) -> String {
        format!("{}ordq:{{{channel}}}", self.prefix)
    }

    /// Set while an ordered channel's backlog has a drain job on the queue or a worker draining it.
    pub fn ordered_scheduled(&self, channel: &str) -> String {
        format!("{}ords:{{{channel}}}", self.prefix)
    }

    /// Which receipt of which drain job is draining an ordered channel (`JOB_ID/TOKEN`).
    pub fn ordered_lock(&self, channel: &str) -> String {
        format!("{}ordl:{{{channel}}}", self.prefix)
    }

    /// How many messages the batch being delivered at the head of an ordered channel's backlog holds
    /// (`FIRST_JOB_ID N`), so a drain that resumes it sends the same batch.
    pub fn ordered_batch(&self, channel: &str) -> String {
        format!("{}ordb:{{{channel}}}", self.prefix)
    }

    /// The key of a token, from the token itself: only the hash is ever stored.
    pub fn token(&self, token: &str) -> String {
        format!("{}tok:{{{}}}", self.prefix, token_hash(token))
    }

    /// A kicked connection's revocation mark (same slot as its record).
    pub fn revoked(&self, id: &str) -> String {
        format!("{}revoked:{{{id}}}", self.prefix)
    }

    /// A subject's token generation (same slot as the subject's rate-limit counters).
    pub fn token_generation(&self, subject: &str) -> String {
        format!("{}usergen:{{{subject}}}", self.prefix)
    }

    /// A rate-limit counter: `kind` is a fixed label (`ip`, `sub`, `tok`), `who` the limited party.
    pub fn rate_limit(&self, kind: &str, who: &str) -> String {
        format!("{}rl:{kind}:{{{who}}}", self.prefix)
    }

    /// A broadcast's delivery report (a hash, fields in [`report_field`]).
    pub fn report(&self, broadcast_id: &str) -> String {
        format!("{}bcast:{{{broadcast_id}}}", self.prefix)
    }

    /// The set of chunk attempts already counted in a broadcast's report; in the report's slot.
    pub fn report_done(&self, broadcast_id: &str) -> String {
        format!("{}bcast:{{{broadcast_id}}}:done", self.prefix)
    }

    /// The record of an `Idempotency-Key` sent with API key `scope`, under a hash of both (so a key's own
    /// characters never reach the key name).
    pub fn idempotency(&self, scope: &str, key: &str) -> String {
        format!(
            "{}idem:{{{}}}",
            self.prefix,
            token_hash(&format!("{scope}\n{key}"))
        )
    }

    /// A job's fencing token. `tag` is the broadcast the job belongs to (or the job's own id), so that the
    /// lease shares a slot with the broadcast's report and one script can check one and write the other.
    pub fn job_lease(&self, tag: &str, job_id: &str) -> String {
        format!("{}job:{{{tag}}}:lease:{job_id}", self.prefix)
    }

    /// The connection ids a job has already delivered (or found gone), in the slot of [`Self::job_lease`].
    pub fn job_progress(&self, tag: &str, job_id: &str) -> String {
        format!("{}job:{{{tag}}}:progress:{job_id}", self.prefix)
    }

    /// The workers' shared token bucket `name` (one per account budget).
    pub fn governor(&self, name: &str) -> String {
        format!("{}gov:{{{name}}}", self.prefix)
    }

    /// The Redis Streams queue's keys for queue `name`, all in one slot.
    pub fn queue(&self, name: &str) -> QueueKeys {
        let base = format!("{}q:{{{name}}}", self.prefix);
        QueueKeys {
            stream: format!("{base}:jobs"),
            delayed: format!("{base}:delayed"),
            dead: format!("{base}:dead"),
        }
    }
}

/// The keys of one Redis Streams queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueKeys {
    /// The stream jobs are added to and read from with a consumer group.
    pub stream: String,
    /// A sorted set of jobs sent with a delay, scored by the time they are due (ms).
    pub delayed: String,
    /// The dead-letter stream.
    pub dead: String,
}

/// Which "every connection" bucket an id falls in (FNV-1a, stable across processes and versions).
pub fn bucket_of(connection_id: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in connection_id.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h % ALL_BUCKETS
}

/// Hex SHA-256 of a token.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The token hash a connection record keeps: the first 128 bits of [`token_hash`], enough to recognise
/// the token again (finding another token with the same 128 bits is out of reach) at half the bytes.
pub fn record_token_hash(token: &str) -> String {
    hex::encode(&Sha256::digest(token.as_bytes())[..16])
}

/// Whether `stored`, a record's token hash (the 128-bit form, or the full hash of an older record), is
/// the hash of `token`.
pub fn token_hash_matches(stored: &str, token: &str) -> bool {
    match stored.len() {
        32 => stored == record_token_hash(token),
        _ => stored == token_hash(token),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every key has exactly one hash tag, so its slot is decided by the tagged part alone.
    #[test]
    fn every_key_has_one_hash_tag() {
        let k = Keyspace::default();
        let q = k.queue("jobs");
        let keys = [
            k.connection("abc="),
            k.channel("general"),
            k.subject("user-1"),
            k.all_bucket_of("abc="),
            k.history("general"),
            k.location_of("abc="),
            k.presence("general"),
            k.sweep_lease(3),
            k.revoked("abc="),
            k.token_generation("user-1"),
            k.history_position("general"),
            k.ordered_backlog("general"),
            k.ordered_scheduled("general"),
            k.ordered_lock("general"),
            k.ordered_batch("general"),
            k.token("t"),
            k.rate_limit("ip", "10.0.0.1"),
            k.report("b1"),
            k.report_done("b1"),
            k.governor("default"),
            q.stream,
            q.delayed,
            q.dead,
        ];
        for key in keys {
            assert!(key.starts_with("fo:"), "{key}");
            assert_eq!(key.matches('{').count(), 1, "{key}");
            assert_eq!(key.matches('}').count(), 1, "{key}");
            assert!(key.find('{') < key.find('}'), "{key}");
        }
    }

    /// The key names are the contract with data already in Redis and with every process of a rolling
    /// upgrade: each is pinned here, under a custom prefix.
    #[test]
    fn key_names_are_stable() {
        let k = Keyspace::new("t:");
        assert_eq!(k.prefix(), "t:");
        let scope_key = token_hash("api-key-1\nretry-7");
        let cases = [
            (k.connection("abc="), "t:conn:{abc=}".to_owned()),
            (k.channel("general"), "t:chan:{general}".to_owned()),
            (k.subject("user-1"), "t:user:{user-1}".to_owned()),
            (k.all_bucket(3), "t:all:{3}".to_owned()),
            (k.all_bucket_of("abc="), "t:all:{2}".to_owned()),
            (k.location_bucket(3), "t:loc:{3}".to_owned()),
            (k.location_of("abc="), "t:loc:{2}".to_owned()),
            (k.presence("general"), "t:pres:{general}".to_owned()),
            (k.sweep_lease(3), "t:sweep:{3}".to_owned()),
            (k.history("general"), "t:hist:{general}".to_owned()),
            (k.history_position("general"), "t:hpos:{general}".to_owned()),
            (k.ordered_backlog("general"), "t:ordq:{general}".to_owned()),
            (
                k.ordered_scheduled("general"),
                "t:ords:{general}".to_owned(),
            ),
            (k.ordered_lock("general"), "t:ordl:{general}".to_owned()),
            (k.ordered_batch("general"), "t:ordb:{general}".to_owned()),
            (k.token("t"), format!("t:tok:{{{}}}", token_hash("t"))),
            (k.revoked("abc="), "t:revoked:{abc=}".to_owned()),
            (
                k.token_generation("user-1"),
                "t:usergen:{user-1}".to_owned(),
            ),
            (
                k.rate_limit("ip", "10.0.0.1"),
                "t:rl:ip:{10.0.0.1}".to_owned(),
            ),
            (k.report("b1"), "t:bcast:{b1}".to_owned()),
            (k.report_done("b1"), "t:bcast:{b1}:done".to_owned()),
            (
                k.idempotency("api-key-1", "retry-7"),
                format!("t:idem:{{{scope_key}}}"),
            ),
            (
                k.job_lease("b1", "b1.4"),
                "t:job:{b1}:lease:b1.4".to_owned(),
            ),
            (
                k.job_progress("b1", "b1.4"),
                "t:job:{b1}:progress:b1.4".to_owned(),
            ),
            (k.governor("default"), "t:gov:{default}".to_owned()),
        ];
        for (key, expected) in cases {
            assert_eq!(key, expected);
        }
        assert_eq!(
            k.queue("jobs"),
            QueueKeys {
                stream: "t:q:{jobs}:jobs".into(),
                delayed: "t:q:{jobs}:delayed".into(),
                dead: "t:q:{jobs}:dead".into(),
            }
        );
        assert_eq!(Keyspace::default().prefix(), "fo:");
    }

    /// An idempotency key is scoped to its API key: the same `Idempotency-Key` under two API keys is two
    /// records.
    #[test]
    fn idempotency_keys_are_per_api_key() {
        let k = Keyspace::default();
        assert_ne!(k.idempotency("api-a", "k"), k.idempotency("api-b", "k"));
        assert_eq!(k.idempotency("api-a", "k"), k.idempotency("api-a", "k"));
        assert!(!k.idempotency("api-a", "my-key").contains("my-key"));
    }

    /// Buckets are FNV-1a (32 bit) modulo [`ALL_BUCKETS`]: every process, of any version, puts an id in
    /// the same bucket. Checked against the published FNV-1a vectors.
    #[test]
    fn buckets_are_fnv1a() {
        for (id, hash) in [
            ("", 0x811c_9dc5_u32),
            ("a", 0xe40c_292c),
            ("foobar", 0xbf9c_f968),
        ] {
            assert_eq!(bucket_of(id), hash % ALL_BUCKETS, "{id:?}");
        }
        assert_eq!(bucket_of("abc="), 2);
        assert_eq!(bucket_of("L0SM9cOFvHcCIhw="), 13);
    }

    #[test]
    fn keys_written_together_share_a_slot() {
        let k = Keyspace::default();
        let tag = |s: &str| s[s.find('{').unwrap()..=s.find('}').unwrap()].to_owned();
        assert_eq!(tag(&k.channel("general")), tag(&k.presence("general")));
        assert_eq!(tag(&k.all_bucket_of("abc=")), tag(&k.location_of("abc=")));
    }

    #[test]
    fn queue_keys_share_a_slot() {
        let q = Keyspace::default().queue("jobs");
        let tag = |s: &str| s[s.find('{').unwrap()..=s.find('}').unwrap()].to_owned();
        assert_eq!(tag(&q.stream), tag(&q.delayed));
        assert_eq!(tag(&q.stream), tag(&q.dead));
    }

    #[test]
    fn tokens_are_stored_by_hash_only() {
        let key = Keyspace::default().token("secret-token");
        assert!(!key.contains("secret-token"));
        assert_eq!(key.len(), "fo:tok:{}".len() + 64);
    }

    #[test]
    fn a_record_keeps_half_the_token_hash_and_old_records_still_match() {
        let short = record_token_hash("t1");
        assert_eq!(short.len(), 32);
        assert!(token_hash("t1").starts_with(&short));
        assert!(token_hash_matches(&short, "t1"));
        assert!(token_hash_matches(&token_hash("t1"), "t1"), "a full hash");
        assert!(!token_hash_matches(&short, "t2"));
        assert!(!token_hash_matches(&token_hash("t1")[..40], "t1"));
    }

    /// Record field names are short, distinct, and distinct from every older name.
    #[test]
    fn record_fields_are_short_and_distinct() {
        let mut seen = std::collections::HashSet::new();
        for (new, old) in conn_field::WITH_LEGACY {
            assert!(new.len() <= 2, "{new}");
            assert!(seen.insert(new), "{new}");
            assert!(seen.insert(old), "{old}");
        }
    }

    #[test]
    fn buckets_are_stable_and_spread() {
        assert_eq!(bucket_of("abc="), bucket_of("abc="));
        let used: std::collections::HashSet<u32> =
            (0..1000).map(|i| bucket_of(&format!("c{i}"))).collect();
        assert_eq!(used.len(), ALL_BUCKETS as usize);
    }
}
