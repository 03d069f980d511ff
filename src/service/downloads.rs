//! Downloads: a model version's files as one ZIP, streamed from the object store.

use std::pin::Pin;

use bytes::Bytes;
use futures::Stream;

use super::{Service, ServiceError, ServiceResult};
use crate::domain::{FieldError, ModelName};
use crate::objects::archive;

/// A file to send: its name for the client and its bytes as they are read.
pub struct Download {
    pub file_name: String,
    pub content_type: &'static str,
    /// The length, when known before the body is sent (an archive is made as it is sent).
    pub size: Option<u64>,
    pub body: Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>,
}

impl Service {
    /// The ZIP of a model version's files (`model.safetensors`, `config.json`, `tokenizer.json`,
    /// `kiln.json`, adapters when kept apart), named `<model>-v<version>.zip`.
    #[tracing::instrument(skip_all, fields(model = %model))]
    pub async fn download_model_version(
        &self,
        model: &str,
        version: &str,
    ) -> ServiceResult<Download> {
        let name = ModelName::parse("model", model).map_err(|_| {
            ServiceError::NotFound(format!(
                "no model named {}",
                crate::domain::abbreviate(model, 64)
            ))
        })?;
        let number = crate::domain::version_number(version).ok_or_else(|| {
            FieldError::new(
                "version",
                format!(
                    "must be a version number from 1, written plainly (got {})",
                    crate::domain::abbreviate(version, 20)
                ),
            )
        })?;
        let record = self
            .store
            .model_version(name.as_str(), number)
            .await?
            .ok_or_else(|| {
                ServiceError::NotFound(format!("model {} has no version {number}", name.as_str()))
            })?;
        let entries = self
            .version_objects(&record)
            .await?
            .into_iter()
            .map(|(file, key)| (file, archive::Source::Object(key)))
            .collect();
        Ok(Download {
            file_name: format!("{}-v{number}.zip", name.as_str()),
            content_type: "application/zip",
            size: None,
            body: Box::pin(archive::zip(&self.objects, entries)),
        })
    }
}

/// Where a version's ZIP is served, relative to the API's address.
pub fn model_version_path(model: &str, version: i64) -> String {
    format!("/models/{model}/versions/{version}/download")
}
