//! The Redis client of the second level: lookups, guarded writes and tag
//! invalidations, each one Lua script (one round trip, atomic in Redis),
//! behind the `redis` breaker and `[services.redis] timeout`.
//!
//! Keys, under `P = {cache.redis_prefix}`:
//!
//! | key | what |
//! |---|---|
//! | `P:epoch` | the L2 epoch (absent = `0`); bumped to orphan everything |
//! | `P:seq` | the generation sequence: every invalidation takes a new number |
//! | `P:{cache}:{epoch}:v:{key}` | a value (JSON), with the cache's ttl |
//! | `P:{cache}:{epoch}:t:{tag}` | the set of keys stored under a tag, living as long as its longest value |
//! | `P:{cache}:g:{tag}` | the tag's generation: the `seq` number of its last invalidation (1 h) |
//!
//! A lookup that misses returns the epoch and the generations of its tags;
//! the write after the database load stores the value only if the epoch and
//! every one of those generations are unchanged. Generations are unique
//! numbers from `seq`, so a generation key expiring (it lives an hour, far
//! longer than any load) can only make a write be refused, never accepted
//! wrongly. Redis Cluster is not supported (the scripts touch keys they
//! derive).

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use redis::{Script, Value, aio::ConnectionManager};
use resilience::{
    BoxError,
    breaker::{BreakerHandle, BreakerLayer, BreakerState},
    registry::Registry,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{config::Settings, ops::health::Status};

/// The breaker (and `[services.<name>]` table) of the Redis client.
pub const SERVICE: &str = "redis";

/// How long a tag's generation is kept after its last invalidation: far
/// longer than any load, so a write is never judged without it.
const GENERATION_TTL_MS: u64 = 3_600_000;

const LOOKUPS: &str = "boardroom_cache_l2_requests_total";
const WRITES: &str = "boardroom_cache_l2_writes_total";
const INVALIDATIONS: &str = "boardroom_cache_l2_invalidations_total";

pub(super) fn describe() {
    metrics::describe_counter!(
        LOOKUPS,
        "Second-level (Redis) cache lookups after an L1 miss, by cache and result (hit, miss, error: Redis unavailable or refused by its breaker)."
    );
    metrics::describe_counter!(
        WRITES,
        "Values written back to the second-level cache after a database load, by cache and outcome (stored, stale: an invalidation ran during the load, error)."
    );
    metrics::describe_counter!(
        INVALIDATIONS,
        "Tag invalidations sent to the second-level cache, by outcome (ok, error: Redis unavailable; the epoch is bumped when it is back)."
    );
}

/// KEYS[1] = P:epoch. ARGV = cache prefix `P:{cache}:`, key, tags...
/// Returns {epoch, value or false, generation of each tag ('' if none)}.
const LOOKUP: &str = r"
local e = redis.call('GET', KEYS[1]) or '0'
local p = ARGV[1]
local v = redis.call('GET', p .. e .. ':v:' .. ARGV[2])
if v then return {e, v} end
local out = {e, false}
for i = 3, #ARGV do
  out[#out + 1] = redis.call('GET', p .. 'g:' .. ARGV[i]) or ''
end
return out
";

/// KEYS[1] = P:epoch. ARGV = cache prefix, key, value, ttl ms, epoch seen,
/// then pairs (tag, generation seen). Returns 1 when stored, 0 when stale.
const STORE: &str = r"
local p = ARGV[1]
local e = redis.call('GET', KEYS[1]) or '0'
if e ~= ARGV[5] then return 0 end
for i = 6, #ARGV, 2 do
  if (redis.call('GET', p .. 'g:' .. ARGV[i]) or '') ~= ARGV[i + 1] then return 0 end
end
local ttl = tonumber(ARGV[4])
redis.call('SET', p .. e .. ':v:' .. ARGV[2], ARGV[3], 'PX', ttl)
for i = 6, #ARGV, 2 do
  local t = p .. e .. ':t:' .. ARGV[i]
  redis.call('SADD', t, ARGV[2])
  if redis.call('PTTL', t) < ttl then redis.call('PEXPIRE', t, ttl) end
end
return 1
";

/// KEYS[1] = P:epoch, KEYS[2] = P:seq. ARGV = generation ttl ms, number of
/// caches n, n cache prefixes, then tags. Returns the values removed.
const INVALIDATE: &str = r"
local e = redis.call('GET', KEYS[1]) or '0'
local n = tonumber(ARGV[2])
local removed = 0
for t = 3 + n, #ARGV do
  local g = redis.call('INCR', KEYS[2])
  for c = 3, 2 + n do
    local p = ARGV[c]
    redis.call('SET', p .. 'g:' .. ARGV[t], g, 'PX', ARGV[1])
    local set = p .. e .. ':t:' .. ARGV[t]
    for _, k in ipairs(redis.call('SMEMBERS', set)) do
      removed = removed + redis.call('DEL', p .. e .. ':v:' .. k)
    end
    redis.call('DEL', set)
  end
end
return removed
";

/// What a lookup found.
pub(crate) enum Lookup {
    /// The stored bytes.
    Hit(Vec<u8>),
    /// Nothing; the write after the load must present this stamp.
    Miss(Stamp),
}

/// The epoch and tag generations a miss saw (what a write is judged by).
#[derive(Debug, Clone)]
pub(crate) struct Stamp {
    epoch: Vec<u8>,
    generations: Vec<Vec<u8>>,
}

/// Why a Redis call did not happen or failed.
#[derive(Debug, thiserror::Error)]
enum L2Error {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("unexpected reply from redis")]
    Reply,
}

/// The second-level cache's Redis client. Cheap to clone.
#[derive(Clone)]
pub struct RedisL2 {
    inner: Arc<Inner>,
}

struct Inner {
    connection: ConnectionManager,
    breaker: BreakerHandle,
    timeout: Duration,
    prefix: String,
    epoch_key: String,
    seq_key: String,
    /// An invalidation failed to reach Redis: bump the epoch before using it.
    dirty: AtomicBool,
    lookup: Script,
    store: Script,
    invalidate: Script,
}

impl std::fmt::Debug for RedisL2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisL2")
            .field("prefix", &self.inner.prefix)
            .field("timeout", &self.inner.timeout)
            .field("breaker", &self.inner.breaker)
            .finish_non_exhaustive()
    }
}

/// `checks.redis` of `/health/ready`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct L2Status {
    /// `ok`, or `degraded` while Redis does not answer or its breaker is not
    /// closed (the service then runs on L1 and the database); never `down`.
    pub status: Status,
    /// `PING` round trip in milliseconds, when it answered.
    pub latency_ms: Option<f64>,
    /// The `redis` breaker's state.
    pub breaker: String,
    /// Why it is degraded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl RedisL2 {
    /// The client for `cache.redis_url`, or `None` when it is empty. Its
    /// breaker `redis` is registered in `registry`. No connection is made
    /// here: Redis may be down at start.
    pub fn from_settings(settings: &Settings, registry: &Registry) -> anyhow::Result<Option<Self>> {
        let cache = &settings.cache;
        if cache.redis_url.is_empty() {
            return Ok(None);
        }
        let service = settings.service(SERVICE);
        let timeout = service.timeout.unwrap_or(Duration::from_millis(250));
        let layer = BreakerLayer::new(SERVICE, service.breaker)
            .map_err(|error| anyhow::anyhow!("services.{SERVICE}.breaker: {error}"))?;
        let breaker = layer.handle();
        registry.register_breaker(breaker.clone())?;
        let client = redis::Client::open(cache.redis_url.as_str())?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let connection = ConnectionManager::new_lazy_with_config(client, config)?;
        let prefix = cache.redis_prefix.clone();
        Ok(Some(Self {
            inner: Arc::new(Inner {
                connection,
                breaker,
                timeout,
                epoch_key: format!("{prefix}:epoch"),
                seq_key: format!("{prefix}:seq"),
                prefix,
                dirty: AtomicBool::new(false),
                lookup: Script::new(LOOKUP),
                store: Script::new(STORE),
                invalidate: Script::new(INVALIDATE),
            }),
        }))
    }

    /// The `redis` breaker.
    pub fn breaker(&self) -> &BreakerHandle {
        &self.inner.breaker
    }

    /// `P:{cache}:`, the prefix of one cache's keys.
    fn cache_prefix(&self, cache: &str) -> String {
        format!("{}:{cache}:", self.inner.prefix)
    }

    /// The key a value of `cache` is stored under now (for tests and operators).
    pub async fn value_key(&self, cache: &str, key: &str) -> Option<String> {
        let epoch: Option<String> = self
            .call(|mut c, epoch_key| async move {
                redis::cmd("GET").arg(epoch_key).query_async(&mut c).await
            })
            .await
            .ok()?;
        Some(format!(
            "{}{}:v:{key}",
            self.cache_prefix(cache),
            epoch.as_deref().unwrap_or("0")
        ))
    }

    /// Runs one Redis operation under the breaker and the timeout; first
    /// bumps the epoch if an invalidation was lost.
    async fn call<T, F, Fut>(&self, op: F) -> Result<T, BoxError>
    where
        F: FnOnce(ConnectionManager, String) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let inner = &self.inner;
        let timeout = inner.timeout;
        let connection = inner.connection.clone();
        let epoch_key = inner.epoch_key.clone();
        let guarded = async move {
            if inner.dirty.load(Ordering::Acquire) {
                let mut bump = connection.clone();
                let bumped = tokio::time::timeout(
                    timeout,
                    redis::cmd("INCR")
                        .arg(&epoch_key)
                        .query_async::<i64>(&mut bump),
                )
                .await
                .map_err(|_| L2Error::Timeout(timeout))??;
                inner.dirty.store(false, Ordering::Release);
                tracing::warn!(
                    epoch = bumped,
                    "cache L2: Redis is back after a lost invalidation; new epoch (older entries are orphaned)"
                );
            }
            match tokio::time::timeout(timeout, op(connection, epoch_key)).await {
                Ok(result) => result.map_err(L2Error::from),
                Err(_) => Err(L2Error::Timeout(timeout)),
            }
        };
        inner.breaker.call(guarded).await
    }

    /// Looks `key` of `cache` up; on a miss, reads the stamp a write needs.
    pub(crate) async fn lookup(&self, cache: &str, key: &str, tags: &[String]) -> Option<Lookup> {
        let prefix = self.cache_prefix(cache);
        let script = &self.inner.lookup;
        let reply = self
            .call(|mut c, epoch_key| async move {
                let mut invocation = script.key(epoch_key);
                invocation.arg(prefix).arg(key);
                for tag in tags {
                    invocation.arg(tag);
                }
                invocation.invoke_async::<Value>(&mut c).await
            })
            .await;
        let parsed = reply.and_then(|value| parse_lookup(value, tags.len()).map_err(Into::into));
        match parsed {
            Ok(found) => {
                let result = if matches!(found, Lookup::Hit(_)) {
                    "hit"
                } else {
                    "miss"
                };
                metrics::counter!(LOOKUPS, "cache" => cache.to_owned(), "result" => result)
                    .increment(1);
                Some(found)
            }
            Err(error) => {
                metrics::counter!(LOOKUPS, "cache" => cache.to_owned(), "result" => "error")
                    .increment(1);
                tracing::debug!(%error, cache, "cache L2 lookup failed; using the database");
                None
            }
        }
    }

    /// Writes `value` for `key` unless the epoch or a generation in `stamp`
    /// changed since the lookup (an invalidation ran during the load).
    pub(crate) async fn store(
        &self,
        cache: &str,
        key: &str,
        tags: &[String],
        stamp: Stamp,
        value: Vec<u8>,
        ttl: Duration,
    ) {
        let prefix = self.cache_prefix(cache);
        let script = &self.inner.store;
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let reply = self
            .call(|mut c, epoch_key| async move {
                let mut invocation = script.key(epoch_key);
                invocation
                    .arg(prefix)
                    .arg(key)
                    .arg(value)
                    .arg(ttl_ms)
                    .arg(stamp.epoch);
                for (tag, generation) in tags.iter().zip(stamp.generations) {
                    invocation.arg(tag).arg(generation);
                }
                invocation.invoke_async::<i64>(&mut c).await
            })
            .await;
        let outcome = match reply {
            Ok(1) => "stored",
            Ok(_) => "stale",
            Err(error) => {
                tracing::debug!(%error, cache, "cache L2 write failed");
                "error"
            }
        };
        metrics::counter!(WRITES, "cache" => cache.to_owned(), "outcome" => outcome).increment(1);
    }

    /// Removes every value of `caches` tagged with one of `tags` and bumps
    /// those tags' generations. If Redis cannot be reached, L2 is marked
    /// dirty: the next call that reaches it starts a new epoch.
    pub(crate) async fn invalidate_tags(&self, caches: &[Arc<str>], tags: &[&str]) {
        if caches.is_empty() || tags.is_empty() {
            return;
        }
        let script = &self.inner.invalidate;
        let seq_key = self.inner.seq_key.clone();
        let prefixes: Vec<String> = caches.iter().map(|c| self.cache_prefix(c)).collect();
        let reply = self
            .call(|mut c, epoch_key| async move {
                let mut invocation = script.key(epoch_key);
                invocation
                    .key(seq_key)
                    .arg(GENERATION_TTL_MS)
                    .arg(prefixes.len());
                for prefix in &prefixes {
                    invocation.arg(prefix);
                }
                for tag in tags {
                    invocation.arg(*tag);
                }
                invocation.invoke_async::<i64>(&mut c).await
            })
            .await;
        match reply {
            Ok(_) => metrics::counter!(INVALIDATIONS, "outcome" => "ok").increment(1),
            Err(error) => {
                self.inner.dirty.store(true, Ordering::Release);
                metrics::counter!(INVALIDATIONS, "outcome" => "error").increment(1);
                tracing::warn!(%error, ?tags, "cache L2 invalidation did not reach Redis; L2 will start a new epoch when it is back");
            }
        }
    }

    /// `PING`, bounded by `limit`, outside the breaker (a probe must not
    /// count), and the breaker's state.
    pub async fn status(&self, limit: Duration) -> L2Status {
        let breaker = self.inner.breaker.state();
        let started = Instant::now();
        let mut connection = self.inner.connection.clone();
        let command = redis::cmd("PING");
        let ping = command.query_async::<String>(&mut connection);
        let (latency_ms, error) =
            match tokio::time::timeout(limit.min(self.inner.timeout), ping).await {
                Ok(Ok(_)) => (Some(started.elapsed().as_secs_f64() * 1000.0), None),
                Ok(Err(error)) => {
                    tracing::debug!(%error, "readiness: redis ping failed");
                    (None, Some("unreachable".to_owned()))
                }
                Err(_) => (None, Some("timed out".to_owned())),
            };
        let breaker_closed = matches!(breaker, BreakerState::Closed | BreakerState::Disabled);
        let error = error.or_else(|| (!breaker_closed).then(|| "breaker not closed".to_owned()));
        L2Status {
            status: if error.is_none() {
                Status::Ok
            } else {
                Status::Degraded
            },
            latency_ms,
            breaker: breaker.as_str().to_owned(),
            error,
        }
    }
}

fn bytes(value: Value) -> Option<Vec<u8>> {
    match value {
        Value::BulkString(bytes) => Some(bytes),
        Value::SimpleString(text) => Some(text.into_bytes()),
        Value::Int(number) => Some(number.to_string().into_bytes()),
        _ => None,
    }
}

fn parse_lookup(value: Value, tags: usize) -> Result<Lookup, L2Error> {
    let Value::Array(items) = value else {
        return Err(L2Error::Reply);
    };
    let mut items = items.into_iter();
    let epoch = items.next().and_then(bytes).ok_or(L2Error::Reply)?;
    match items.next() {
        Some(Value::Nil) | None => {
            let generations: Vec<Vec<u8>> = items.map(|g| bytes(g).unwrap_or_default()).collect();
            if generations.len() != tags {
                return Err(L2Error::Reply);
            }
            Ok(Lookup::Miss(Stamp { epoch, generations }))
        }
        Some(value) => bytes(value).map(Lookup::Hit).ok_or(L2Error::Reply),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::process::{Child, Command, Stdio};

    use super::*;

    /// A private `redis-server` on a free port, killed on drop.
    struct Server(Child, u16);

    impl Server {
        fn start() -> Self {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server is installed");
            let deadline = Instant::now() + Duration::from_secs(10);
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(Instant::now() < deadline, "redis-server did not start");
                std::thread::sleep(Duration::from_millis(20));
            }
            Server(child, port)
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn client(port: u16) -> RedisL2 {
        let mut settings = Settings::defaults();
        settings.cache.redis_url = format!("redis://127.0.0.1:{port}");
        RedisL2::from_settings(&settings, &Registry::new())
            .unwrap()
            .unwrap()
    }

    fn tags(names: &[&str]) -> Vec<String> {
        names.iter().map(|t| (*t).to_owned()).collect()
    }

    async fn stamp(l2: &RedisL2, key: &str, tags: &[String]) -> Stamp {
        match l2.lookup("users", key, tags).await {
            Some(Lookup::Miss(stamp)) => stamp,
            Some(Lookup::Hit(_)) => panic!("{key} is cached"),
            None => panic!("redis unavailable"),
        }
    }

    async fn cached(l2: &RedisL2, key: &str, tags: &[String]) -> Option<Vec<u8>> {
        match l2.lookup("users", key, tags).await {
            Some(Lookup::Hit(bytes)) => Some(bytes),
            Some(Lookup::Miss(_)) => None,
            None => panic!("redis unavailable"),
        }
    }

    #[tokio::test]
    async fn a_load_that_began_before_an_invalidation_is_not_written() {
        let server = Server::start();
        let l2 = client(server.1);
        let tags = tags(&["user:1", "org:9"]);
        let ttl = Duration::from_secs(60);

        // Began, then `org:9` was invalidated elsewhere, then it ends: refused.
        let before = stamp(&l2, "k", &tags).await;
        l2.invalidate_tags(&["users".into()], &["org:9"]).await;
        l2.store("users", "k", &tags, before, b"old".to_vec(), ttl)
            .await;
        assert_eq!(cached(&l2, "k", &tags).await, None);

        // A load that began after it is stored, and served.
        let after = stamp(&l2, "k", &tags).await;
        l2.store("users", "k", &tags, after, b"new".to_vec(), ttl)
            .await;
        assert_eq!(cached(&l2, "k", &tags).await.as_deref(), Some(&b"new"[..]));

        // Invalidating either tag removes it; another cache's tag does not.
        l2.invalidate_tags(&["users.viewers".into()], &["user:1"])
            .await;
        assert!(cached(&l2, "k", &tags).await.is_some());
        l2.invalidate_tags(&["users".into(), "users.viewers".into()], &["user:1"])
            .await;
        assert_eq!(cached(&l2, "k", &tags).await, None);
    }

    #[tokio::test]
    async fn an_invalidation_lost_while_redis_was_away_orphans_every_older_entry() {
        let server = Server::start();
        let l2 = client(server.1);
        let tags = tags(&["user:2"]);
        let fresh = stamp(&l2, "k", &tags).await;
        l2.store(
            "users",
            "k",
            &tags,
            fresh,
            b"v".to_vec(),
            Duration::from_secs(60),
        )
        .await;
        assert!(cached(&l2, "k", &tags).await.is_some());

        // Pretend the invalidation of user:2 could not reach Redis.
        l2.inner.dirty.store(true, Ordering::Release);
        // The next call starts a new epoch: the old entry is gone for readers.
        assert_eq!(cached(&l2, "k", &tags).await, None);
        assert!(!l2.inner.dirty.load(Ordering::Acquire));
        drop(server);
    }

    #[tokio::test]
    async fn redis_down_is_a_miss_without_a_stamp_and_a_degraded_status() {
        let server = Server::start();
        let l2 = client(server.1);
        drop(server);
        assert!(l2.lookup("users", "k", &tags(&["user:3"])).await.is_none());
        let status = l2.status(Duration::from_millis(200)).await;
        assert_eq!(status.status, Status::Degraded);
        assert!(status.error.is_some());
    }
}
