//! The object store: dataset files and model artifacts. Local files (`file://` or a plain path) for the
//! embedded default, S3 or any S3-protocol server (MinIO) for production, behind one type.
//!
//! Writes stream: bytes go up in parts while a SHA-256 is computed, never whole in memory. The key layout
//! is in [`keys`].

pub mod archive;
pub mod keys;
mod staging;

pub use staging::STAGED_PART_SIZE;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use futures::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::multipart::MultipartStore;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::config::StorageConfig;
use crate::domain::ObjectKey;

/// Size of each part sent while streaming an upload.
const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts in flight at once.
const PARTS_IN_FLIGHT: usize = 2;

#[derive(Clone)]
pub struct Objects {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    /// `file:///abs/dir` or `s3://bucket/prefix`, joined with keys to make artifact URIs.
    base_uri: String,
    /// The folder of a local store.
    local_root: Option<PathBuf>,
    /// S3's multipart upload API, for writes assembled over many requests (staging.rs); local files
    /// have none.
    multipart: Option<Arc<dyn MultipartStore>>,
}

/// Why a write failed: too large for the limit the caller set (the caller's to report), or anything else.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error("the file is larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// What a streamed write stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub size_bytes: u64,
    pub sha256: String,
}

impl Objects {
    pub fn from_config(config: &StorageConfig) -> Result<Self> {
        let url = config.url.as_str();
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                bail!("KILN_STORAGE_URL {url:?} names no bucket (expected s3://bucket/prefix)");
            }
            let mut builder = AmazonS3Builder::new()
                .with_bucket_name(bucket)
                .with_region(config.s3_region.clone())
                .with_allow_http(config.s3_allow_http);
            if let Some(endpoint) = &config.s3_endpoint {
                builder = builder
                    .with_endpoint(endpoint.clone())
                    .with_virtual_hosted_style_request(false);
            }
            if let (Some(key), Some(secret)) =
                (&config.s3_access_key_id, &config.s3_secret_access_key)
            {
                builder = builder
                    .with_access_key_id(key.clone())
                    .with_secret_access_key(secret.expose().to_string());
            }
            let store = Arc::new(builder.build().context("configuring the S3 object store")?);
            let prefix = prefix.trim_matches('/').to_string();
            let base_uri = if prefix.is_empty() {
                format!("s3://{bucket}")
            } else {
                format!("s3://{bucket}/{prefix}")
            };
            Ok(Self {
                store: store.clone(),
                prefix,
                base_uri,
                local_root: None,
                multipart: Some(store),
            })
        } else {
            let dir = PathBuf::from(url.strip_prefix("file://").unwrap_or(url));
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("creating the object folder {}", dir.display()))?;
            let dir = dir
                .canonicalize()
                .with_context(|| format!("resolving {}", dir.display()))?;
            let store =
                LocalFileSystem::new_with_prefix(&dir).context("opening the object folder")?;
            Ok(Self {
                store: Arc::new(store),
                prefix: String::new(),
                base_uri: format!("file://{}", dir.display()),
                local_root: Some(dir),
                multipart: None,
            })
        }
    }

    fn path(&self, key: &ObjectKey) -> Path {
        if self.prefix.is_empty() {
            Path::from(key.as_str())
        } else {
            Path::from(format!("{}/{}", self.prefix, key.as_str()))
        }
    }

    /// The URI of a key (or key prefix) as users see it: `s3://bucket/prefix/key` or `file:///dir/key`.
    pub fn uri(&self, key: &ObjectKey) -> String {
        format!("{}/{}", self.base_uri, key.as_str())
    }

    /// Streams `reader` to `key` in parts, computing its SHA-256. At most `max_bytes` are accepted.
    pub async fn put_stream(
        &self,
        key: &ObjectKey,
        mut reader: impl AsyncRead + Unpin,
        max_bytes: u64,
    ) -> Result<Stored, ObjectError> {
        let upload = self
            .store
            .put_multipart(&self.path(key))
            .await
            .with_context(|| format!("starting upload of {key}"))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = match reader.read(&mut buf).await {
                Ok(n) => n,
                Err(e) => {
                    let _ = writer.abort().await;
                    return Err(anyhow::Error::new(e)
                        .context(format!("reading the data for {key}"))
                        .into());
                }
            };
            if n == 0 {
                break;
            }
            size += n as u64;
            if size > max_bytes {
                let _ = writer.abort().await;
                return Err(ObjectError::TooLarge { limit: max_bytes });
            }
            hasher.update(&buf[..n]);
            writer
                .wait_for_capacity(PARTS_IN_FLIGHT)
                .await
                .with_context(|| format!("uploading {key}"))?;
            writer.write(&buf[..n]);
        }
        writer
            .finish()
            .await
            .with_context(|| format!("finishing upload of {key}"))?;
        Ok(Stored {
            size_bytes: size,
            sha256: hex::encode(hasher.finalize()),
        })
    }

    /// Writes a small object whole (an upload's tail, under one staged part).
    pub async fn put_bytes(&self, key: &ObjectKey, bytes: Bytes) -> Result<()> {
        self.store
            .put(&self.path(key), object_store::PutPayload::from(bytes))
            .await
            .with_context(|| format!("writing {key}"))?;
        Ok(())
    }

    /// Uploads a local file, streaming.
    pub async fn put_file(&self, key: &ObjectKey, file: &std::path::Path) -> Result<Stored> {
        let reader = tokio::fs::File::open(file)
            .await
            .with_context(|| format!("opening {}", file.display()))?;
        Ok(self.put_stream(key, reader, u64::MAX).await?)
    }

    /// The whole object in memory (datasets for training, small model files).
    pub async fn get_bytes(&self, key: &ObjectKey) -> Result<Bytes> {
        let result = self
            .store
            .get(&self.path(key))
            .await
            .with_context(|| format!("reading {key}"))?;
        let mut stream = result.into_stream();
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk.with_context(|| format!("reading {key}"))?);
        }
        Ok(Bytes::from(out))
    }

    /// Streams an object into a local file (created or replaced), never whole in memory; its size.
    pub async fn get_to_file(&self, key: &ObjectKey, path: &std::path::Path) -> Result<u64> {
        self.fetch_to_file(key, path, None).await
    }

    /// A local store's own file of `key`, opened for reading, with its size and SHA-256 (`known`
    /// when the caller has them, else read once): what [`Objects::get_to_file_hashed`] gives,
    /// without copying the bytes. `None` on S3.
    pub async fn open_local_hashed(
        &self,
        key: &ObjectKey,
        known: Option<Stored>,
    ) -> Result<Option<(std::fs::File, Stored)>> {
        let Some(root) = &self.local_root else {
            return Ok(None);
        };
        let path = root.join(key.as_str());
        let opened = tokio::task::spawn_blocking(move || -> Result<(std::fs::File, Stored)> {
            use std::io::{Read, Seek};
            let mut file = std::fs::File::open(&path)
                .with_context(|| format!("opening {}", path.display()))?;
            if let Some(known) = known {
                return Ok((file, known));
            }
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; 1 << 20];
            let mut size = 0u64;
            loop {
                let n = file
                    .read(&mut buf)
                    .with_context(|| format!("reading {}", path.display()))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                size += n as u64;
            }
            file.rewind()?;
            Ok((
                file,
                Stored {
                    size_bytes: size,
                    sha256: hex::encode(hasher.finalize()),
                },
            ))
        })
        .await
        .context("the hashing thread ended")??;
        Ok(Some(opened))
    }

    /// [`Objects::get_to_file`], computing the SHA-256 of the bytes as they pass.
    pub async fn get_to_file_hashed(
        &self,
        key: &ObjectKey,
        path: &std::path::Path,
    ) -> Result<Stored> {
        let mut hasher = Sha256::new();
        let size = self.fetch_to_file(key, path, Some(&mut hasher)).await?;
        Ok(Stored {
            size_bytes: size,
            sha256: hex::encode(hasher.finalize()),
        })
    }

    async fn fetch_to_file(
        &self,
        key: &ObjectKey,
        path: &std::path::Path,
        mut hasher: Option<&mut Sha256>,
    ) -> Result<u64> {
        use tokio::io::AsyncWriteExt;
        let result = self
            .store
            .get(&self.path(key))
            .await
            .with_context(|| format!("reading {key}"))?;
        let file = tokio::fs::File::create(path)
            .await
            .with_context(|| format!("creating {}", path.display()))?;
        // Each write of a tokio file is a trip to a blocking thread: written a MiB at a time.
        let mut file = tokio::io::BufWriter::with_capacity(1 << 20, file);
        let mut stream = result.into_stream();
        let mut size = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.with_context(|| format!("reading {key}"))?;
            size += chunk.len() as u64;
            if let Some(hasher) = hasher.as_mut() {
                hasher.update(&chunk);
            }
            file.write_all(&chunk)
                .await
                .with_context(|| format!("writing {}", path.display()))?;
        }
        file.flush().await?;
        Ok(size)
    }

    /// Removes everything under a key prefix, including what an interrupted write left (a local store's
    /// staging files). An interrupted S3 multipart upload's parts are the bucket's lifecycle rules' to
    /// remove (`AbortIncompleteMultipartUpload`): the S3 API lists them only per upload.
    pub async fn delete_prefix(&self, prefix: &ObjectKey) -> Result<()> {
        if let Some(root) = &self.local_root {
            let dir = root.join(prefix.as_str());
            return match tokio::fs::remove_dir_all(&dir).await {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e).with_context(|| format!("removing {}", dir.display())),
            };
        }
        let mut listed = self.store.list(Some(&self.path(prefix)));
        while let Some(meta) = listed.next().await {
            let meta = meta.with_context(|| format!("listing {prefix}"))?;
            match self.store.delete(&meta.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e).with_context(|| format!("removing {}", meta.location)),
            }
        }
        Ok(())
    }

    /// The objects directly and indirectly under a key prefix: their names relative to it, and sizes,
    /// by name.
    pub async fn list(&self, prefix: &ObjectKey) -> Result<Vec<(String, u64)>> {
        let base = self.path(prefix);
        let mut listed = self.store.list(Some(&base));
        let mut out = Vec::new();
        while let Some(meta) = listed.next().await {
            let meta = meta.with_context(|| format!("listing {prefix}"))?;
            let name = meta
                .location
                .prefix_match(&base)
                .map(|parts| {
                    parts
                        .map(|p| p.as_ref().to_string())
                        .collect::<Vec<_>>()
                        .join("/")
                })
                .unwrap_or_default();
            if !name.is_empty() {
                out.push((name, meta.size));
            }
        }
        out.sort();
        Ok(out)
    }

    /// An object as a stream of chunks (downloads), never whole in memory.
    pub async fn get_stream(
        &self,
        key: &ObjectKey,
    ) -> Result<impl futures::Stream<Item = Result<Bytes>> + Send + 'static> {
        let result = self
            .store
            .get(&self.path(key))
            .await
            .with_context(|| format!("reading {key}"))?;
        let key = key.to_string();
        Ok(result
            .into_stream()
            .map(move |chunk| chunk.with_context(|| format!("reading {key}"))))
    }

    /// Removes an object; removing one that does not exist is not an error.
    pub async fn delete(&self, key: &ObjectKey) -> Result<()> {
        match self.store.delete(&self.path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("removing {key}")),
        }
    }

    /// Whether `key` exists and how large it is.
    pub async fn size_of(&self, key: &ObjectKey) -> Result<Option<u64>> {
        match self.store.head(&self.path(key)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("looking up {key}")),
        }
    }

    /// A cheap reachability check for `/readyz`.
    pub async fn ping(&self) -> Result<()> {
        self.size_of(&keys::readiness_probe()).await.map(|_| ())
    }
}
