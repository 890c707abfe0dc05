//! Pinned bytes (DESIGN §6): a content-addressed store keyed by the SHA-256 of the
//! bytes, so identical media is kept once however many links pin it. Files under
//! `{data-dir}/blobs` by default; the trait is what PostgreSQL (or an S3-compatible
//! store) implements.
//!
//! It does not know which links reference a blob: the link store counts references,
//! and `links` deletes a blob only when the count reaches zero.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, thiserror::Error)]
pub enum BlobError {
    #[error("blob store unavailable: {0}")]
    Unavailable(String),
    #[error("blob {0} is corrupt: its bytes do not hash to its name")]
    Corrupt(String),
}

/// The hex SHA-256 of a blob's bytes: its name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BlobId(String);

impl BlobId {
    pub fn of(bytes: &[u8]) -> Self {
        Self(
            Sha256::digest(bytes)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
        )
    }

    /// Only 64 lower-case hex digits: a stored name can never become a path trick.
    pub fn parse(s: &str) -> Option<Self> {
        (s.len() == 64
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        .then(|| Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Stores the bytes durably (a no-op when already present) and names them.
    async fn put(&self, bytes: Bytes) -> Result<BlobId, BlobError>;
    async fn get(&self, id: &BlobId) -> Result<Option<Bytes>, BlobError>;
    async fn delete(&self, id: &BlobId) -> Result<(), BlobError>;
}

/// Files named by hash, two-level fan-out (`ab/abcdef...`), written to a temp file,
/// fsynced and renamed, so a crash leaves either the whole blob or nothing.
pub struct FileBlobs {
    root: PathBuf,
}

impl FileBlobs {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn path(&self, id: &BlobId) -> PathBuf {
        self.root.join(&id.0[..2]).join(&id.0)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
}

fn io(e: std::io::Error) -> BlobError {
    BlobError::Unavailable(e.to_string())
}

#[async_trait]
impl BlobStore for FileBlobs {
    async fn put(&self, bytes: Bytes) -> Result<BlobId, BlobError> {
        let id = BlobId::of(&bytes);
        let path = self.path(&id);
        tokio::task::spawn_blocking(move || -> Result<(), BlobError> {
            if path.exists() {
                return Ok(());
            }
            let dir = path
                .parent()
                .ok_or_else(|| BlobError::Unavailable("blob path has no parent".into()))?;
            std::fs::create_dir_all(dir).map_err(io)?;
            let tmp = dir.join(format!(".tmp-{}", rand::random::<u64>()));
            {
                use std::io::Write;
                let mut f = std::fs::File::create(&tmp).map_err(io)?;
                f.write_all(&bytes).map_err(io)?;
                f.sync_all().map_err(io)?;
            }
            std::fs::rename(&tmp, &path).map_err(io)?;
            // The rename is durable only once the directory entry is.
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io)?;
            Ok(())
        })
        .await
        .map_err(|e| BlobError::Unavailable(e.to_string()))??;
        Ok(id)
    }

    async fn get(&self, id: &BlobId) -> Result<Option<Bytes>, BlobError> {
        match tokio::fs::read(self.path(id)).await {
            Ok(b) => {
                if BlobId::of(&b) != *id {
                    return Err(BlobError::Corrupt(id.0.clone()));
                }
                Ok(Some(Bytes::from(b)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(e)),
        }
    }

    async fn delete(&self, id: &BlobId) -> Result<(), BlobError> {
        match tokio::fs::remove_file(self.path(id)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn identical_bytes_are_kept_once_and_read_back_verified() {
        let dir = tempfile::tempdir().unwrap();
        let b = FileBlobs::new(dir.path());
        let a = b.put(Bytes::from_static(b"hello")).await.unwrap();
        let again = b.put(Bytes::from_static(b"hello")).await.unwrap();
        assert_eq!(a, again);
        let files: Vec<_> = walk(dir.path());
        assert_eq!(files.len(), 1, "{files:?}");
        assert_eq!(b.get(&a).await.unwrap().unwrap().as_ref(), b"hello");
        std::fs::write(&files[0], b"tampered").unwrap();
        assert!(matches!(b.get(&a).await, Err(BlobError::Corrupt(_))));
        b.delete(&a).await.unwrap();
        assert!(b.get(&a).await.unwrap().is_none());
        b.delete(&a).await.unwrap();
    }

    #[test]
    fn blob_ids_parse_only_hex_names() {
        let id = BlobId::of(b"x");
        assert_eq!(BlobId::parse(id.as_str()), Some(id));
        assert!(BlobId::parse("../../etc/passwd").is_none());
        assert!(BlobId::parse(&"A".repeat(64)).is_none());
    }

    fn walk(p: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(p).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
        out
    }
}
