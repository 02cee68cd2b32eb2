//! Tags: each tag's set of keys (`{prefix}t:{tag}`, expiring with its longest-lived member) and its generation
//! (`{prefix}g:{tag}`), which an invalidation increments first and a read compares with the generations the value
//! recorded when it was written (the `TKG` header), so no server serves an entry stored before an invalidation.

use super::{RedisStore, SCAN_COUNT};
use crate::store::{StoreError, codec};

impl RedisStore {
    /// The current generations of `tags` (0 for a tag never invalidated). One `MGET` on a single server; on a
    /// cluster one `GET` per tag on its own shard, concurrently, each through its node's breaker.
    pub(super) async fn generations(
        &self,
        operation: &'static str,
        tags: &[String],
    ) -> Result<Vec<u64>, StoreError> {
        if tags.is_empty() {
            return Ok(Vec::new());
        }
        if !self.inner.redis.is_cluster() {
            let keys: Vec<String> = tags.iter().map(|t| self.generation_key(t)).collect();
            let gens: Vec<Option<u64>> = self
                .query(operation, async |c| {
                    redis::cmd("MGET").arg(&keys).query_async(c).await
                })
                .await?;
            return Ok(gens.into_iter().map(Option::unwrap_or_default).collect());
        }
        let reads = tags.iter().map(|tag| async move {
            let key = self.generation_key(tag);
            let generation: Option<u64> = self
                .query_keyed(operation, &key, async |c| {
                    redis::cmd("GET").arg(&key).query_async(c).await
                })
                .await?;
            Ok::<_, StoreError>(generation.unwrap_or_default())
        });
        futures_util::future::try_join_all(reads).await
    }

    /// Adds `key` to the set of `tag` (Redis key `tkey`) in `pipe`: a new set gets the entry's TTL `ms`; an
    /// existing one is only ever extended, so a set lives as long as its longest-lived member.
    pub(super) fn add_to_tag_set(pipe: &mut redis::Pipeline, tkey: &str, key: &str, ms: u64) {
        pipe.cmd("SADD").arg(tkey).arg(key).ignore();
        pipe.cmd("PEXPIRE").arg(tkey).arg(ms).arg("NX").ignore();
        pipe.cmd("PEXPIRE").arg(tkey).arg(ms).arg("GT").ignore();
    }

    /// On a cluster, after the value is written: each tag set on its own shard. Not one transaction with the
    /// value: an invalidation that runs in between may miss this key in the set, but the generations the value
    /// recorded still keep it from being served.
    pub(super) async fn add_to_tag_sets_cluster(
        &self,
        key: &str,
        tags: &[String],
        ms: u64,
    ) -> Result<(), StoreError> {
        for tag in tags {
            let tkey = self.tag_key(tag);
            let mut pipe = redis::pipe();
            Self::add_to_tag_set(&mut pipe, &tkey, key, ms);
            self.query_keyed("put", &tkey, async |c| pipe.query_async::<()>(c).await)
                .await?;
        }
        Ok(())
    }

    /// Invalidates `tag`: its generation first (from then on no server serves an entry stored earlier with it),
    /// then the entries its set lists, then the set.
    pub(super) async fn invalidate_tag(&self, tag: &str) -> Result<u64, StoreError> {
        // First the generation: from here on no server serves an entry stored earlier with this tag (reads
        // compare generations); deleting the entries below only reclaims their memory.
        let gkey = self.generation_key(tag);
        let _: u64 = self
            .query_keyed("remove_tag", &gkey, async |c| {
                redis::cmd("INCR").arg(&gkey).query_async(c).await
            })
            .await?;
        let tkey = self.tag_key(tag);
        let members: Vec<String> = self
            .query("remove_tag", async |c| {
                redis::cmd("SMEMBERS").arg(&tkey).query_async(c).await
            })
            .await?;
        let mut removed = 0;
        for chunk in members.chunks(SCAN_COUNT) {
            let rkeys: Vec<String> = chunk.iter().map(|k| self.redis_key(k)).collect();
            let raws: Vec<Option<Vec<u8>>> = self
                .query("remove_tag", async |c| {
                    redis::cmd("MGET").arg(&rkeys).query_async(c).await
                })
                .await?;
            // A key re-written without the tag since it joined the set is left alone.
            let tagged: Vec<&String> = rkeys
                .iter()
                .zip(raws)
                .filter(|(_, raw)| {
                    raw.as_deref()
                        .and_then(|raw| codec::decode(split_generations(raw).1))
                        .is_some_and(|v| v.tags().iter().any(|t| t == tag))
                })
                .map(|(k, _)| k)
                .collect();
            if !tagged.is_empty() {
                let n: u64 = self
                    .query("remove_tag", async |c| {
                        redis::cmd("DEL").arg(&tagged).query_async(c).await
                    })
                    .await?;
                removed += n;
            }
        }
        let _: u64 = self
            .query("remove_tag", async |c| {
                redis::cmd("DEL").arg(&tkey).query_async(c).await
            })
            .await?;
        Ok(removed)
    }
}

/// The header of a value with tags: `b"TKG"`, the number of tags (u16, big endian), then the generation of each
/// tag when the value was written (u64, big endian), in the order of the entry's tags; the encoded entry follows.
const GENERATIONS_MAGIC: &[u8; 3] = b"TKG";

pub(super) fn with_generations(generations: &[u64], encoded: Vec<u8>) -> Vec<u8> {
    if generations.is_empty() {
        return encoded;
    }
    let count = u16::try_from(generations.len()).unwrap_or(u16::MAX);
    let mut raw = Vec::with_capacity(5 + 8 * generations.len() + encoded.len());
    raw.extend_from_slice(GENERATIONS_MAGIC);
    raw.extend_from_slice(&count.to_be_bytes());
    for g in generations.iter().take(usize::from(count)) {
        raw.extend_from_slice(&g.to_be_bytes());
    }
    raw.extend_from_slice(&encoded);
    raw
}

/// The stored generations (empty without a header; `None` for a truncated header) and the encoded entry.
pub(super) fn split_generations(raw: &[u8]) -> (Option<Vec<u64>>, &[u8]) {
    let Some(rest) = raw.strip_prefix(GENERATIONS_MAGIC) else {
        return (Some(Vec::new()), raw);
    };
    let Some((count, rest)) = rest.split_first_chunk::<2>() else {
        return (None, raw);
    };
    let count = usize::from(u16::from_be_bytes(*count));
    let Some((header, encoded)) = rest.split_at_checked(8 * count) else {
        return (None, raw);
    };
    let generations = header
        .chunks_exact(8)
        .map(|c| {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            u64::from_be_bytes(b)
        })
        .collect();
    (Some(generations), encoded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_headers_round_trip() {
        let encoded = b"TKC\x02rest".to_vec();
        assert_eq!(with_generations(&[], encoded.clone()), encoded);
        let raw = with_generations(&[0, 7, u64::MAX], encoded.clone());
        assert_eq!(
            split_generations(&raw),
            (Some(vec![0, 7, u64::MAX]), &encoded[..])
        );
        assert_eq!(split_generations(&encoded), (Some(vec![]), &encoded[..]));
        assert_eq!(split_generations(&raw[..10]).0, None, "truncated");
    }
}
