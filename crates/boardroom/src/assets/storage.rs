//! The object store behind every asset, through the `object_store` crate:
//! a local folder (`storage.backend = "local"`, `storage.path`) or an
//! S3-compatible bucket (`storage.backend = "s3"`, `[storage.s3]`), and the
//! keys derived from ids.
//!
//! Keys never contain a client's file name: `assets/<id>/v<version>` for
//! the file and `thumbnails/<id>.png` for its thumbnail. Uploads stream
//! through multipart writes (parts of [`LOCAL_PART_SIZE`] locally,
//! [`S3_PART_SIZE`] on S3, whose parts must be at least 5 MiB), at most two
//! parts in memory per upload. On S3, [`Storage::presigned_get`] signs the
//! download URLs handed out (SigV4 query signing by the store itself).
//!
//! Local reads do not use `object_store`'s own stream: it reads 8 KiB per
//! blocking task (one `spawn_blocking` round trip per 8 KiB; 250 MB/s
//! measured on a 100 MiB download against nginx's 2.8 GB/s, BENCHMARKS.md).
//! [`Storage::stream`] takes the opened file from the store and reads it
//! on one blocking thread in [`READ_CHUNK`] pieces, a bounded channel
//! ahead of the socket, so reading and sending overlap.
//!
//! ```
//! let id = uuid::Uuid::nil();
//! assert_eq!(
//!     boardroom::assets::storage::file_key(id, 1),
//!     "assets/00000000-0000-0000-0000-000000000000/v1"
//! );
//! ```

use std::{ops::Range, sync::Arc, time::Duration};

use bytes::Bytes;
use futures_util::stream::BoxStream;
use object_store::{
    ClientOptions, GetOptions, GetRange, GetResultPayload, ObjectStore, ObjectStoreExt, PutPayload,
    RetryConfig, WriteMultipart,
    aws::{AmazonS3, AmazonS3Builder},
    local::LocalFileSystem,
    path::Path,
    signer::{Method, SignedUrlOptions, Signer},
};
use uuid::Uuid;

use super::settings::{S3Settings, StorageBackend, StorageSettings};

/// Bytes buffered before a part is handed to the local store (one part in
/// flight and one filling: the memory an upload costs).
pub const LOCAL_PART_SIZE: usize = 1 << 20;

/// Bytes per read of a local file being downloaded.
pub const READ_CHUNK: usize = 256 << 10;

/// Chunks read ahead of the socket per local download (so a download holds
/// at most `READ_AHEAD + 1` chunks besides what hyper is writing).
const READ_AHEAD: usize = 2;

/// Part size on S3: its smallest allowed part (every part but the last must
/// be at least 5 MiB), so an upload holds at most 10 MiB.
pub const S3_PART_SIZE: usize = 5 << 20;

/// Longest one S3 request may take (a part of [`S3_PART_SIZE`] included).
const S3_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Longest the store retries one failed S3 request before the error surfaces.
const S3_RETRY_TIMEOUT: Duration = Duration::from_secs(15);

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
    /// The S3 store again, as a URL signer (`None` for the local store).
    s3: Option<Arc<AmazonS3>>,
    part_size: usize,
}

impl Storage {
    /// The store `[storage]` configures.
    pub fn open(settings: &StorageSettings) -> anyhow::Result<Self> {
        match settings.backend {
            StorageBackend::Local => Self::local(&settings.path),
            StorageBackend::S3 => Self::s3(&settings.s3),
        }
    }

    /// The local store in `folder` (created if missing).
    pub fn local(folder: &str) -> anyhow::Result<Self> {
        std::fs::create_dir_all(folder)
            .map_err(|e| anyhow::anyhow!("storage.path {folder:?}: {e}"))?;
        let store = LocalFileSystem::new_with_prefix(folder)
            .map_err(|e| anyhow::anyhow!("storage.path {folder:?}: {e}"))?;
        Ok(Self {
            store: Arc::new(store),
            s3: None,
            part_size: LOCAL_PART_SIZE,
        })
    }

    /// The S3-compatible bucket `settings` names. Nothing is sent yet: an
    /// unreachable endpoint shows in `/health/ready` and as `503`s.
    pub fn s3(settings: &S3Settings) -> anyhow::Result<Self> {
        let mut builder = if settings.access_key_id.is_empty() {
            // The AWS credential chain (AWS_* variables, web identity, ECS,
            // instance metadata); the keys below still override.
            AmazonS3Builder::from_env()
        } else {
            AmazonS3Builder::new()
                .with_access_key_id(&settings.access_key_id)
                .with_secret_access_key(&settings.secret_access_key)
        };
        builder = builder
            .with_bucket_name(&settings.bucket)
            .with_region(&settings.region)
            .with_allow_http(settings.allow_http)
            .with_virtual_hosted_style_request(!settings.path_style)
            .with_client_options(
                ClientOptions::new()
                    .with_allow_http(settings.allow_http)
                    .with_connect_timeout(Duration::from_secs(5))
                    .with_timeout(S3_REQUEST_TIMEOUT),
            )
            .with_retry(RetryConfig {
                max_retries: 3,
                retry_timeout: S3_RETRY_TIMEOUT,
                ..RetryConfig::default()
            });
        if !settings.endpoint.is_empty() {
            builder = builder.with_endpoint(settings.endpoint.trim_end_matches('/'));
        }
        let store = Arc::new(
            builder
                .build()
                .map_err(|e| anyhow::anyhow!("storage.s3 (bucket {:?}): {e}", settings.bucket))?,
        );
        Ok(Self {
            store: store.clone(),
            s3: Some(store),
            part_size: S3_PART_SIZE,
        })
    }

    /// Whether download links are the store's own presigned URLs (S3).
    pub fn presigns(&self) -> bool {
        self.s3.is_some()
    }

    /// A presigned `GET` of `key` valid for `expires_in`, asking the store
    /// to answer with `Content-Type: mime_type` and `Content-Disposition`
    /// (`response-content-*`, signed with the rest). `None` for the local
    /// store, whose links are `/v1/files/{token}`.
    pub async fn presigned_get(
        &self,
        key: &str,
        expires_in: Duration,
        mime_type: &str,
        content_disposition: &str,
    ) -> Result<Option<String>, StorageError> {
        let Some(s3) = &self.s3 else {
            return Ok(None);
        };
        let options = SignedUrlOptions::new().with_query([
            ("response-content-type", mime_type),
            ("response-content-disposition", content_disposition),
        ]);
        let url = s3
            .signed_url_opts(Method::GET, &Path::from(key), expires_in, &options)
            .await
            .map_err(map)?;
        Ok(Some(url.to_string()))
    }

    /// Starts a streamed write of `key`.
    pub async fn writer(&self, key: &str) -> Result<Writer, StorageError> {
        let upload = self
            .store
            .put_multipart(&Path::from(key))
            .await
            .map_err(map)?;
        Ok(Writer {
            inner: WriteMultipart::new_with_chunk_size(upload, self.part_size),
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
        let range = result.range.clone();
        match result.payload {
            GetResultPayload::File(file, path) => Ok(read_file(file, path, range)),
            GetResultPayload::Stream(stream) => Ok(stream),
        }
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

/// `range` of a local `file`, read on one blocking thread in
/// [`READ_CHUNK`] pieces up to [`READ_AHEAD`] ahead of the consumer; the
/// thread stops when the range is read, on an error (sent as the last
/// item) or when the consumer goes away (a client that disconnects).
fn read_file(
    mut file: std::fs::File,
    path: std::path::PathBuf,
    range: Range<u64>,
) -> BoxStream<'static, Result<Bytes, object_store::Error>> {
    use std::io::{Read, Seek, SeekFrom};
    let (sender, receiver) = tokio::sync::mpsc::channel(READ_AHEAD);
    tokio::task::spawn_blocking(move || {
        let failed = |source: std::io::Error| object_store::Error::Generic {
            store: "LocalFileSystem",
            source: format!("reading {}: {source}", path.display()).into(),
        };
        if let Err(error) = file.seek(SeekFrom::Start(range.start)) {
            let _ = sender.blocking_send(Err(failed(error)));
            return;
        }
        let mut remaining = range.end - range.start;
        while remaining > 0 {
            let want = usize::try_from(remaining).map_or(READ_CHUNK, |r| r.min(READ_CHUNK));
            let mut buffer = vec![0; want];
            let item = match file.read_exact(&mut buffer) {
                Ok(()) => Ok(Bytes::from(buffer)),
                Err(error) => Err(failed(error)),
            };
            let stop = item.is_err();
            remaining -= want as u64;
            if sender.blocking_send(item).is_err() || stop {
                return;
            }
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(receiver))
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
