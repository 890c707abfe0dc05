//! Export and import of links as JSON lines (DESIGN §10): the way links move between
//! stores (SQLite to PostgreSQL and back) with their ids kept.
//!
//! One link a line:
//! `{"id","url","kind","created_at","expires_at"?,"convert"?,"media"?:{"content_type","bytes","converted_from"?}}`.
//! Both directions page through the `Store` trait, so they work with any store, and
//! hold at most one page or batch in memory.

use std::io::{BufRead, Write};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::canon::CanonicalUrl;
use crate::ids::LinkId;
use crate::policy::Kind;
use crate::store::{IdPlan, LinkRecord, MediaInfo, NewLink, Put, Store, StoreError};

/// Links read from the store per `list` call.
const PAGE: usize = 1000;
/// Lines per `put_if_absent`: one transaction, committed before the next is read.
const BATCH: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot read or write the link file: {0}")]
    Io(#[from] std::io::Error),
    /// `detail` says which lines were imported before the import stopped.
    #[error("line {line}: {detail}")]
    Line { line: u64, detail: String },
}

/// What an import did, line by line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportStats {
    pub read: u64,
    pub created: u64,
    /// Already present, same URL.
    pub skipped: u64,
    /// The id is taken by another URL; the line was not imported.
    pub conflicts: u64,
}

/// The line format. Unknown fields are refused: a newer export imported by an older
/// binary would otherwise lose them without a word.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    id: String,
    url: String,
    kind: Kind,
    created_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    convert: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    media: Option<Media>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Media {
    content_type: String,
    bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    converted_from: Option<String>,
}

impl From<&LinkRecord> for Line {
    fn from(r: &LinkRecord) -> Self {
        Line {
            id: r.id.as_str().to_owned(),
            url: r.url.as_str().to_owned(),
            kind: r.kind,
            created_at: r.created_at,
            expires_at: r.expires_at,
            convert: r.convert,
            media: r.media.as_ref().map(|m| Media {
                content_type: m.content_type.clone(),
                bytes: m.bytes,
                converted_from: m.converted_from.clone(),
            }),
        }
    }
}

impl Line {
    fn into_new_link(self) -> Result<NewLink, String> {
        let id = LinkId::parse(&self.id).ok_or_else(|| {
            format!(
                "`{}` is not a link id (base62, 10 to 22 characters)",
                self.id
            )
        })?;
        let url = CanonicalUrl::parse(&self.url).map_err(|e| format!("bad url: {e}"))?;
        Ok(NewLink {
            plan: IdPlan::Exact(id),
            url,
            kind: self.kind,
            created_at: self.created_at,
            expires_at: self.expires_at,
            convert: self.convert,
            media: self.media.map(|m| MediaInfo {
                content_type: m.content_type,
                bytes: m.bytes,
                converted_from: m.converted_from,
            }),
            // Pinned bytes are not in the file (it carries links, not blobs), so a
            // link arrives unpinned and is served from its upstream.
            blob: None,
        })
    }
}

/// A counter on stderr when asked for (the caller asks only when stderr is a
/// terminal), nothing otherwise: logs and pipes get no control characters.
fn progress_bar(show: bool, verb: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    // The template is a constant; a bad one would be a bug caught by the tests.
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} {human_pos} links ({per_sec})")
    {
        bar.set_style(style);
    }
    bar.set_message(verb.to_owned());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// Writes every link in id order, one JSON object a line; returns how many.
pub async fn export(
    store: &dyn Store,
    out: &mut (dyn Write + Send),
    progress: bool,
) -> Result<u64, TransferError> {
    let bar = progress_bar(progress, "exported");
    let mut after: Option<LinkId> = None;
    let mut written = 0u64;
    let mut buf = Vec::new();
    loop {
        let page = store.list(after.as_ref(), PAGE).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.id.clone());
        buf.clear();
        for record in &page {
            // Serializing plain strings and numbers cannot fail.
            serde_json::to_writer(&mut buf, &Line::from(record)).map_err(std::io::Error::from)?;
            buf.push(b'\n');
        }
        out.write_all(&buf)?;
        written += page.len() as u64;
        bar.set_position(written);
        // Only an empty page ends it: a page can come back short while more follow
        // (a logged link deleted between the store's copy of its log and the read).
    }
    out.flush()?;
    bar.finish_and_clear();
    Ok(written)
}

/// Reads JSON lines and inserts each link under its own id, `BATCH` lines per
/// transaction. Links already present are skipped, so an import can be run again
/// after a failure. Blank lines are ignored.
pub async fn import(
    store: &dyn Store,
    input: &mut (dyn BufRead + Send),
    progress: bool,
) -> Result<ImportStats, TransferError> {
    let bar = progress_bar(progress, "imported");
    let mut stats = ImportStats::default();
    let mut batch: Vec<NewLink> = Vec::with_capacity(BATCH);
    // Line number of the first line of `batch`: what a failure leaves unapplied.
    let mut batch_start = 1u64;
    let mut line_no = 0u64;
    let mut raw = Vec::new();
    loop {
        raw.clear();
        if input.read_until(b'\n', &mut raw)? == 0 {
            break;
        }
        line_no += 1;
        if batch.is_empty() {
            batch_start = line_no;
        }
        let bad = |detail: String| TransferError::Line {
            line: line_no,
            detail: if batch_start == 1 {
                format!("{detail}; import stopped, nothing was imported")
            } else {
                format!(
                    "{detail}; import stopped: lines 1 to {} were imported, none from line \
                     {batch_start} on",
                    batch_start - 1
                )
            },
        };
        let text = std::str::from_utf8(&raw).map_err(|_| bad("not UTF-8".into()))?;
        if text.trim().is_empty() {
            continue;
        }
        let line: Line = serde_json::from_str(text).map_err(|e| bad(format!("not a link: {e}")))?;
        batch.push(line.into_new_link().map_err(bad)?);
        stats.read += 1;
        if batch.len() >= BATCH {
            apply(store, &mut batch, &mut stats).await?;
            bar.set_position(stats.read);
        }
    }
    apply(store, &mut batch, &mut stats).await?;
    bar.finish_and_clear();
    Ok(stats)
}

async fn apply(
    store: &dyn Store,
    batch: &mut Vec<NewLink>,
    stats: &mut ImportStats,
) -> Result<(), TransferError> {
    if batch.is_empty() {
        return Ok(());
    }
    for put in store.put_if_absent(std::mem::take(batch)).await? {
        match put {
            Put::Created(_) => stats.created += 1,
            Put::Existing(_) => stats.skipped += 1,
            Put::Conflict(_) => stats.conflicts += 1,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_format_omits_absent_fields() {
        let record = LinkRecord {
            id: LinkId::parse("k3J9aQ2mZx").unwrap(),
            url: CanonicalUrl::parse("https://cdn.example.com/a.jpg").unwrap(),
            kind: Kind::Image,
            created_at: 1_700_000_000,
            expires_at: None,
            convert: None,
            media: Some(MediaInfo {
                content_type: "image/jpeg".into(),
                bytes: 48213,
                converted_from: None,
            }),
            blob: Some("ab".repeat(32)),
        };
        // The blob reference stays behind: the file does not carry the bytes.
        let json = serde_json::to_string(&Line::from(&record)).unwrap();
        assert_eq!(
            json,
            r#"{"id":"k3J9aQ2mZx","url":"https://cdn.example.com/a.jpg","kind":"image","created_at":1700000000,"media":{"content_type":"image/jpeg","bytes":48213}}"#
        );
        let back = serde_json::from_str::<Line>(&json)
            .unwrap()
            .into_new_link()
            .unwrap();
        assert_eq!(back.url, record.url);
        assert_eq!(back.media, record.media);
        assert!(matches!(back.plan, IdPlan::Exact(ref id) if *id == record.id));
    }

    #[test]
    fn unknown_fields_and_bad_ids_are_refused() {
        let extra = r#"{"id":"k3J9aQ2mZx","url":"https://a.example/","kind":"any","created_at":1,"pinned":true}"#;
        assert!(serde_json::from_str::<Line>(extra).is_err());
        let short = r#"{"id":"short","url":"https://a.example/","kind":"any","created_at":1}"#;
        let line: Line = serde_json::from_str(short).unwrap();
        assert!(line.into_new_link().is_err());
    }
}
