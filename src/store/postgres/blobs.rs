//! Pinned bytes in PostgreSQL (DESIGN §6): when links live in PostgreSQL so do their
//! blobs, so every replica serves a pinned link without a shared disk.

use async_trait::async_trait;
use bytes::Bytes;
use sqlx::PgPool;

use crate::blobs::{BlobError, BlobId, BlobStore};

pub struct PgBlobs {
    pool: PgPool,
}

impl PgBlobs {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

fn unavailable(e: sqlx::Error) -> BlobError {
    BlobError::Unavailable(e.to_string())
}

#[async_trait]
impl BlobStore for PgBlobs {
    async fn put(&self, bytes: Bytes) -> Result<BlobId, BlobError> {
        let id = BlobId::of(&bytes);
        sqlx::query("INSERT INTO blobs (id, bytes) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING")
            .bind(id.as_str())
            .bind(bytes.as_ref())
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(id)
    }

    async fn get(&self, id: &BlobId) -> Result<Option<Bytes>, BlobError> {
        let row: Option<(Vec<u8>,)> = sqlx::query_as("SELECT bytes FROM blobs WHERE id = $1")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        match row {
            Some((b,)) if BlobId::of(&b) != *id => Err(BlobError::Corrupt(id.as_str().to_owned())),
            Some((b,)) => Ok(Some(Bytes::from(b))),
            None => Ok(None),
        }
    }

    async fn delete(&self, id: &BlobId) -> Result<(), BlobError> {
        sqlx::query("DELETE FROM blobs WHERE id = $1")
            .bind(id.as_str())
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}
