//! Pretrained models from a HuggingFace-compatible hub (`baseModel: "hf:org/name"` or
//! `"hf:org/name@revision"`): the three files kiln reads are downloaded once into the work folder's
//! `hub/` cache, then used like a local directory.
//!
//! A file enters the cache only once it is complete and checked: it streams to a `.part` file of its own
//! (removed if anything goes wrong; stale ones are swept), within a size cap ([`max_bytes`]), with
//! connect and read timeouts; `config.json` and `tokenizer.json` must be JSON objects (an HTML error page
//! served with 200 is refused), `model.safetensors` must have a valid header whose tensors fill the file,
//! and a file whose SHA-256 the hub gives (`X-Linked-Etag`) must match it. Then it is renamed into
//! place. Cache folders are named so that no two references share one ([`cache_dir`]).
//!
//! The endpoint is `KILN_HF_ENDPOINT` (default `https://huggingface.co`), with `KILN_HF_TOKEN` sent as
//! a bearer token for private repositories. A download stops when its job does (the caller drops it).
//! It reports each file's start and end, and every [`PROGRESS_EVERY`] in between, through the
//! caller's [`Progress`] (a job's log, the CLI's terminal).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::domain::{HubModel, UserError};

/// The files a base model directory must hold.
pub const MODEL_FILES: [&str; 3] = ["config.json", "tokenizer.json", "model.safetensors"];

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A download that receives nothing for this long fails.
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a download in progress reports how far it is.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(10);
/// Receives a line saying how far a download is.
pub type Progress<'a> = &'a (dyn Fn(String) + Send + Sync);
/// A `.part` file older than this is left over from a download that was killed.
const STALE_PART: Duration = Duration::from_secs(24 * 3600);

/// The largest each file may be.
pub fn max_bytes(file: &str) -> u64 {
    match file {
        "config.json" => crate::train::bert::MAX_CONFIG_BYTES,
        "tokenizer.json" => crate::train::tokenizer::MAX_TOKENIZER_BYTES,
        _ => crate::train::MAX_WEIGHTS_BYTES,
    }
}

/// Where a model's files are cached under `cache_root`: `<org>~<name>@<revision>`. Neither `~` nor `@`
/// can appear in a repository name or a revision, so distinct references never share a folder
/// (`hf:a--b` and `hf:a/b` did when `/` was written as `--`).
pub fn cache_dir(model: &HubModel, cache_root: &Path) -> PathBuf {
    cache_root.join(format!(
        "{}@{}",
        model.repo.replace('/', "~"),
        model.revision
    ))
}

/// Makes sure the model's files are in the cache and returns its directory.
pub async fn fetch(
    model: &HubModel,
    endpoint: &str,
    token: Option<&str>,
    cache_root: &Path,
    progress: Progress<'_>,
) -> Result<PathBuf> {
    let dir = cache_dir(model, cache_root);
    tokio::fs::create_dir_all(&dir)
        .await
        .with_context(|| format!("creating {}", dir.display()))?;
    sweep_stale_parts(&dir).await;
    let client = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT)
        .build()
        .context("building the hub client")?;
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
        download(&client, &url, token, file, &target, &what, progress)
            .await
            .map_err(|e| match e {
                Download::Refused(status) => UserError::new(format!(
                    "downloading {what} from the hub failed: HTTP {status}; check the model name and \
                     revision (and KILN_HF_TOKEN for a private model)"
                ))
                .into(),
                Download::Bad(problem) => {
                    UserError::new(format!("{what} from the hub cannot be used: {problem}")).into()
                }
                Download::Failed(e) => UserError::wrap(
                    format!(
                        "downloading {what} from the hub failed: {}; try again later",
                        network_failure(&e, endpoint)
                    ),
                    e.context(format!("downloading {url}")),
                ),
            })?;
    }
    Ok(dir)
}

/// What went wrong on the network, in words a user can act on (the hub's host, not its URLs).
fn network_failure(error: &anyhow::Error, endpoint: &str) -> String {
    let host = reqwest::Url::parse(endpoint)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_else(|| "the hub".into());
    let cause = error
        .chain()
        .find_map(|c| c.downcast_ref::<reqwest::Error>());
    match cause {
        Some(e) if e.is_connect() => format!("could not connect to {host}"),
        Some(e) if e.is_timeout() => format!("{host} stopped answering (timed out)"),
        Some(e) if e.is_body() || e.is_decode() => {
            format!("the transfer from {host} broke off")
        }
        _ => format!("the transfer from {host} failed"),
    }
}

/// Why a download failed: the hub refused, what it sent is not what it should be, or the transfer
/// itself failed.
enum Download {
    Refused(reqwest::StatusCode),
    Bad(String),
    Failed(anyhow::Error),
}

impl<E: Into<anyhow::Error>> From<E> for Download {
    fn from(e: E) -> Self {
        Self::Failed(e.into())
    }
}

/// A `.part` file, removed unless it was moved into place.
struct Part(PathBuf);

impl Drop for Part {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

async fn download(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    file: &str,
    target: &Path,
    what: &str,
    progress: Progress<'_>,
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
    let limit = max_bytes(file);
    if response.content_length().is_some_and(|n| n > limit) {
        return Err(Download::Bad(format!(
            "it is larger than the {limit} bytes kiln accepts"
        )));
    }
    let expected_sha = response
        .headers()
        .get("x-linked-etag")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim_matches('"').to_ascii_lowercase())
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()));
    let part =
        Part(target.with_file_name(format!("{file}.{}.part", uuid::Uuid::new_v4().simple())));
    let mut out = tokio::fs::File::create(&part.0)
        .await
        .with_context(|| format!("creating {}", part.0.display()))?;
    let total = response.content_length();
    let of_total = |size: u64| match total {
        Some(total) if total > 0 => format!(
            "{} of {} ({:.0}%)",
            human(size),
            human(total),
            100.0 * size as f64 / total as f64
        ),
        _ => human(size),
    };
    progress(format!(
        "downloading {what} from the hub ({})",
        total.map(human).unwrap_or_else(|| "size unknown".into())
    ));
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut body = response.bytes_stream();
    let mut next_report = tokio::time::Instant::now() + PROGRESS_EVERY;
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        size += chunk.len() as u64;
        if tokio::time::Instant::now() >= next_report {
            progress(format!("downloading {what}: {}", of_total(size)));
            next_report += PROGRESS_EVERY;
        }
        if size > limit {
            return Err(Download::Bad(format!(
                "it is larger than the {limit} bytes kiln accepts"
            )));
        }
        hasher.update(&chunk);
        out.write_all(&chunk).await?;
    }
    out.flush().await?;
    drop(out);
    if let Some(expected) = expected_sha {
        let actual = hex::encode(hasher.finalize());
        if actual != expected {
            return Err(Download::Bad(format!(
                "its SHA-256 is {actual}, not the {expected} the hub announced"
            )));
        }
    }
    let path = part.0.clone();
    let file_name = file.to_string();
    tokio::task::spawn_blocking(move || verify(&file_name, &path))
        .await
        .context("the verification thread panicked")?
        .map_err(Download::Bad)?;
    tokio::fs::rename(&part.0, target)
        .await
        .with_context(|| format!("moving {} into place", part.0.display()))?;
    std::mem::forget(part);
    progress(format!("downloaded {what}: {}, checked", human(size)));
    Ok(())
}

fn human(bytes: u64) -> String {
    crate::train::memory::human(bytes)
}

/// Checks a downloaded file is what its name says before it enters the cache.
fn verify(file: &str, path: &Path) -> Result<(), String> {
    match file {
        "model.safetensors" => verify_safetensors(path),
        _ => {
            let bytes = std::fs::read(path).map_err(|e| format!("it cannot be read back: {e}"))?;
            match serde_json::from_slice::<serde_json::Value>(&bytes) {
                Ok(serde_json::Value::Object(_)) => Ok(()),
                Ok(_) => Err("it is JSON but not an object".into()),
                Err(e) => Err(format!(
                    "it is not JSON ({e}); the hub may have sent an error page"
                )),
            }
        }
    }
}

/// A safetensors file: an 8-byte little-endian header length, that many bytes of JSON naming each
/// tensor's byte range, and then exactly the bytes those ranges cover.
fn verify_safetensors(path: &Path) -> Result<(), String> {
    use std::io::Read;
    const MAX_HEADER: u64 = 100 * 1024 * 1024;
    let mut file = std::fs::File::open(path).map_err(|e| format!("it cannot be read back: {e}"))?;
    let size = file.metadata().map_err(|e| e.to_string())?.len();
    let mut length = [0u8; 8];
    file.read_exact(&mut length)
        .map_err(|_| "it is too short to be a safetensors file".to_string())?;
    let header_len = u64::from_le_bytes(length);
    if header_len > MAX_HEADER || 8 + header_len > size {
        return Err("its safetensors header length is out of range".into());
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header)
        .map_err(|_| "its safetensors header is cut short".to_string())?;
    let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&header)
        .map_err(|e| format!("its safetensors header is not JSON: {e}"))?;
    let data_end = header
        .iter()
        .filter(|(name, _)| *name != "__metadata__")
        .filter_map(|(_, tensor)| tensor["data_offsets"][1].as_u64())
        .max()
        .unwrap_or(0);
    if 8 + header_len + data_end != size {
        return Err(format!(
            "its tensors cover {data_end} bytes but the file holds {}",
            size - 8 - header_len
        ));
    }
    Ok(())
}

/// Removes `.part` files left by downloads that were killed long ago.
async fn sweep_stale_parts(dir: &Path) {
    let Ok(mut entries) = tokio::fs::read_dir(dir).await else {
        return;
    };
    while let Ok(Some(entry)) = entries.next_entry().await {
        let path = entry.path();
        let stale = entry
            .metadata()
            .await
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > STALE_PART);
        if stale && path.extension().is_some_and(|e| e == "part") {
            let _ = tokio::fs::remove_file(&path).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_references_never_share_a_cache_folder() {
        let parse = |raw: &str| HubModel::parse("baseModel", raw).unwrap().unwrap();
        let root = Path::new("/cache");
        let dirs: Vec<PathBuf> = ["hf:a--b", "hf:a/b", "hf:a@b", "hf:a/b@c", "hf:a~b"]
            .iter()
            .filter_map(|r| HubModel::parse("baseModel", r).and_then(|p| p.ok()))
            .map(|m| cache_dir(&m, root))
            .collect();
        let mut unique = dirs.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), dirs.len(), "{dirs:?}");
        assert_eq!(
            cache_dir(&parse("hf:org/name"), root),
            PathBuf::from("/cache/org~name@main")
        );
    }
}
