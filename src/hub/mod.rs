//! Pretrained models from a HuggingFace-compatible hub (`baseModel: "hf:org/name"` or
//! `"hf:org/name@revision"`): the three files kiln reads are downloaded once into the work folder's
//! `hub/` cache, then used like a local directory.
//!
//! Downloads stream to a `.part` file that is renamed when complete, so an interrupted download is never
//! mistaken for a model. The endpoint is `KILN_HF_ENDPOINT` (default `https://huggingface.co`), with
//! `KILN_HF_TOKEN` sent as a bearer token for private repositories.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use futures::StreamExt;
use tokio::io::AsyncWriteExt;

use crate::domain::{HubModel, UserError};

/// The files a base model directory must hold.
pub const MODEL_FILES: [&str; 3] = ["config.json", "tokenizer.json", "model.safetensors"];

/// Where a model's files are cached under `cache_root`.
pub fn cache_dir(model: &HubModel, cache_root: &Path) -> PathBuf {
    cache_root
        .join(model.repo.replace('/', "--"))
        .join(&model.revision)
}

/// Makes sure the model's files are in the cache and returns its directory.
pub async fn fetch(
    model: &HubModel,
    endpoint: &str,
    token: Option<&str>,
    cache_root: &Path,
) -> Result<PathBuf> {
    let dir = cache_dir(model, cache_root);
    tokio::fs::create_dir_all(&dir)
        .await
        .with_context(|| format!("creating {}", dir.display()))?;
    let client = reqwest::Client::new();
    for file in MODEL_FILES {
        let target = dir.join(file);
        if tokio::fs::try_exists(&target).await.unwrap_or(false) {
            continue;
        }
        let url = format!(
            "{}/{}/resolve/{}/{file}",
            endpoint.trim_end_matches('/'),
            model.repo,
            model.revision
        );
        tracing::info!(%url, "downloading a base model file");
        let what = format!("{file} of {}@{}", model.repo, model.revision);
        download(&client, &url, token, &target)
            .await
            .map_err(|e| match e {
                Download::Refused(status) => UserError::new(format!(
                    "downloading {what} from the hub failed: HTTP {status}; check the model name and \
                     revision (and KILN_HF_TOKEN for a private model)"
                ))
                .into(),
                Download::Failed(e) => UserError::wrap(
                    format!("downloading {what} from the hub failed; try again later"),
                    e.context(format!("downloading {url}")),
                ),
            })?;
    }
    Ok(dir)
}

/// Why a download failed: the hub answered with an error status, or the transfer itself failed.
enum Download {
    Refused(reqwest::StatusCode),
    Failed(anyhow::Error),
}

impl<E: Into<anyhow::Error>> From<E> for Download {
    fn from(e: E) -> Self {
        Self::Failed(e.into())
    }
}

async fn download(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    target: &Path,
) -> Result<(), Download> {
    let mut request = client.get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await?;
    let status = response.status();
    if !status.is_success() {
        return Err(Download::Refused(status));
    }
    let part = target.with_extension("part");
    let mut file = tokio::fs::File::create(&part)
        .await
        .with_context(|| format!("creating {}", part.display()))?;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        file.write_all(&chunk?).await?;
    }
    file.flush().await?;
    drop(file);
    tokio::fs::rename(&part, target)
        .await
        .with_context(|| format!("moving {} into place", part.display()))?;
    Ok(())
}
