//! The object store behind every asset, through the `object_store` crate
//! (a local folder, `storage.path`), and the keys derived from ids.
//!
//! Keys never contain a client's file name: `assets/<id>/v<version>` for
//! the file and `thumbnails/<id>.png` for its thumbnail.
//!
//! ```
//! let id = uuid::Uuid::nil();
//! assert_eq!(
//!     boardroom::assets::storage::file_key(id, 1),
//!     "assets/00000000-0000-0000-0000-000000000000/v1"
//! );
//! ```

use std::{ops::Range, sync::Arc};

use bytes::Bytes;
use futures_util::stream::BoxStream;
use object_store::{
    GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart,
    local::LocalFileSystem, path::Path,
};
use uuid::Uuid;

/// Bytes buffered before a part is handed to the store (one part in flight
/// and one filling: the memory an upload costs).
pub const PART_SIZE: usize = 1 << 20;

/// The key of an asset's file.
pub fn file_key(id: Uuid, version: i32) -> String {
    format!("assets/{id}/v{version}")
}

/// The key of an asset's thumbnail.
pub fn thumbnail_key(id: Uuid) -> String {
    format!("thumbnails/{id}.png")
}

/// A failure of the object store.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// No object under the key.
    #[error("object not found")]
    NotFound,
    /// The store failed (I/O, permissions, …).
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
}

fn map(error: object_store::Error) -> StorageError {
    match error {
        object_store::Error::NotFound { .. } => StorageError::NotFound,
        other => StorageError::Store(other),
    }
}

/// The object store (cheap to clone).
#[derive(Clone, Debug)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
}

impl Storage {
    /// The local store in `folder` (created if missing).
    pub fn local(folder: &str) -> anyhow::Result<Self> {
        std::fs::create_dir_all(folder)
            .map_err(|e| anyhow::anyhow!("storage.path {folder:?}: {e}"))?;
        let store = LocalFileSystem::new_with_prefix(folder)
            .map_err(|e| anyhow::anyhow!("storage.path {folder:?}: {e}"))?;
        Ok(Self {
            store: Arc::new(store),
        })
    }

    /// Starts a streamed write of `key`.
    pub async fn writer(&self, key: &str) -> Result<Writer, StorageError> {
        let upload = self
            .store
            .put_multipart(&Path::from(key))
            .await
            .map_err(map)?;
        Ok(Writer {
            inner: WriteMultipart::new_with_chunk_size(upload, PART_SIZE),
        })
    }

    /// Writes `bytes` under `key` at once (small objects: thumbnails).
    pub async fn put(&self, key: &str, bytes: Bytes) -> Result<(), StorageError> {
        self.store
            .put(&Path::from(key), PutPayload::from(bytes))
            .await
            .map_err(map)?;
        Ok(())
    }

    /// The whole object (callers bound its size first).
    pub async fn read_all(&self, key: &str) -> Result<Bytes, StorageError> {
        let result = self.store.get(&Path::from(key)).await.map_err(map)?;
        result.bytes().await.map_err(map)
    }

    /// The object (or `range` of it) as a stream of chunks.
    pub async fn stream(
        &self,
        key: &str,
        range: Option<Range<u64>>,
    ) -> Result<BoxStream<'static, Result<Bytes, object_store::Error>>, StorageError> {
        let options = GetOptions {
            range: range.map(GetRange::Bounded),
            ..GetOptions::default()
        };
        let result = self
            .store
            .get_opts(&Path::from(key), options)
            .await
            .map_err(map)?;
        Ok(result.into_stream())
    }

    /// Removes `key` (a missing object is not an error).
    pub async fn delete(&self, key: &str) -> Result<(), StorageError> {
        match self.store.delete(&Path::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(other) => Err(StorageError::Store(other)),
        }
    }

    /// A round trip to the store, for readiness: writes and removes a probe.
    pub async fn probe(&self) -> Result<(), StorageError> {
        let key = format!("probes/{}", Uuid::new_v4());
        self.put(&key, Bytes::from_static(b"ok")).await?;
        self.delete(&key).await
    }
}

/// A streamed write: parts go to the store while the caller keeps writing.
#[derive(Debug)]
pub struct Writer {
    inner: WriteMultipart,
}

impl Writer {
    /// Appends `bytes`, waiting while a part is still being written (so at
    /// most two parts are in memory).
    pub async fn write(&mut self, bytes: Bytes) -> Result<(), StorageError> {
        self.inner.wait_for_capacity(1).await.map_err(map)?;
        self.inner.put(bytes);
        Ok(())
    }

    /// Completes the object.
    pub async fn finish(self) -> Result<(), StorageError> {
        self.inner.finish().await.map_err(map)?;
        Ok(())
    }

    /// Abandons the object, removing what was written.
    pub async fn abort(self) {
        if let Err(error) = self.inner.abort().await {
            tracing::warn!(%error, "could not abort a partial upload");
        }
    }
}
