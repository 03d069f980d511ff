//! Pretrained models from a HuggingFace-compatible hub (`baseModel: "hf:org/name"` or
//! `"hf:org/name@revision"`): the three files kiln reads are downloaded once into the work folder's
//! `hub/` cache, then used like a local directory.
//!
//! Downloads stream to a `.part` file that is renamed when complete, so an interrupted download is never
//! mistaken for a model. The endpoint is `KILN_HF_ENDPOINT` (default `https://huggingface.co`), with
//! `KILN_HF_TOKEN` sent as a bearer token for private repositories.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use tokio::io::AsyncWriteExt;

use crate::domain::FieldError;

/// The files a base model directory must hold.
pub const MODEL_FILES: [&str; 3] = ["config.json", "tokenizer.json", "model.safetensors"];

/// A model on the hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubModel {
    pub repo: String,
    pub revision: String,
}

impl HubModel {
    pub const PREFIX: &str = "hf:";

    /// Parses `hf:org/name` or `hf:org/name@revision`; `None` when `raw` is not a hub reference.
    pub fn parse(field: &str, raw: &str) -> Option<Result<Self, FieldError>> {
        let rest = raw.strip_prefix(Self::PREFIX)?;
        let (repo, revision) = rest.split_once('@').unwrap_or((rest, "main"));
        let safe = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        };
        let segments: Vec<&str> = repo.split('/').collect();
        if !(1..=2).contains(&segments.len())
            || !segments.iter().all(|s| safe(s) && !s.starts_with('.'))
        {
            return Some(Err(FieldError::new(
                field,
                format!("{raw:?} is not a hub model: expected hf:org/name or hf:org/name@revision"),
            )));
        }
        if !safe(revision) || revision.starts_with('.') {
            return Some(Err(FieldError::new(
                field,
                format!("{revision:?} is not a valid revision"),
            )));
        }
        Some(Ok(Self {
            repo: repo.to_string(),
            revision: revision.to_string(),
        }))
    }

    /// Where the files are cached under `cache_root`.
    pub fn cache_dir(&self, cache_root: &Path) -> PathBuf {
        cache_root
            .join(self.repo.replace('/', "--"))
            .join(&self.revision)
    }
}

/// Makes sure the model's files are in the cache and returns its directory.
pub async fn fetch(
    model: &HubModel,
    endpoint: &str,
    token: Option<&str>,
    cache_root: &Path,
) -> Result<PathBuf> {
    let dir = model.cache_dir(cache_root);
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
        download(&client, &url, token, &target)
            .await
            .with_context(|| {
                format!(
                    "downloading {file} of {}@{} from {endpoint}",
                    model.repo, model.revision
                )
            })?;
    }
    Ok(dir)
}

async fn download(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    target: &Path,
) -> Result<()> {
    let mut request = client.get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await?;
    let status = response.status();
    if !status.is_success() {
        bail!("HTTP {status}");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_references_are_parsed_and_checked() {
        let ok = HubModel::parse("baseModel", "hf:sentence-transformers/all-MiniLM-L6-v2")
            .unwrap()
            .unwrap();
        assert_eq!(
            ok,
            HubModel {
                repo: "sentence-transformers/all-MiniLM-L6-v2".into(),
                revision: "main".into()
            }
        );
        let pinned = HubModel::parse("baseModel", "hf:bert-base-uncased@v1.0")
            .unwrap()
            .unwrap();
        assert_eq!(pinned.revision, "v1.0");
        assert!(HubModel::parse("baseModel", "/local/dir").is_none());
        for bad in ["hf:", "hf:a/b/c", "hf:../x", "hf:org/name@", "hf:org/na me"] {
            assert!(HubModel::parse("baseModel", bad).unwrap().is_err(), "{bad}");
        }
    }
}
