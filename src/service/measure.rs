//! Text lengths in tokens (`measureTokenLengths`): a base model's tokenizer counts the tokens of every
//! valid text of a dataset, special tokens included and nothing cut off, so a team sees what
//! `maxSeqLength` would cut before it trains.

use super::{Service, ServiceError, ServiceResult};
use crate::domain::{
    BaseModelRef, DatasetKind, DatasetRecord, DatasetStatus, FieldError, MAX_TEXT_CHARS,
    MAX_TOKEN_MEASUREMENTS, TokenLengths, abbreviate, now_ms,
};

/// Texts tokenized at once.
const BATCH: usize = 256;

impl Service {
    /// Counts the tokens of each valid text of dataset `id` with the tokenizer of base model
    /// `tokenizer` (a folder under the model roots, `hf:org/name`, `model:NAME/VERSION`) and keeps the
    /// lengths with the dataset, replacing an earlier count by the same tokenizer.
    #[tracing::instrument(skip_all, fields(dataset_id = %id))]
    pub async fn measure_token_lengths(
        &self,
        id: &str,
        tokenizer: &str,
    ) -> ServiceResult<DatasetRecord> {
        let dataset = self.dataset(id).await?.ok_or_else(|| {
            ServiceError::NotFound(format!("no dataset with id {}", abbreviate(id, 100)))
        })?;
        if dataset.status != DatasetStatus::Ready {
            return Err(ServiceError::Conflict(format!(
                "dataset {} is {}; its texts are counted once it is READY",
                dataset.id,
                dataset.status.as_str()
            )));
        }
        if dataset.summary.kind != Some(DatasetKind::Text) {
            return Err(FieldError::new(
                "id",
                format!(
                    "dataset {} is a table: it has no texts to count",
                    dataset.id
                ),
            )
            .into());
        }
        let base = BaseModelRef::parse("tokenizer", tokenizer)?.ok_or_else(|| {
            FieldError::new(
                "tokenizer",
                "name a base model: a folder under KILN_MODEL_ROOTS, hf:org/name or \
                 model:NAME/VERSION",
            )
        })?;
        super::training::check_base_model("tokenizer", &base, Some(&self.settings.model_roots))
            .await?;
        let scratch = tempfile::tempdir_in(self.work_folder("measure").await?)
            .map_err(anyhow::Error::from)?;
        let model = self
            .base_model_dir(&base, scratch.path(), &|_| {})
            .await
            .map_err(|e| FieldError::new("tokenizer", format!("{e:#}")))?;
        let local = self.local_copy(&dataset).await?;
        let path = scratch
            .path()
            .join(format!("dataset.{}", dataset.format.extension()));
        tokio::fs::rename(local.path(), &path)
            .await
            .map_err(anyhow::Error::from)?;
        let options = crate::data::ReadOptions {
            max_line_bytes: self.settings.max_line_bytes,
            rules: dataset.rules.clone(),
            ..crate::data::ReadOptions::new(dataset.format, dataset.fields.clone())
        };
        let lengths = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let tokenizer =
                crate::train::tokenizer::load(&model.join("tokenizer.json"), MAX_TEXT_CHARS * 4)?;
            let rows = super::training::index_file(&path, &options)?.map_err(|summary| {
                anyhow::anyhow!(
                    "the dataset no longer validates: {}",
                    summary
                        .errors
                        .first()
                        .map(|e| e.message.as_str())
                        .unwrap_or("unknown error")
                )
            })?;
            let longest = MAX_TEXT_CHARS * 4;
            let mut counts = vec![0u64; longest + 1];
            let mut batch = Vec::with_capacity(BATCH);
            for i in 0..rows.len() {
                batch.push(rows.text(i)?);
                if batch.len() == BATCH || i + 1 == rows.len() {
                    let encoded = tokenizer
                        .encode_batch(std::mem::take(&mut batch), true)
                        .map_err(|e| anyhow::anyhow!("tokenizing: {e}"))?;
                    for e in encoded {
                        // Padding to the batch's longest is not part of a text.
                        let tokens = e.get_attention_mask().iter().filter(|&&m| m == 1).count();
                        counts[tokens.min(longest)] += 1;
                    }
                }
            }
            Ok(crate::data::length_summary(&counts))
        })
        .await
        .map_err(anyhow::Error::from)??;
        let Some(lengths) = lengths else {
            return Ok(dataset);
        };
        let mut kept: Vec<TokenLengths> = dataset
            .token_lengths
            .into_iter()
            .filter(|t| t.tokenizer != tokenizer)
            .collect();
        kept.push(TokenLengths {
            tokenizer: tokenizer.to_string(),
            measured_at: now_ms(),
            lengths,
        });
        let drop = kept.len().saturating_sub(MAX_TOKEN_MEASUREMENTS);
        kept.drain(..drop);
        Ok(self.store.record_token_lengths(&dataset.id, &kept).await?)
    }

    /// A folder of the work folder, made if missing.
    async fn work_folder(&self, name: &str) -> ServiceResult<std::path::PathBuf> {
        let dir = self.settings.work_dir.join(name);
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(anyhow::Error::from)?;
        Ok(dir)
    }
}
