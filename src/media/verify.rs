//! The media pipeline shared by `/m/` and `verify: true`: fetch the upstream, sniff
//! the bytes, ask the policy, convert when it says so. Produces a `Media` ready to
//! serve, or a `MediaError` saying which step refused.

use bytes::Bytes;

use crate::cache::Media;
use crate::convert::{self, AudioSource, ConvertError};
use crate::fetch::FetchError;
use crate::policy::{Decision, Kind, Policy, PolicyError};
use crate::sniff::{self, MediaType, SniffError};
use crate::state::AppState;
use crate::store::{LinkRecord, MediaInfo};

#[derive(Debug, Clone, thiserror::Error)]
pub enum MediaError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("the upstream did not send media: {0}")]
    Sniff(#[from] SniffError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("{from} could not be converted: {detail}")]
    Convert { from: &'static str, detail: String },
}

impl MediaError {
    /// The problem `code` of DESIGN §3.
    pub fn code(&self) -> crate::api::problem::Code {
        use crate::api::problem::Code;
        match self {
            MediaError::Fetch(e) => match e {
                FetchError::Forbidden { .. } => Code::ForbiddenUpstream,
                FetchError::Timeout => Code::UpstreamTimeout,
                FetchError::Status { .. } => Code::UpstreamStatus,
                FetchError::TooLarge { .. } => Code::UpstreamTooLarge,
                _ => Code::UpstreamUnreachable,
            },
            MediaError::Sniff(_) => Code::UpstreamNotMedia,
            MediaError::Policy(PolicyError::TooLarge { .. }) => Code::UpstreamTooLarge,
            MediaError::Policy(PolicyError::NotAccepted { .. }) => Code::MediaNotAccepted,
            MediaError::Convert { .. } => Code::MediaNotAccepted,
        }
    }
}

impl Media {
    /// What the store records of this media.
    pub fn info(&self) -> MediaInfo {
        MediaInfo {
            content_type: self.media_type.mime().to_owned(),
            bytes: self.bytes.len() as u64,
            converted_from: self.converted_from.map(|t| t.mime().to_owned()),
        }
    }
}

/// Whether this link converts: its own choice, else the profile's default for its kind.
pub fn converts(state: &AppState, record: &LinkRecord) -> bool {
    record
        .convert
        .unwrap_or_else(|| state.policy.convert_default(record.kind))
}

/// A link's media: its pinned bytes when it has them (the upstream may be long gone),
/// else a fresh verified fetch. A pinned blob that cannot be read falls back to the
/// upstream rather than failing a link that might still work.
pub async fn load(state: &AppState, record: &LinkRecord) -> Result<Media, MediaError> {
    if let (Some(blob), Some(info)) = (&record.blob, &record.media) {
        let media_type = MediaType::from_mime(&info.content_type);
        match (crate::blobs::BlobId::parse(blob), media_type) {
            (Some(id), Some(t)) => match state.blobs.get(&id).await {
                Ok(Some(bytes)) => {
                    let from = info
                        .converted_from
                        .as_deref()
                        .and_then(MediaType::from_mime);
                    return Ok(Media::new(bytes, t, from, record.expires_at));
                }
                Ok(None) => {
                    tracing::error!(id = %record.id, blob, "pinned blob missing; fetching the upstream")
                }
                Err(e) => {
                    tracing::error!(id = %record.id, error = %e, "pinned blob unreadable; fetching the upstream")
                }
            },
            _ => {
                tracing::error!(id = %record.id, blob, "pinned link with an unreadable record; fetching the upstream")
            }
        }
    }
    fetch_verified(state, record).await
}

pub async fn fetch_verified(state: &AppState, record: &LinkRecord) -> Result<Media, MediaError> {
    let convert = converts(state, record);
    let limit = state.policy.fetch_limit(record.kind, convert);
    let fetched = state.fetcher.fetch(record.url.url(), limit).await?;
    let verified = verify_bytes(state, record, fetched.bytes).await;
    // The fetcher counts its own failures; these are the bytes that arrived but were
    // not media the link takes, counted under the same metric by problem code.
    if let Err(e) = &verified {
        metrics::counter!("medialink_upstream_errors_total", "code" => e.code().as_str())
            .increment(1);
    }
    verified
}

/// Sniff, decide, convert: everything after the bytes arrived whole.
pub async fn verify_bytes(
    state: &AppState,
    record: &LinkRecord,
    bytes: Bytes,
) -> Result<Media, MediaError> {
    let convert = converts(state, record);
    verify_with(
        &state.policy,
        record.kind,
        convert,
        bytes,
        record.expires_at,
    )
    .await
}

/// [`verify_bytes`] without a link: the policy, kind and conversion choice given
/// (`medialink check` judges a URL that has no link).
pub async fn verify_with(
    policy: &Policy,
    kind: Kind,
    convert: bool,
    bytes: Bytes,
    expires_at: Option<i64>,
) -> Result<Media, MediaError> {
    let found = sniff::sniff(&bytes)?;
    let decision = policy.decide(kind, convert, found, bytes.len() as u64)?;
    let (bytes, media_type, from) = match decision {
        Decision::Serve => (bytes, found, None),
        Decision::ConvertToJpeg => {
            let out = run_convert(found, move || convert::to_jpeg(&bytes)).await?;
            (out, MediaType::Jpeg, Some(found))
        }
        Decision::ConvertToOpus => {
            let source = audio_source(found)?;
            let out = run_convert(found, move || convert::to_ogg_opus(&bytes, source)).await?;
            (out, MediaType::OggOpus, Some(found))
        }
    };
    Ok(Media::new(bytes, media_type, from, expires_at))
}

fn audio_source(t: MediaType) -> Result<AudioSource, MediaError> {
    Ok(match t {
        MediaType::Mp3 => AudioSource::Mp3,
        MediaType::M4a => AudioSource::M4a,
        MediaType::Aac => AudioSource::Aac,
        MediaType::Wav => AudioSource::Wav,
        MediaType::OggVorbis => AudioSource::OggVorbis,
        MediaType::AmrNb => AudioSource::AmrNb,
        other => {
            return Err(MediaError::Convert {
                from: other.name(),
                detail: "no decoder for this format".into(),
            });
        }
    })
}

/// Conversion is CPU-bound (up to seconds): run it off the async workers.
async fn run_convert(
    from: MediaType,
    f: impl FnOnce() -> Result<convert::Converted, ConvertError> + Send + 'static,
) -> Result<Bytes, MediaError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(c)) => Ok(Bytes::from(c.bytes)),
        Ok(Err(e)) => Err(MediaError::Convert {
            from: from.name(),
            detail: e.to_string(),
        }),
        Err(e) => Err(MediaError::Convert {
            from: from.name(),
            detail: format!("converter failed: {e}"),
        }),
    }
}
