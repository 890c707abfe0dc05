//! The bounded in-memory cache of verified media (`--cache-bytes`), keyed by link id.
//! Concurrent misses for one id share one fetch (moka's `try_get_with`), and only
//! whole, verified bodies ever enter it: a failed fetch caches nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::http::HeaderValue;
use bytes::Bytes;

use crate::ids::LinkId;
use crate::sniff::MediaType;

/// Verified bytes with the response headers they need, computed once per entry so a
/// hit formats nothing.
#[derive(Debug)]
pub struct Media {
    pub bytes: Bytes,
    pub media_type: MediaType,
    /// What the upstream sent, when the bytes were converted.
    pub converted_from: Option<MediaType>,
    pub expires_at: Option<i64>,
    pub content_type: HeaderValue,
    pub content_length: HeaderValue,
    pub etag: HeaderValue,
}

impl Media {
    pub fn new(
        bytes: Bytes,
        media_type: MediaType,
        converted_from: Option<MediaType>,
        expires_at: Option<i64>,
    ) -> Self {
        // A strong validator only has to change when the bytes do; it is not a
        // security boundary (blobs, which are, use SHA-256). XXH3 hashes at memory
        // speed, where SHA-256 cost a cold 1 MB answer about a third of its time.
        // twox-hash picks AVX2 at run time where the CPU has it (a build for plain
        // x86-64 otherwise runs the SSE2 loop); the value is the same either way, so
        // replicas on different CPUs agree on every ETag.
        let digest = twox_hash::XxHash3_128::oneshot(&bytes);
        Self {
            content_type: HeaderValue::from_static(media_type.mime()),
            content_length: HeaderValue::from(bytes.len()),
            // Hex inside quotes: always a valid header value.
            etag: HeaderValue::from_str(&format!("\"{digest:032x}\""))
                .unwrap_or(HeaderValue::from_static("\"0\"")),
            bytes,
            media_type,
            converted_from,
            expires_at,
        }
    }
}

/// Entries at least this long are kept in a file (see `zerocopy`), so plain-TCP answers can send
/// them with `sendfile`; smaller ones cost more in fds and page rounding than the
/// copy they would save.
#[cfg(target_os = "linux")]
const SENDFILE_MIN: usize = 32 * 1024;

/// The entry as it will be cached: its bytes moved into a file when they
/// are worth it and a file can be had, else copied into memory of their own size.
/// A fetched body can be a slice of the HTTP client's larger read buffer (`fetch`
/// does not copy a body that arrived in one read); cached as it is, it would keep the
/// whole buffer alive while the cache counts only the slice.
fn for_sendfile(mut media: Media) -> Media {
    #[cfg(target_os = "linux")]
    if media.bytes.len() >= SENDFILE_MIN {
        match crate::zerocopy::into_file(&media.bytes) {
            Ok(b) => {
                media.bytes = b;
                return media;
            }
            Err(e) => tracing::debug!(error = %e, "cached media kept in plain memory"),
        }
    }
    media.bytes = Bytes::copy_from_slice(&media.bytes);
    media
}

/// moka applies evictions lazily, on later accesses; after an insert, apply them
/// now, so the bytes held stay within `--cache-bytes` rather than a few dozen
/// entries over it (measured: 277 MiB held under a 256 MiB bound without this).
/// Only misses insert, and a miss has just paid for a whole fetch.
async fn evict_now(c: &moka::future::Cache<LinkId, Arc<Media>>) {
    c.run_pending_tasks().await;
}

#[derive(Clone)]
pub struct MediaCache {
    inner: Option<moka::future::Cache<LinkId, Arc<Media>>>,
}

impl MediaCache {
    /// `max_bytes` 0 disables caching: every request goes to the upstream.
    pub fn new(max_bytes: u64) -> Self {
        let inner = (max_bytes > 0).then(|| {
            moka::future::Cache::builder()
                .max_capacity(max_bytes)
                // Count the bytes plus a little for the entry itself; moka weights are u32.
                .weigher(|_, m: &Arc<Media>| u32::try_from(m.bytes.len() + 256).unwrap_or(u32::MAX))
                .build()
        });
        Self { inner }
    }

    pub async fn get(&self, id: &LinkId) -> Option<Arc<Media>> {
        self.inner.as_ref()?.get(id).await
    }

    /// Returns the cached media or runs `fetch` once for all concurrent callers, and
    /// whether this call was the one that ran it (false: it waited for another's).
    pub async fn get_or_fetch<E, F>(
        &self,
        id: &LinkId,
        fetch: F,
    ) -> Result<(Arc<Media>, bool), Arc<E>>
    where
        F: std::future::Future<Output = Result<Media, E>>,
        E: Send + Sync + 'static,
    {
        let Some(c) = &self.inner else {
            return fetch.await.map(|m| (Arc::new(m), true)).map_err(Arc::new);
        };
        let ran = AtomicBool::new(false);
        let got = c
            .try_get_with(id.clone(), async {
                ran.store(true, Ordering::Relaxed);
                fetch.await.map(|m| Arc::new(for_sendfile(m)))
            })
            .await?;
        let ran = ran.load(Ordering::Relaxed);
        if ran {
            evict_now(c).await;
        }
        Ok((got, ran))
    }

    pub async fn insert(&self, id: LinkId, media: Media) {
        if let Some(c) = &self.inner {
            c.insert(id, Arc::new(for_sendfile(media))).await;
            evict_now(c).await;
        }
    }

    pub async fn invalidate(&self, id: &LinkId) {
        if let Some(c) = &self.inner {
            c.invalidate(id).await;
        }
    }

    pub fn invalidate_all(&self) {
        if let Some(c) = &self.inner {
            c.invalidate_all();
        }
    }

    /// Bytes currently held (approximate: moka applies writes lazily).
    pub fn weighted_size(&self) -> u64 {
        self.inner.as_ref().map_or(0, |c| c.weighted_size())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fetched body can be a slice of a bigger buffer; the cache must not keep
    /// that buffer alive behind an entry it counts at the slice's size.
    #[test]
    fn a_small_cached_entry_holds_its_own_bytes() {
        let buffer = Bytes::from(vec![7u8; 64 * 1024]);
        let slice = buffer.slice(100..1100);
        let cached = for_sendfile(Media::new(slice.clone(), MediaType::Jpeg, None, None));
        assert_eq!(cached.bytes, slice);
        assert!(!buffer.as_ptr_range().contains(&cached.bytes.as_ptr()));
    }

    /// ETags outlive a process (clients keep them, replicas share links): the hash
    /// must stay XXH3-128 as the reference C library computes it.
    #[test]
    fn etag_is_reference_xxh3_128() {
        let etag = |b: Vec<u8>| Media::new(Bytes::from(b), MediaType::Jpeg, None, None).etag;
        // Values from the C library (Python's `xxhash.xxh3_128_hexdigest`).
        assert_eq!(etag(Vec::new()), "\"99aa06d3014798d86001c324468d497f\"");
        // 102,400 bytes: the long-input loop that runs on SIMD.
        let long: Vec<u8> = (0..400).flat_map(|_| 0..=255u8).collect();
        assert_eq!(etag(long), "\"3c5b68c696094899ce44193c6ac50be2\"");
    }
}
