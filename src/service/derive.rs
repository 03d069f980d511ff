//! Datasets made from other datasets: a redacted copy (`redactDataset`); augmented, balanced and
//! generated ones are in `augment`. A derived dataset is a JSONL
//! file written from its parent's rows, stored and validated like an upload with the parent's mapping
//! and rules, and names its parent and how it was made (`Dataset.derivation`). The same operation on
//! the same parent gives back the dataset it made before.

use super::{Service, ServiceError, ServiceResult};
use crate::data::rewrite::{Row, rewrite};
use crate::data::{ReadOptions, RowSource, pii};
use crate::domain::{
    DatasetFormat, DatasetRecord, Derivation, DerivationKind, DisplayName, FieldError, FieldNames,
    PiiKind, ValidationRules, abbreviate, now_ms,
};
use crate::objects::keys;
use crate::store::NewDataset;

/// The most datasets `Dataset.children` lists.
pub const MAX_CHILDREN: i64 = 100;

impl Service {
    /// A copy of a dataset with every finding of `kinds` in its texts replaced by the kind in brackets
    /// (`[EMAIL]`); the copy is scanned again like any upload.
    #[tracing::instrument(skip_all, fields(dataset_id = %id))]
    pub async fn redact_dataset(
        &self,
        id: &str,
        kinds: &[PiiKind],
    ) -> ServiceResult<DatasetRecord> {
        if kinds.is_empty() {
            return Err(FieldError::new("kinds", "must name at least one kind").into());
        }
        let mut kinds = kinds.to_vec();
        kinds.sort();
        kinds.dedup();
        let parent = self.checked_dataset(id).await?;
        let text_field = parent.fields.text.clone();
        let spec = serde_json::json!({
            "kinds": kinds.iter().map(|k| k.as_str()).collect::<Vec<_>>(),
        });
        let name = format!("{} (redacted)", abbreviate(&parent.name, 180));
        let derivation = Derivation::new(DerivationKind::Redact, Some(parent.id.clone()), spec);
        self.derive(&parent, name, derivation, move |_, row| {
            vec![match row {
                Row::Object(mut object) => {
                    if let Some(serde_json::Value::String(text)) = object.get_mut(&text_field) {
                        *text = pii::redact(text.as_str(), &kinds);
                    }
                    Row::Object(object)
                }
                Row::Raw(line) => Row::Raw(pii::redact(&line, &kinds)),
            }]
        })
        .await
    }

    /// The datasets made from `id`, oldest first.
    pub async fn dataset_children(&self, id: &str) -> ServiceResult<Vec<DatasetRecord>> {
        Ok(self.store.dataset_children(id, MAX_CHILDREN).await?)
    }

    /// Writes `parent`'s rows through `change` into a new JSONL dataset named `name`, stores it and
    /// validates it with the parent's mapping and rules. The same bytes made the same way before give
    /// back that dataset.
    pub(super) async fn derive(
        &self,
        parent: &DatasetRecord,
        name: String,
        derivation: Derivation,
        change: impl FnMut(u64, Row) -> Vec<Row> + Send + 'static,
    ) -> ServiceResult<DatasetRecord> {
        let name = DisplayName::parse("name", &name)?.into_string();
        let local = self.local_copy(parent).await?;
        let file = local.reopen().map_err(anyhow::Error::from)?;
        let options = ReadOptions {
            max_line_bytes: self.settings.max_line_bytes,
            ..ReadOptions::new(parent.format, parent.fields.clone())
        };
        let parent_id = parent.id.clone();
        let written = self
            .write_rows(move |mut out| {
                rewrite(&RowSource::File(file), &options, &mut out, change).map_err(|e| {
                    ServiceError::Conflict(format!(
                        "dataset {parent_id} could not be read to the end: {e}"
                    ))
                })
            })
            .await?;
        self.store_derived(
            name,
            parent.fields.clone(),
            parent.rules.clone(),
            derivation,
            written,
        )
        .await
    }

    /// Runs `write` off the async threads into a new file in the work folder, and returns the file.
    pub(super) async fn write_rows(
        &self,
        write: impl FnOnce(&mut dyn std::io::Write) -> ServiceResult<u64> + Send + 'static,
    ) -> ServiceResult<tempfile::NamedTempFile> {
        let written = self.spool_file().await?;
        let out = written.reopen().map_err(anyhow::Error::from)?;
        tokio::task::spawn_blocking(move || -> ServiceResult<u64> {
            let mut out = std::io::BufWriter::new(out);
            let rows = write(&mut out)?;
            use std::io::Write;
            out.flush().map_err(anyhow::Error::from)?;
            Ok(rows)
        })
        .await
        .map_err(anyhow::Error::from)??;
        Ok(written)
    }

    /// Stores the JSONL file `written` as a dataset named `name`, read with `fields` and checked with
    /// `rules`, made as `derivation` says, and validates it. A dataset made before from the same
    /// bytes the same way is given back instead.
    pub(super) async fn store_derived(
        &self,
        name: String,
        fields: FieldNames,
        rules: ValidationRules,
        derivation: Derivation,
        written: tempfile::NamedTempFile,
    ) -> ServiceResult<DatasetRecord> {
        let id = uuid::Uuid::new_v4().to_string();
        let key = keys::dataset(&id, DatasetFormat::Jsonl)?;
        let stored = self.objects.put_file(&key, written.path()).await?;
        if let Some(existing) = self
            .store
            .dataset_with_content(&stored.sha256, DatasetFormat::Jsonl, &fields, &rules)
            .await?
            .filter(|d| d.derivation.as_ref().map(|x| &x.spec_hash) == Some(&derivation.spec_hash))
        {
            self.remove_objects(keys::dataset_folder(&id)).await;
            return Ok(existing);
        }
        self.store
            .insert_dataset(
                &NewDataset {
                    id: id.clone(),
                    name,
                    format: DatasetFormat::Jsonl,
                    object_key: key,
                    size_bytes: stored.size_bytes as i64,
                    sha256: stored.sha256.clone(),
                    fields: fields.clone(),
                    rules: rules.clone(),
                    derivation: Some(derivation),
                },
                now_ms(),
            )
            .await?;
        let declared = super::datasets::Declared {
            name: String::new(),
            format: DatasetFormat::Jsonl,
            names: fields,
            rules,
        };
        let file = written.reopen().map_err(anyhow::Error::from)?;
        self.check_dataset(&id, &declared, file).await
    }
}
