//! Staged writes: an object assembled from numbered parts that arrive over many requests, possibly to
//! different processes, and become the object at [`Objects::finish_staged`]. On S3 this is the
//! multipart upload API (the parts are S3's, their ids its ETags; every part but the last must be at least
//! 5 MiB, see [`STAGED_PART_SIZE`]); on local files each part is a file beside the object
//! (`<key>.parts/<n>`), joined when it finishes. Either way nothing is held in memory but the part being
//! written.

use anyhow::{Context, Result};
use bytes::Bytes;
use futures::StreamExt;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};

use super::Objects;
use crate::domain::ObjectKey;

/// The size of every staged part but the last. S3 refuses smaller ones (5 MiB is its minimum).
pub const STAGED_PART_SIZE: usize = 5 * 1024 * 1024;

impl Objects {
    fn part_path(&self, key: &ObjectKey, index: usize) -> Path {
        Path::from(format!("{}.parts/{index:06}", self.path(key)))
    }

    /// Starts assembling `key`; the id to name the staging by (empty for local files).
    pub async fn begin_staged(&self, key: &ObjectKey) -> Result<String> {
        match &self.multipart {
            Some(multipart) => multipart
                .create_multipart(&self.path(key))
                .await
                .with_context(|| format!("starting a multipart upload of {key}")),
            None => Ok(String::new()),
        }
    }

    /// Stores part `index` (from 0) of `key`, replacing one stored before under that index; the part's
    /// id.
    pub async fn put_staged_part(
        &self,
        key: &ObjectKey,
        staging: &str,
        index: usize,
        bytes: Bytes,
    ) -> Result<String> {
        match &self.multipart {
            Some(multipart) => {
                let part = multipart
                    .put_part(
                        &self.path(key),
                        &staging.to_string(),
                        index,
                        PutPayload::from(bytes),
                    )
                    .await
                    .with_context(|| format!("storing part {index} of {key}"))?;
                Ok(part.content_id)
            }
            None => {
                self.store
                    .put(&self.part_path(key, index), PutPayload::from(bytes))
                    .await
                    .with_context(|| format!("storing part {index} of {key}"))?;
                Ok(index.to_string())
            }
        }
    }

    /// Makes `key` from the parts named by `parts` (their ids, in order). On local storage, where
    /// the parts are read and written again, the answer is the object's size and SHA-256.
    pub async fn finish_staged(
        &self,
        key: &ObjectKey,
        staging: &str,
        parts: &[String],
    ) -> Result<Option<super::Stored>> {
        match &self.multipart {
            Some(multipart) => {
                let parts = parts
                    .iter()
                    .map(|id| object_store::multipart::PartId {
                        content_id: id.clone(),
                    })
                    .collect();
                multipart
                    .complete_multipart(&self.path(key), &staging.to_string(), parts)
                    .await
                    .with_context(|| format!("completing the multipart upload of {key}"))?;
                Ok(None)
            }
            None => {
                let count = parts.len();
                let store = self.store.clone();
                let paths: Vec<Path> = (0..count).map(|i| self.part_path(key, i)).collect();
                let chunks = futures::stream::iter(paths).then(move |path| {
                    let store = store.clone();
                    async move {
                        let got = store.get(&path).await.map_err(std::io::Error::other)?;
                        got.bytes().await.map_err(std::io::Error::other)
                    }
                });
                let reader = tokio_util::io::StreamReader::new(Box::pin(chunks));
                let stored = self.put_stream(key, reader, u64::MAX).await?;
                self.drop_staged_parts(key, count).await;
                Ok(Some(stored))
            }
        }
    }

    /// Gives up assembling `key`: its parts are removed (best effort).
    pub async fn abort_staged(&self, key: &ObjectKey, staging: &str, parts: usize) {
        match &self.multipart {
            Some(multipart) => {
                if let Err(e) = multipart
                    .abort_multipart(&self.path(key), &staging.to_string())
                    .await
                {
                    tracing::warn!(error = %e, %key, "aborting a multipart upload");
                }
            }
            None => self.drop_staged_parts(key, parts + 1).await,
        }
    }

    async fn drop_staged_parts(&self, key: &ObjectKey, parts: usize) {
        if let Some(root) = &self.local_root {
            let dir = root.join(format!("{}.parts", key.as_str()));
            let _ = tokio::fs::remove_dir_all(dir).await;
            return;
        }
        for index in 0..parts {
            let _ = self.store.delete(&self.part_path(key, index)).await;
        }
    }
}
