//! One Redis server's link: a writer that drains the outbox into pipelined `XADD`s, and a
//! reader that follows every partition stream the server holds with blocking `XREAD`s.
//!
//! A link that fails reconnects with backoff and carries on from where it was: the writer
//! from the first unconfirmed message, the reader from the last stream id it read. On every
//! reconnect it reads the server's epoch key; a different epoch means Redis came back without
//! its streams (a restart without persistence), so the reader starts the new streams from
//! their beginning and the writer writes its replay window again. A stream whose newest entry
//! is older than the last one this node wrote there was restored from an older snapshot, and
//! gets the same treatment for that partition.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, RedisResult, Value as RedisValue};

use super::Cluster;
use super::client::{redacted, redis_client};
use super::envelope::{Envelope, EnvelopeError};
use super::outbox::{Seen, Verdict};
use crate::hub::Node;

/// How long one `XREAD` blocks waiting for entries.
const BLOCK_MS: u64 = 1000;
/// Entries one `XREAD` returns at most.
const READ_COUNT: usize = 1024;
/// The start of every stream.
const ORIGIN_ID: &str = "0-0";

/// What a link remembers across reconnects.
#[derive(Default)]
struct Memory {
    epoch: Option<String>,
    /// Last id read, per partition.
    positions: HashMap<usize, String>,
    /// Last id this node wrote, per partition.
    written: HashMap<usize, String>,
    seen: Seen,
}

/// A stream id, comparable.
fn parse_id(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

/// Runs the link to Redis server `server` until the process ends.
pub async fn run(node: Arc<Node>, cluster: Arc<Cluster>, server: usize) {
    let raw = cluster.config.redis_urls[server].clone();
    let url = redacted(&raw);
    let client = match redis_client(&cluster.config, &raw) {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(%url, "cannot use this Redis URL: {e}");
            return;
        }
    };
    let partitions = cluster.partitions_of(server);
    let mut memory = Memory::default();
    let max_backoff = Duration::from_millis(cluster.config.reconnect_max_ms);
    let mut backoff = Duration::from_millis(50).min(max_backoff);
    let mut failures = 0u64;
    loop {
        let result = session(&node, &cluster, server, &client, &partitions, &mut memory).await;
        let was_up = cluster.links[server].up.load(Ordering::Relaxed);
        cluster.set_link(server, false);
        if let Err(e) = result {
            cluster.link_failed(server, format!("{url}: {e}"));
            if was_up {
                tracing::warn!(%url, "lost Redis; delivering locally and buffering cluster messages until it returns: {e}");
                backoff = Duration::from_millis(50).min(max_backoff);
            } else if failures.is_multiple_of(20) {
                tracing::warn!(%url, "cannot reach Redis: {e}");
            }
            failures += 1;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(max_backoff);
    }
}

async fn connect(client: &redis::Client, response: Duration) -> RedisResult<MultiplexedConnection> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(response));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

/// The newest id of a stream, if it has entries.
async fn newest(conn: &mut MultiplexedConnection, key: &str) -> RedisResult<Option<String>> {
    let reply: RedisValue = redis::cmd("XREVRANGE")
        .arg(key)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(conn)
        .await?;
    Ok(entries(&reply).into_iter().next().map(|(id, _)| id))
}

/// Where a reader resumes a stream whose newest entry is `top`, having read up to `position`
/// (none: it never has, and starts from what arrives next). A stream that went back in time
/// — a failover to a replica that had not received the last entries, a restore from an older
/// snapshot — is read from its new top: entries written there from now on may carry ids
/// below the old position (the new primary's clock may be behind), and must not be skipped.
/// Anything read twice is dropped by its (origin, sequence).
fn resume_from(position: Option<&str>, top: Option<&str>) -> String {
    let top = top.unwrap_or(ORIGIN_ID);
    match position {
        Some(position) if parse_id(position) <= parse_id(top) => position.to_string(),
        _ => top.to_string(),
    }
}

/// One connected stretch: returns when the connection fails.
async fn session(
    node: &Arc<Node>,
    cluster: &Arc<Cluster>,
    server: usize,
    client: &redis::Client,
    partitions: &[usize],
    memory: &mut Memory,
) -> RedisResult<()> {
    let mut writer = connect(client, Duration::from_secs(5)).await?;
    let mut reader = connect(client, Duration::from_millis(BLOCK_MS + 5000)).await?;
    let stats = &cluster.stats;

    let epoch_key = format!("{}:epoch", cluster.config.stream_prefix);
    let candidate = format!("{:016x}", rand::random::<u64>());
    let _: RedisValue = redis::cmd("SET")
        .arg(&epoch_key)
        .arg(&candidate)
        .arg("NX")
        .query_async(&mut writer)
        .await?;
    let epoch: String = redis::cmd("GET")
        .arg(&epoch_key)
        .query_async(&mut writer)
        .await?;
    stats.commands.fetch_add(2, Ordering::Relaxed);
    let reconnect = memory.epoch.is_some();
    let lost = memory.epoch.as_ref().is_some_and(|e| *e != epoch);
    let now = Instant::now();
    let mut replay = Vec::new();
    for &p in partitions {
        let key = cluster.stream_key(p);
        let top = newest(&mut writer, &key).await?;
        stats.commands.fetch_add(1, Ordering::Relaxed);
        if lost {
            memory.positions.insert(p, ORIGIN_ID.to_string());
            replay.push(p);
            continue;
        }
        // The stream went back in time: entries this node wrote are gone.
        if let Some(written) = memory.written.get(&p)
            && top
                .as_deref()
                .is_none_or(|top| parse_id(top) < parse_id(written))
        {
            replay.push(p);
        }
        let position = resume_from(memory.positions.get(&p).map(String::as_str), top.as_deref());
        memory.positions.insert(p, position);
    }
    if lost {
        stats.epoch_changes.fetch_add(1, Ordering::Relaxed);
    }
    if !replay.is_empty() {
        let n = cluster.outbox().replay(&replay, now);
        stats.replayed.fetch_add(n as u64, Ordering::Relaxed);
        tracing::warn!(
            partitions = replay.len(),
            replayed = n,
            "Redis came back without recent cluster messages; writing them again"
        );
    }
    memory.epoch = Some(epoch);
    if reconnect {
        stats.reconnects.fetch_add(1, Ordering::Relaxed);
        tracing::info!(url = %redacted(&cluster.config.redis_urls[server]), "Redis is back; resuming the backplane");
    }
    cluster.set_link(server, true);

    let Memory {
        positions,
        written,
        seen,
        ..
    } = memory;
    tokio::select! {
        r = write_loop(cluster, server, partitions, &mut writer, written) => r,
        r = read_loop(node, cluster, partitions, &mut reader, positions, seen) => r,
    }
}

async fn write_loop(
    cluster: &Cluster,
    server: usize,
    partitions: &[usize],
    conn: &mut MultiplexedConnection,
    written: &mut HashMap<usize, String>,
) -> RedisResult<()> {
    let config = &cluster.config;
    let stats = &cluster.stats;
    let keys: HashMap<usize, String> = partitions
        .iter()
        .map(|p| (*p, cluster.stream_key(*p)))
        .collect();
    // Age-based trimming need not be precise: a tenth of the retention age, 1 to 60 s.
    let every = Duration::from_millis(config.stream_max_age_ms / 10)
        .clamp(Duration::from_secs(1), Duration::from_secs(60));
    let mut trim = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    trim.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let max_backoff = Duration::from_millis(config.reconnect_max_ms);
    // While Redis refuses writes: the current wait between attempts.
    let mut refused: Option<Duration> = None;
    let mut trim_refused = false;
    let url = redacted(&config.redis_urls[server]);
    loop {
        let batch = cluster.outbox().peek(partitions, config.batch_max_messages);
        if batch.is_empty() {
            tokio::select! {
                () = cluster.wake(server).notified() => {}
                _ = trim.tick() => {
                    // Age-based retention; the length cap is applied by every XADD.
                    let min_ms = super::unix_us() / 1000;
                    let min_ms = min_ms.saturating_sub(config.stream_max_age_ms);
                    let mut pipe = redis::pipe();
                    for key in keys.values() {
                        pipe.cmd("XTRIM").arg(key).arg("MINID").arg("~").arg(format!("{min_ms}-0")).ignore();
                    }
                    stats.commands.fetch_add(keys.len() as u64, Ordering::Relaxed);
                    match pipe.query_async::<()>(conn).await {
                        Ok(()) => {
                            stats.trims.fetch_add(1, Ordering::Relaxed);
                        }
                        // Not worth losing the link over: the length cap still bounds the
                        // streams.
                        Err(e) if refuses_writes(&e) => {
                            stats.trims_refused.fetch_add(1, Ordering::Relaxed);
                            if !trim_refused {
                                tracing::warn!(%url, "Redis refuses XTRIM; streams are bounded by cluster.stream_max_len only: {e}");
                                trim_refused = true;
                            }
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
            continue;
        }
        let mut pipe = redis::pipe();
        for entry in &batch {
            pipe.cmd("XADD")
                .arg(&keys[&entry.partition])
                .arg("MAXLEN")
                .arg("~")
                .arg(config.stream_max_len)
                .arg("*")
                .arg("e")
                .arg(&entry.bytes[..]);
        }
        let ids: Vec<String> = match pipe.query_async(conn).await {
            Ok(ids) => ids,
            Err(e) if refuses_writes(&e) => {
                // The connection is fine and reads go on; the entries stay queued and are
                // written again (receivers drop any that had gone in).
                stats
                    .commands
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                if refused.is_none() {
                    tracing::warn!(%url, "Redis refuses cluster messages; holding them until it accepts: {e}");
                }
                cluster.set_link(server, false);
                cluster.link_failed(server, format!("{url}: {e}"));
                let wait = refused
                    .map_or(Duration::from_millis(50), |w: Duration| w * 2)
                    .min(max_backoff);
                refused = Some(wait);
                tokio::time::sleep(wait).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        if refused.take().is_some() {
            tracing::info!(%url, "Redis accepts cluster messages again");
            cluster.set_link(server, true);
        }
        stats
            .commands
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        stats
            .written
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        for (entry, id) in batch.iter().zip(ids) {
            written.insert(entry.partition, id);
        }
        cluster.outbox().written(&batch, Instant::now());
    }
}

/// Whether `e` is Redis refusing writes on a sound connection — out of memory with no
/// eviction (`OOM`), a missing permission (`NOPERM`), a busy script — rather than a broken
/// connection. A read-only replica (`READONLY`, after a failover) is not: reconnecting may
/// reach the new primary.
fn refuses_writes(e: &redis::RedisError) -> bool {
    use redis::{ErrorKind, ServerErrorKind};
    match e.kind() {
        ErrorKind::Server(ServerErrorKind::ReadOnly) => false,
        ErrorKind::Server(_) | ErrorKind::Extension => true,
        _ => false,
    }
}

async fn read_loop(
    node: &Arc<Node>,
    cluster: &Arc<Cluster>,
    partitions: &[usize],
    conn: &mut MultiplexedConnection,
    positions: &mut HashMap<usize, String>,
    seen: &mut Seen,
) -> RedisResult<()> {
    let stats = &cluster.stats;
    let keys: Vec<String> = partitions.iter().map(|p| cluster.stream_key(*p)).collect();
    let by_key: HashMap<&str, usize> = keys
        .iter()
        .zip(partitions)
        .map(|(k, p)| (k.as_str(), *p))
        .collect();
    loop {
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT")
            .arg(READ_COUNT)
            .arg("BLOCK")
            .arg(BLOCK_MS)
            .arg("STREAMS");
        for key in &keys {
            cmd.arg(key);
        }
        for p in partitions {
            cmd.arg(positions.get(p).map_or(ORIGIN_ID, String::as_str));
        }
        let reply: RedisValue = cmd.query_async(conn).await?;
        stats.commands.fetch_add(1, Ordering::Relaxed);
        for (key, stream) in streams(&reply) {
            let Some(&partition) = by_key.get(key.as_str()) else {
                continue;
            };
            for (id, data) in entries(stream) {
                positions.insert(partition, id);
                let Some(data) = data else {
                    stats.undecodable.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let env = match Envelope::decode(data) {
                    Ok(env) => env,
                    // A node of a later release, out of step with this one (see
                    // envelope's versioning rule): skipped, counted, said once.
                    Err(e @ EnvelopeError::Newer(_)) => {
                        if stats.newer_version.fetch_add(1, Ordering::Relaxed) == 0 {
                            tracing::warn!(
                                "skipping cluster messages from a newer Herald; every node must run this release or the next one: {e}"
                            );
                        }
                        continue;
                    }
                    Err(e) => {
                        if stats.undecodable.fetch_add(1, Ordering::Relaxed) == 0 {
                            tracing::warn!("skipping a cluster message this node cannot read: {e}");
                        }
                        continue;
                    }
                };
                if env.origin == cluster.origin {
                    continue;
                }
                match seen.check(env.origin, env.partition, env.seq) {
                    Verdict::Duplicate => {
                        stats.duplicates.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    Verdict::Gap { missing } => {
                        stats.gaps.fetch_add(missing, Ordering::Relaxed);
                    }
                    Verdict::New => {}
                }
                stats.read.fetch_add(1, Ordering::Relaxed);
                stats.lag_us.store(
                    super::unix_us().saturating_sub(env.sent_us),
                    Ordering::Relaxed,
                );
                super::inbound::apply(node, cluster, env).await;
            }
        }
    }
}

/// The (key, entries) pairs of an `XREAD` reply (RESP2 arrays or RESP3 maps).
fn streams(reply: &RedisValue) -> Vec<(String, &RedisValue)> {
    let text = |v: &RedisValue| match v {
        RedisValue::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        RedisValue::SimpleString(s) => Some(s.clone()),
        _ => None,
    };
    match reply {
        RedisValue::Array(items) => items
            .iter()
            .filter_map(|item| match item {
                RedisValue::Array(pair) if pair.len() == 2 => Some((text(&pair[0])?, &pair[1])),
                _ => None,
            })
            .collect(),
        RedisValue::Map(pairs) => pairs
            .iter()
            .filter_map(|(k, v)| Some((text(k)?, v)))
            .collect(),
        _ => Vec::new(),
    }
}

/// The (id, field "e") pairs of a list of stream entries.
fn entries(list: &RedisValue) -> Vec<(String, Option<&[u8]>)> {
    let RedisValue::Array(items) = list else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|item| {
            let RedisValue::Array(entry) = item else {
                return None;
            };
            let id = match entry.first()? {
                RedisValue::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                RedisValue::SimpleString(s) => s.clone(),
                _ => return None,
            };
            let data = match entry.get(1) {
                Some(RedisValue::Array(fields)) => fields.chunks(2).find_map(|kv| match kv {
                    [RedisValue::BulkString(k), RedisValue::BulkString(v)] if k == b"e" => {
                        Some(v.as_slice())
                    }
                    _ => None,
                }),
                _ => None,
            };
            Some((id, data))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_compare_numerically() {
        assert!(parse_id("1700000000000-10") > parse_id("1700000000000-9"));
        assert!(parse_id("999-0") < parse_id("1000-0"));
        assert_eq!(parse_id("0-0"), (0, 0));
    }

    #[test]
    fn parses_xread_replies() {
        let bulk = |s: &[u8]| RedisValue::BulkString(s.to_vec());
        let reply = RedisValue::Array(vec![RedisValue::Array(vec![
            bulk(b"herald:3"),
            RedisValue::Array(vec![
                RedisValue::Array(vec![
                    bulk(b"1-0"),
                    RedisValue::Array(vec![bulk(b"e"), bulk(b"\x01abc")]),
                ]),
                RedisValue::Array(vec![
                    bulk(b"1-1"),
                    RedisValue::Array(vec![bulk(b"x"), bulk(b"y")]),
                ]),
            ]),
        ])]);
        let s = streams(&reply);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].0, "herald:3");
        let e = entries(s[0].1);
        assert_eq!(
            e,
            vec![
                ("1-0".to_string(), Some(&b"\x01abc"[..])),
                ("1-1".to_string(), None)
            ]
        );
        assert!(streams(&RedisValue::Nil).is_empty());
    }

    #[test]
    fn readers_resume_where_they_were_unless_the_stream_went_back() {
        // First connection: from the stream's top (or its start when empty).
        assert_eq!(resume_from(None, Some("50-1")), "50-1");
        assert_eq!(resume_from(None, None), ORIGIN_ID);
        // Reconnection to the same stream, grown meanwhile: where the reader was.
        assert_eq!(resume_from(Some("40-0"), Some("50-1")), "40-0");
        assert_eq!(resume_from(Some("50-1"), Some("50-1")), "50-1");
        // A stream that lost its newest entries (failover, older snapshot): its new top.
        assert_eq!(resume_from(Some("60-3"), Some("50-1")), "50-1");
        assert_eq!(resume_from(Some("60-3"), None), ORIGIN_ID);
    }
}
