//! Link creation and presentation: turns a create request into a stored link (through
//! canonicalization, the creation-time address check, optional verification) and a
//! stored link into the JSON of DESIGN §3.
//!
//! It never speaks HTTP; handlers in `api::links` do.

use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use futures_util::StreamExt;

use crate::blobs::{BlobError, BlobId};
use crate::cache::Media;
use crate::canon::{CanonError, CanonicalUrl};
use crate::fetch::FetchError;
use crate::ids::LinkId;
use crate::media::verify::{self, MediaError};
use crate::policy::Kind;
use crate::sniff::MediaType;
use crate::state::AppState;
use crate::store::{IdPlan, LinkRecord, MediaInfo, NewLink, Put, StoreError, now_unix};

/// Longest `expires_in` accepted: ten years.
const MAX_EXPIRES_IN: u64 = 10 * 365 * 24 * 3600;

/// The body of `POST /api/v1/links` (or one item of an array).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateLink {
    pub url: String,
    #[serde(default = "default_kind")]
    pub kind: Kind,
    #[serde(default)]
    pub verify: bool,
    #[serde(default)]
    pub convert: Option<bool>,
    #[serde(default)]
    pub pin: Option<bool>,
    #[serde(default)]
    pub expires_in: Option<u64>,
}

fn default_kind() -> Kind {
    Kind::Any
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error(transparent)]
    Url(#[from] CanonError),
    #[error("expires_in must be between 1 and {MAX_EXPIRES_IN} seconds")]
    BadExpiry,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the id {0} is already used by another URL")]
    IdConflict(LinkId),
    /// The upstream's address is refused for sure (DESIGN §5, checked at creation).
    #[error(transparent)]
    Forbidden(FetchError),
    /// `verify: true` and the media is not acceptable.
    #[error(transparent)]
    Media(MediaError),
    #[error(transparent)]
    Blob(BlobError),
}

/// A link as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LinkView {
    #[schema(value_type = String, example = "k3J9aQ2mZx")]
    pub id: LinkId,
    pub short_url: String,
    pub url: String,
    pub kind: Kind,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media: Option<MediaView>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MediaView {
    pub content_type: String,
    pub bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub converted_from: Option<String>,
}

pub fn rfc3339(unix: i64) -> String {
    rfc3339_shown(unix).to_string()
}

fn rfc3339_shown(unix: i64) -> impl std::fmt::Display {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unix.max(0) as u64))
}

/// The short URL's extension: from the verified media type when known, else from the
/// upstream path when it names a media type, else none (DESIGN §2).
pub fn extension(record: &LinkRecord) -> Option<&'static str> {
    if let Some(m) = &record.media
        && let Some(t) = MediaType::from_mime(&m.content_type)
    {
        return Some(t.ext());
    }
    record
        .url
        .path_extension()
        .and_then(|e| MediaType::from_ext(&e))
        .map(MediaType::ext)
}

pub fn short_url(public_base: &str, record: &LinkRecord) -> String {
    ShortUrl(public_base, record).to_string()
}

struct ShortUrl<'a>(&'a str, &'a LinkRecord);

impl std::fmt::Display for ShortUrl<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (base, record) = (self.0, self.1);
        match extension(record) {
            Some(ext) => write!(f, "{base}/m/{}.{ext}", record.id),
            None => write!(f, "{base}/m/{}", record.id),
        }
    }
}

/// Serializes anything `Display` as a string, written straight into the output.
struct Shown<T>(T);

impl<T: std::fmt::Display> Serialize for Shown<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

/// The same JSON as `view`, written from the record without building a `LinkView`:
/// an array of 1,000 links built four strings per link only to serialize them.
pub struct ViewRef<'a> {
    pub public_base: &'a str,
    pub record: &'a LinkRecord,
}

impl Serialize for ViewRef<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let r = self.record;
        let mut st = s.serialize_struct("LinkView", 7)?;
        st.serialize_field("id", &r.id)?;
        st.serialize_field("short_url", &Shown(ShortUrl(self.public_base, r)))?;
        st.serialize_field("url", r.url.as_str())?;
        st.serialize_field("kind", &r.kind)?;
        st.serialize_field("created_at", &Shown(rfc3339_shown(r.created_at)))?;
        match r.expires_at {
            Some(t) => st.serialize_field("expires_at", &Shown(rfc3339_shown(t)))?,
            None => st.skip_field("expires_at")?,
        }
        match &r.media {
            Some(m) => st.serialize_field(
                "media",
                &MediaView {
                    content_type: m.content_type.clone(),
                    bytes: m.bytes,
                    converted_from: m.converted_from.clone(),
                },
            )?,
            None => st.skip_field("media")?,
        }
        st.end()
    }
}

/// The id inside a short URL (`.../m/{id}[.ext]`), whatever its host.
pub fn id_in_short_url(short_url: &str) -> Option<LinkId> {
    let (_, file) = short_url.rsplit_once("/m/")?;
    let file = file.split(['?', '#']).next().unwrap_or(file);
    LinkId::parse(file.split_once('.').map_or(file, |(id, _)| id))
}

pub fn view(public_base: &str, record: &LinkRecord) -> LinkView {
    LinkView {
        id: record.id.clone(),
        short_url: short_url(public_base, record),
        url: record.url.as_str().to_owned(),
        kind: record.kind,
        created_at: rfc3339(record.created_at),
        expires_at: record.expires_at.map(rfc3339),
        media: record.media.as_ref().map(|m| MediaView {
            content_type: m.content_type.clone(),
            bytes: m.bytes,
            converted_from: m.converted_from.clone(),
        }),
    }
}

/// What a create produced.
#[derive(Debug, Clone)]
pub struct Created {
    pub record: LinkRecord,
    /// False when the URL was already stored (idempotent create: `200`).
    pub created: bool,
}

/// Everything about one request that can be decided before the store is touched.
fn prepare(state: &AppState, req: &CreateLink, now: i64) -> Result<NewLink, LinkError> {
    let url = CanonicalUrl::parse(&req.url)?;
    let expires_at = match req.expires_in {
        None => None,
        Some(s) if (1..=MAX_EXPIRES_IN).contains(&s) => Some(now + s as i64),
        Some(_) => return Err(LinkError::BadExpiry),
    };
    Ok(NewLink {
        plan: IdPlan::Derived(state.links.inner().id_key().derive(&url)),
        url,
        kind: req.kind,
        created_at: now,
        expires_at,
        convert: req.convert,
        media: None::<MediaInfo>,
        blob: None,
    })
}

/// An item that passed its checks: the link to insert and, when verified, its media.
type Checked = Result<(NewLink, Option<Media>), LinkError>;

/// Verifications run at once for one batch; each may download up to the policy's limit.
const VERIFY_CONCURRENCY: usize = 16;

/// A failed creation-time address check as the link layer reports it.
fn creation_error(e: FetchError) -> LinkError {
    match e {
        FetchError::Forbidden { .. } => LinkError::Forbidden(e),
        other => LinkError::Media(MediaError::Fetch(other)),
    }
}

/// The creation-time address check and, with `verify: true`, the whole pipeline.
/// Returns the verified media to store with the link and to warm the cache with.
async fn check(
    state: &AppState,
    req: &CreateLink,
    new: &NewLink,
) -> Result<Option<Media>, LinkError> {
    state
        .fetcher
        .check_at_creation(new.url.url())
        .await
        .map_err(creation_error)?;
    // Pinning keeps verified (and converted) bytes: it implies verification.
    if !req.verify && req.pin != Some(true) {
        return Ok(None);
    }
    let probe = LinkRecord {
        id: LinkId::parse("0000000000").unwrap_or_else(|| unreachable!("a valid literal id")),
        url: new.url.clone(),
        kind: new.kind,
        created_at: new.created_at,
        expires_at: new.expires_at,
        convert: new.convert,
        media: None,
        blob: None,
    };
    verify::fetch_verified(state, &probe)
        .await
        .map(Some)
        .map_err(LinkError::Media)
}

async fn check_one(state: &AppState, req: &CreateLink, mut new: NewLink) -> Checked {
    let media = check(state, req, &new).await?;
    new.media = media.as_ref().map(Media::info);
    Ok((new, media))
}

/// Creates (or finds) every link of a request in one store round trip, so an array
/// of 1,000 links costs one transaction. Results keep the order of `reqs`.
pub async fn create_many(state: &AppState, reqs: &[CreateLink]) -> Vec<Result<Created, LinkError>> {
    let now = now_unix();
    // Items decided without waiting (bad input, IP literals, no verification) are
    // decided here; the rest wait for DNS or a fetch below. An async check per item
    // cost an array of 1,000 a thousand futures of a few hundred bytes each, moved
    // about by the stream that runs them.
    let mut checked: Vec<Option<Checked>> = Vec::with_capacity(reqs.len());
    let mut waiting = Vec::new();
    for (i, req) in reqs.iter().enumerate() {
        let new = match prepare(state, req, now) {
            Ok(new) => new,
            Err(e) => {
                checked.push(Some(Err(e)));
                continue;
            }
        };
        let plain = !req.verify && req.pin != Some(true);
        match state.fetcher.check_at_creation_now(new.url.url()) {
            Some(Err(e)) => checked.push(Some(Err(creation_error(e)))),
            Some(Ok(())) if plain => checked.push(Some(Ok((new, None)))),
            _ => {
                checked.push(None);
                waiting.push((i, new));
            }
        }
    }
    // Address checks (and verifications) of the others run concurrently.
    let done: Vec<(usize, Checked)> = futures_util::stream::iter(
        waiting
            .into_iter()
            .map(|(i, new)| async move { (i, check_one(state, &reqs[i], new).await) }),
    )
    .buffered(VERIFY_CONCURRENCY)
    .collect()
    .await;
    for (i, r) in done {
        checked[i] = Some(r);
    }
    let checked: Vec<Checked> = checked
        .into_iter()
        .map(|c| {
            c.unwrap_or_else(|| {
                Err(LinkError::Store(StoreError::Unavailable(
                    "no answer".into(),
                )))
            })
        })
        .collect();

    // Pinned bytes go to the blob store before their links are inserted, under the
    // lock blob collection takes, so a blob is never collected between the two.
    let any_pin = reqs.iter().any(|r| r.pin == Some(true));
    let _gc = if any_pin {
        Some(state.blob_gc.lock().await)
    } else {
        None
    };
    let mut checked = checked;
    for (req, c) in reqs.iter().zip(checked.iter_mut()) {
        if req.pin != Some(true) {
            continue;
        }
        if let Ok((new, Some(media))) = c {
            match state.blobs.put(media.bytes.clone()).await {
                Ok(id) => new.blob = Some(id.as_str().to_owned()),
                Err(e) => *c = Err(LinkError::Blob(e)),
            }
        }
    }

    let mut results: Vec<Option<Result<Created, LinkError>>> = Vec::with_capacity(reqs.len());
    let mut pending = Vec::new();
    let mut slots = Vec::new();
    for (i, c) in checked.into_iter().enumerate() {
        match c {
            Ok((new, media)) => {
                pending.push(new);
                slots.push((i, media));
                results.push(None);
            }
            Err(e) => results.push(Some(Err(e))),
        }
    }
    if !pending.is_empty() {
        match state.links.put_if_absent(pending).await {
            Ok(puts) => {
                for ((slot, media), put) in slots.into_iter().zip(puts) {
                    results[slot] = Some(match put {
                        Put::Created(record) => Ok(Created {
                            record,
                            created: true,
                        }),
                        Put::Existing(record) => Ok(Created {
                            record,
                            created: false,
                        }),
                        Put::Conflict(id) => Err(LinkError::IdConflict(id)),
                    });
                    if let (Some(Ok(c)), Some(media)) = (&mut results[slot], media) {
                        remember_verified(state, c, media).await;
                    }
                }
            }
            Err(e) => {
                for (slot, _) in slots {
                    results[slot] = Some(Err(LinkError::Store(e.clone())));
                }
            }
        }
    }
    // Every slot was filled above: either at preparation or from the store's answer.
    results
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                Err(LinkError::Store(StoreError::Unavailable(
                    "no answer".into(),
                )))
            })
        })
        .collect()
}

/// A verified create warms the cache (the gateway's fetch follows within seconds) and,
/// for a link that existed without media info, records what the bytes are.
async fn remember_verified(state: &AppState, c: &mut Created, media: Media) {
    let info = media.info();
    if c.record.media.as_ref() != Some(&info) && !c.created {
        if let Err(e) = state.links.set_media(&c.record.id, &info).await {
            tracing::warn!(error = %e, id = %c.record.id, "could not record the verified media type");
        }
        c.record.media = Some(info);
    }
    state.cache.insert(c.record.id.clone(), media).await;
}

pub async fn create(state: &AppState, req: &CreateLink) -> Result<Created, LinkError> {
    create_many(state, std::slice::from_ref(req))
        .await
        .pop()
        .unwrap_or_else(|| {
            Err(LinkError::Store(StoreError::Unavailable(
                "no answer".into(),
            )))
        })
}

/// Deletes a link everywhere this process keeps it, and its pinned bytes when no
/// other link pins them. True when the link existed.
pub async fn delete(state: &AppState, id: &LinkId) -> Result<bool, LinkError> {
    let record = state.links.get(id).await?;
    let deleted = state.links.delete(id).await?;
    state.cache.invalidate(id).await;
    if let Some(blob) = record.and_then(|r| r.blob.clone()) {
        collect_blob(state, &blob).await;
    }
    Ok(deleted)
}

/// Removes a blob once no link references it. Errors are logged, not returned: an
/// orphan blob wastes space but breaks nothing, and the next sweep retries.
async fn collect_blob(state: &AppState, blob: &str) {
    let _gc = state.blob_gc.lock().await;
    match state.links.inner().blob_refs(blob).await {
        Ok(0) => {
            if let Some(id) = BlobId::parse(blob)
                && let Err(e) = state.blobs.delete(&id).await
            {
                tracing::warn!(error = %e, blob, "could not delete an unreferenced blob");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, blob, "could not count the links pinning a blob"),
    }
}

/// Deletes every expired link (and the blobs only they pinned). Returns how many.
pub async fn sweep_expired(state: &AppState) -> Result<u64, LinkError> {
    let mut swept = 0;
    loop {
        let batch = state.links.inner().expired(now_unix(), 500).await?;
        if batch.is_empty() {
            return Ok(swept);
        }
        for record in batch {
            delete(state, &record.id).await?;
            swept += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_borrowed_view_writes_the_same_json_as_the_view() {
        let id = |s: &str| LinkId::parse(s).unwrap();
        let url = |s: &str| CanonicalUrl::parse(s).unwrap();
        let plain = LinkRecord {
            id: id("k3J9aQ2mZx"),
            url: url("https://cdn.example.com/a/b.JPG?sig=\"x\"&t=1"),
            kind: Kind::Image,
            created_at: 1_700_000_000,
            expires_at: None,
            convert: None,
            media: None,
            blob: None,
        };
        let no_ext = LinkRecord {
            id: id("Zz9aQ2mZxk3J"),
            url: url("http://127.0.0.1:8080/media?id=7"),
            kind: Kind::Any,
            expires_at: Some(1_800_000_000),
            ..plain.clone()
        };
        let converted = LinkRecord {
            id: id("0000000001"),
            kind: Kind::Audio,
            media: Some(MediaInfo {
                content_type: "audio/ogg".into(),
                bytes: 48_213,
                converted_from: Some("audio/mpeg".into()),
            }),
            ..no_ext.clone()
        };
        let verified = LinkRecord {
            media: Some(MediaInfo {
                content_type: "image/jpeg".into(),
                bytes: 1,
                converted_from: None,
            }),
            ..plain.clone()
        };
        for r in [&plain, &no_ext, &converted, &verified] {
            let base = "https://m.example.com";
            let owned = serde_json::to_string(&view(base, r)).unwrap();
            let borrowed = serde_json::to_string(&ViewRef {
                public_base: base,
                record: r,
            })
            .unwrap();
            assert_eq!(borrowed, owned);
        }
    }
}
