//! What a training run is asked to do, checked once: the task, where its weights start from, the size of
//! a model trained from scratch, and the hyperparameters. `submitJob` and `kiln train` both parse
//! through [`TrainingSettings::parse`], so the rules between these fields are written once.

use std::path::PathBuf;

use super::{
    AliasName, CustomizationInput, FieldError, Hyperparams, HyperparamsInput, LoraSettings,
    ModelArchitecture, ModelConfig, ModelConfigInput, ModelManifest, ModelName, Pooling, TaskKind,
    abbreviate,
};

/// A model on a HuggingFace-compatible hub: `hf:org/name` or `hf:org/name@revision`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubModel {
    pub repo: String,
    pub revision: String,
    /// Whether the reference named its revision (otherwise it is `main`).
    pub pinned: bool,
}

impl HubModel {
    pub const PREFIX: &str = "hf:";
    pub const DEFAULT_REVISION: &str = "main";
    /// Longest repository name (`org/name`) and revision.
    pub const MAX_REPO: usize = 200;
    pub const MAX_REVISION: usize = 128;

    /// Parses `hf:org/name[@revision]`; `None` when `raw` is not a hub reference at all.
    pub fn parse(field: &str, raw: &str) -> Option<Result<Self, FieldError>> {
        let rest = raw.strip_prefix(Self::PREFIX)?;
        let (repo, revision, pinned) = match rest.split_once('@') {
            Some((repo, revision)) => (repo, revision, true),
            None => (rest, Self::DEFAULT_REVISION, false),
        };
        let safe = |s: &str| {
            !s.is_empty()
                && !s.starts_with('.')
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        };
        if repo.len() > Self::MAX_REPO || revision.len() > Self::MAX_REVISION {
            return Some(Err(FieldError::new(
                field,
                format!(
                    "a hub model's name is at most {} characters and its revision at most {}",
                    Self::MAX_REPO,
                    Self::MAX_REVISION
                ),
            )));
        }
        let segments: Vec<&str> = repo.split('/').collect();
        if !(1..=2).contains(&segments.len()) || !segments.iter().all(|s| safe(s)) {
            return Some(Err(FieldError::new(
                field,
                format!(
                    "{:?} is not a hub model: expected hf:org/name or hf:org/name@revision",
                    abbreviate(raw, 80)
                ),
            )));
        }
        if !safe(revision) {
            return Some(Err(FieldError::new(
                field,
                format!("{:?} is not a valid revision", abbreviate(revision, 80)),
            )));
        }
        Some(Ok(Self {
            repo: repo.to_string(),
            revision: revision.to_string(),
            pinned,
        }))
    }
}

impl std::fmt::Display for HubModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", Self::PREFIX, self.repo)?;
        if self.pinned {
            write!(f, "@{}", self.revision)?;
        }
        Ok(())
    }
}

/// Which version of a registered model: a number, or an alias (resolved to a number when a job is
/// submitted, so every attempt of the job starts from the same weights).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionSelector {
    Number(i64),
    Alias(AliasName),
}

/// A version in kiln's own registry: `model:NAME/VERSION` or `model:NAME@ALIAS`. A retrain starts from
/// its weights, tokenizer and labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredModel {
    pub model: ModelName,
    pub version: VersionSelector,
}

impl RegisteredModel {
    pub const PREFIX: &str = "model:";

    /// Parses `model:NAME/VERSION` or `model:NAME@ALIAS`; `None` when `raw` is not a registry reference.
    pub fn parse(field: &str, raw: &str) -> Option<Result<Self, FieldError>> {
        let rest = raw.strip_prefix(Self::PREFIX)?;
        let shape = || {
            FieldError::new(
                field,
                format!(
                    "{:?} is not a registered model: expected model:NAME/VERSION or model:NAME@ALIAS",
                    abbreviate(raw, 80)
                ),
            )
        };
        let within = |e: FieldError| FieldError::new(field, format!("in {raw:?}: {}", e.message));
        // A model name holds neither `/` nor `@`: the first of them says which form this is.
        let by_number = rest
            .find(['/', '@'])
            .is_some_and(|i| rest[i..].starts_with('/'));
        let parsed = if let Some((name, number)) = rest.split_once('/').filter(|_| by_number) {
            let version = super::version_number(number).ok_or_else(|| {
                FieldError::new(
                    field,
                    format!(
                        "in {:?}: the version must be a whole number from 1, written plainly",
                        abbreviate(raw, 80)
                    ),
                )
            });
            version.and_then(|v| {
                Ok(Self {
                    model: ModelName::parse(field, name).map_err(within)?,
                    version: VersionSelector::Number(v),
                })
            })
        } else if let Some((name, alias)) = rest.split_once('@') {
            ModelName::parse(field, name)
                .map_err(within)
                .and_then(|model| {
                    let alias = AliasName::parse(field, alias).map_err(|e| {
                        FieldError::new(field, format!("in {raw:?}: the alias {}", e.message))
                    })?;
                    Ok(Self {
                        model,
                        version: VersionSelector::Alias(alias),
                    })
                })
        } else {
            Err(shape())
        };
        Some(parsed)
    }

    /// The version's number, once resolved.
    pub fn number(&self) -> Option<i64> {
        match self.version {
            VersionSelector::Number(v) => Some(v),
            VersionSelector::Alias(_) => None,
        }
    }
}

impl std::fmt::Display for RegisteredModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.version {
            VersionSelector::Number(v) => write!(f, "{}{}/{v}", Self::PREFIX, self.model.as_str()),
            VersionSelector::Alias(a) => {
                write!(f, "{}{}@{}", Self::PREFIX, self.model.as_str(), a.as_str())
            }
        }
    }
}

/// Where a fine-tune's weights come from: a HuggingFace-format directory on the server, the hub, or a
/// version in kiln's registry (a retrain).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BaseModelRef {
    Local(PathBuf),
    Hub(HubModel),
    Registered(RegisteredModel),
}

impl BaseModelRef {
    /// Longest reference.
    pub const MAX_LEN: usize = 1024;

    /// Parses a reference; `None` for an empty one (no base model).
    pub fn parse(field: &str, raw: &str) -> Result<Option<Self>, FieldError> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Ok(None);
        }
        if raw.len() > Self::MAX_LEN {
            return Err(FieldError::new(
                field,
                format!("must be at most {} characters", Self::MAX_LEN),
            ));
        }
        if raw.chars().any(char::is_control) {
            return Err(FieldError::new(
                field,
                "must not contain control characters",
            ));
        }
        if let Some(registered) = RegisteredModel::parse(field, raw) {
            return Ok(Some(Self::Registered(registered?)));
        }
        Ok(Some(match HubModel::parse(field, raw) {
            Some(hub) => Self::Hub(hub?),
            None => Self::Local(PathBuf::from(raw)),
        }))
    }
}

impl std::fmt::Display for BaseModelRef {
    /// The reference as it was given (what `Job.baseModel` shows and the store keeps).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Local(path) => write!(f, "{}", path.display()),
            Self::Hub(hub) => hub.fmt(f),
            Self::Registered(registered) => registered.fmt(f),
        }
    }
}

/// Training settings as a user sends them; field names in errors are the API's.
#[derive(Debug, Clone, Default)]
pub struct TrainingInput {
    pub task: Option<TaskKind>,
    pub base_model: Option<String>,
    pub model_config: Option<ModelConfigInput>,
    pub hyperparameters: HyperparamsInput,
    pub customization: Option<CustomizationInput>,
    /// With a registered base model: start the classification head afresh (the dataset's labels may
    /// then differ from the version's).
    pub reset_head: bool,
}

impl TrainingInput {
    /// Readies a retrain from a registered version: the base model becomes `pinned` (the version by
    /// number, whatever alias named it), the task must be the version's, and what shapes the network
    /// comes from the version unless given: a text model's pooling, an MLP's hidden layers (which
    /// cannot change).
    pub fn start_from(
        &mut self,
        pinned: &RegisteredModel,
        manifest: &ModelManifest,
    ) -> Result<(), FieldError> {
        if let Some(task) = self.task
            && task != manifest.task
        {
            return Err(FieldError::new(
                "task",
                format!(
                    "{pinned} is a {} model; a retrain keeps its task",
                    manifest.task.as_str()
                ),
            ));
        }
        self.task = Some(manifest.task);
        self.base_model = Some(pinned.to_string());
        let h = &mut self.hyperparameters;
        match &manifest.architecture {
            ModelArchitecture::Bert { pooling, .. } => {
                h.pooling.get_or_insert(*pooling);
            }
            ModelArchitecture::Mlp { hidden_sizes, .. } => {
                let kept: Vec<i64> = hidden_sizes.iter().map(|&n| n as i64).collect();
                match &h.hidden_sizes {
                    Some(given) if *given != kept => {
                        return Err(FieldError::new(
                            "hyperparameters.hiddenSizes",
                            format!(
                                "a retrain keeps {pinned}'s hidden layers {kept:?}; leave \
                                 hiddenSizes out"
                            ),
                        ));
                    }
                    _ => h.hidden_sizes = Some(kept),
                }
            }
        }
        Ok(())
    }
}

impl TrainingSettings {
    /// Checks a retrain against its dataset (its feature columns, empty for text, and its labels): the
    /// version's task, the same features in the same order (an MLP), and the version's labels (in any
    /// order) and pooling unless the head is reset. The one place these rules live: submitJob checks
    /// them, and the training run again on what it reads.
    pub fn check_retrain(
        &self,
        manifest: &ModelManifest,
        dataset_features: &[String],
        dataset_labels: &[String],
    ) -> Result<(), FieldError> {
        let base = self
            .base_model
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        if manifest.task != self.task {
            return Err(FieldError::new(
                "task",
                format!(
                    "{base} is a {} model; a retrain keeps its task",
                    manifest.task.as_str()
                ),
            ));
        }
        if let ModelArchitecture::Mlp { features, .. } = &manifest.architecture
            && features != dataset_features
        {
            return Err(FieldError::new(
                "datasetId",
                format!(
                    "the dataset's features ({}) are not {base}'s ({}) in the same order",
                    abbreviate(&dataset_features.join(", "), 200),
                    abbreviate(&features.join(", "), 200)
                ),
            ));
        }
        if self.reset_head {
            return Ok(());
        }
        let mut old = manifest.labels.clone();
        old.sort();
        let mut new = dataset_labels.to_vec();
        new.sort();
        if old != new {
            return Err(FieldError::new(
                "baseModel",
                format!(
                    "{base} was trained on the labels {}; the dataset has {}. Give resetHead: true \
                     to train a new head on the dataset's labels",
                    abbreviate(&old.join(", "), 200),
                    abbreviate(&new.join(", "), 200)
                ),
            ));
        }
        if let ModelArchitecture::Bert { pooling, .. } = &manifest.architecture
            && *pooling != self.hyperparameters.pooling
        {
            return Err(FieldError::new(
                "hyperparameters.pooling",
                format!(
                    "{base}'s head was trained over {} pooling; keep it, or give resetHead: true",
                    format!("{pooling:?}").to_uppercase()
                ),
            ));
        }
        Ok(())
    }
}

/// Checked training settings, defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainingSettings {
    pub task: TaskKind,
    /// Text tasks only.
    pub base_model: Option<BaseModelRef>,
    /// The size of the random-initialised BERT: set for a text task without a base model, `None`
    /// otherwise.
    pub model_config: Option<ModelConfig>,
    pub hyperparameters: Hyperparams,
    /// LoRA adapters instead of a full fine-tune (text tasks with a base model only).
    pub lora: Option<LoraSettings>,
    /// With a registered base model: the head starts from random weights instead of the version's.
    pub reset_head: bool,
}

impl TrainingSettings {
    /// Checks each field and the rules between them. `task` defaults to text classification.
    pub fn parse(input: &TrainingInput) -> Result<Self, FieldError> {
        let task = input.task.unwrap_or(TaskKind::TextClassification);
        let base_model = match input.base_model.as_deref() {
            None => None,
            Some(raw) => BaseModelRef::parse("baseModel", raw)?,
        };
        let registered = matches!(base_model, Some(BaseModelRef::Registered(_)));
        if base_model.is_some() && !registered && task != TaskKind::TextClassification {
            return Err(FieldError::new(
                "baseModel",
                "a pretrained model applies to TEXT_CLASSIFICATION only; a TABULAR_CLASSIFICATION \
                 job may start from a registered version (model:NAME/VERSION or model:NAME@ALIAS)",
            ));
        }
        if input.reset_head && !registered {
            return Err(FieldError::new(
                "resetHead",
                "applies to a retrain only: a baseModel of the form model:NAME/VERSION or \
                 model:NAME@ALIAS",
            ));
        }
        let model_config = match (&input.model_config, &base_model, task) {
            (Some(_), Some(_), _) => {
                return Err(FieldError::new(
                    "modelConfig",
                    "cannot be combined with baseModel",
                ));
            }
            (Some(_), None, TaskKind::TabularClassification) => {
                return Err(FieldError::new(
                    "modelConfig",
                    "applies to TEXT_CLASSIFICATION only",
                ));
            }
            (Some(c), None, _) => Some(ModelConfig::parse("modelConfig", c)?),
            (None, None, TaskKind::TextClassification) => Some(ModelConfig::default()),
            (None, _, _) => None,
        };
        let lora = match &input.customization {
            None => None,
            Some(c) => LoraSettings::parse("customization", c)?,
        };
        if lora.is_some() && task != TaskKind::TextClassification {
            return Err(FieldError::new(
                "customization.method",
                "LORA applies to TEXT_CLASSIFICATION only",
            ));
        }
        if lora.is_some() && base_model.is_none() {
            return Err(FieldError::new(
                "customization.method",
                "LORA adapts a pretrained model: give a baseModel (TEXT_CLASSIFICATION)",
            ));
        }
        // An MLP keeps its rate when it is retrained; a text model is fine-tuned gently.
        let default_learning_rate = match (task, &base_model, &lora) {
            (TaskKind::TabularClassification, _, _) => Hyperparams::DEFAULT_FROM_SCRATCH_LR,
            (_, Some(_), Some(_)) => Hyperparams::DEFAULT_LORA_LR,
            (_, Some(_), None) => Hyperparams::DEFAULT_FINE_TUNE_LR,
            (_, None, _) => Hyperparams::DEFAULT_FROM_SCRATCH_LR,
        };
        let h = &input.hyperparameters;
        let hyperparameters = Hyperparams::parse("hyperparameters", h, default_learning_rate)?;
        let text_only = [
            ("pooling", h.pooling.is_some_and(|p| p != Pooling::Mean)),
            ("freezeLayers", h.freeze_layers.is_some()),
            ("augmentation", h.augmentation.is_some()),
        ];
        let tabular_only = [("hiddenSizes", h.hidden_sizes.is_some())];
        let misplaced = match task {
            TaskKind::TextClassification => tabular_only
                .iter()
                .find(|(_, given)| *given)
                .map(|(name, _)| (name, "TABULAR_CLASSIFICATION")),
            TaskKind::TabularClassification => text_only
                .iter()
                .find(|(_, given)| *given)
                .map(|(name, _)| (name, "TEXT_CLASSIFICATION")),
        };
        if let Some((name, applies_to)) = misplaced {
            return Err(FieldError::new(
                format!("hyperparameters.{name}"),
                format!("applies to {applies_to} only"),
            ));
        }
        if lora.is_some() && h.freeze_layers.is_some() {
            return Err(FieldError::new(
                "hyperparameters.freezeLayers",
                "LORA already freezes every base weight; leave freezeLayers out",
            ));
        }
        Ok(Self {
            task,
            base_model,
            model_config,
            hyperparameters,
            lora,
            reset_head: input.reset_head,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_references_are_parsed_and_checked() {
        let ok = HubModel::parse("baseModel", "hf:sentence-transformers/all-MiniLM-L6-v2")
            .unwrap()
            .unwrap();
        assert_eq!(ok.repo, "sentence-transformers/all-MiniLM-L6-v2");
        assert_eq!(ok.revision, "main");
        assert_eq!(ok.to_string(), "hf:sentence-transformers/all-MiniLM-L6-v2");
        let pinned = HubModel::parse("baseModel", "hf:bert-base-uncased@v1.0")
            .unwrap()
            .unwrap();
        assert_eq!(pinned.revision, "v1.0");
        assert_eq!(pinned.to_string(), "hf:bert-base-uncased@v1.0");
        assert!(HubModel::parse("baseModel", "/local/dir").is_none());
        for bad in ["hf:", "hf:a/b/c", "hf:../x", "hf:org/name@", "hf:org/na me"] {
            assert!(HubModel::parse("baseModel", bad).unwrap().is_err(), "{bad}");
        }
        let long = format!("hf:org/{}", "n".repeat(HubModel::MAX_REPO));
        let error = HubModel::parse("baseModel", &long).unwrap().unwrap_err();
        assert!(error.message.contains("at most"), "{}", error.message);
        assert!(BaseModelRef::parse("baseModel", &"x".repeat(2000)).is_err());
    }

    #[test]
    fn registered_references_are_parsed_and_shown_as_given() {
        let parse = |raw: &str| match BaseModelRef::parse("baseModel", raw) {
            Ok(Some(BaseModelRef::Registered(r))) => Ok(r),
            Ok(other) => panic!("{raw}: {other:?}"),
            Err(e) => Err(e.message),
        };
        let by_number = parse("model:guard/3").unwrap();
        assert_eq!(by_number.model.as_str(), "guard");
        assert_eq!(by_number.number(), Some(3));
        assert_eq!(by_number.to_string(), "model:guard/3");
        let by_alias = parse("model:guard@production").unwrap();
        assert_eq!(
            by_alias.version,
            VersionSelector::Alias(AliasName::parse("a", "production").unwrap())
        );
        assert_eq!(by_alias.number(), None);
        assert_eq!(by_alias.to_string(), "model:guard@production");
        for (bad, says) in [
            ("model:guard", "model:NAME/VERSION or model:NAME@ALIAS"),
            ("model:guard/0", "whole number from 1"),
            ("model:guard/x", "whole number from 1"),
            ("model:/1", "model:/1"),
            ("model:guard@Prod", "lowercase"),
            ("model:guard/1/2", "whole number"),
            ("model:guard/01", "whole number"),
            ("model:guard/+1", "whole number"),
            (
                "model:tiny@../x",
                "the alias must start with a lowercase letter",
            ),
        ] {
            let message = parse(bad).unwrap_err();
            assert!(message.contains(says), "{bad}: {message}");
        }
        // A retrain may be tabular; resetHead needs one.
        let tabular = TrainingInput {
            task: Some(TaskKind::TabularClassification),
            base_model: Some("model:fraud/1".into()),
            reset_head: true,
            ..Default::default()
        };
        let settings = TrainingSettings::parse(&tabular).unwrap();
        assert!(settings.reset_head);
        assert_eq!(settings.hyperparameters.learning_rate, 1e-3);
        let stray = TrainingInput {
            base_model: Some("hf:org/m".into()),
            reset_head: true,
            ..Default::default()
        };
        assert_eq!(
            TrainingSettings::parse(&stray).unwrap_err().field,
            "resetHead"
        );
    }

    #[test]
    fn settings_check_the_rules_between_fields() {
        let text = |base: Option<&str>, config: bool| TrainingInput {
            task: Some(TaskKind::TextClassification),
            base_model: base.map(str::to_string),
            model_config: config.then(ModelConfigInput::default),
            ..Default::default()
        };
        let random = TrainingSettings::parse(&text(None, false)).unwrap();
        assert_eq!(random.model_config, Some(ModelConfig::default()));
        assert_eq!(random.hyperparameters.learning_rate, 1e-3);
        let tuned = TrainingSettings::parse(&text(Some("hf:org/m"), false)).unwrap();
        assert_eq!(tuned.model_config, None);
        assert_eq!(tuned.hyperparameters.learning_rate, 5e-5);
        assert_eq!(
            TrainingSettings::parse(&text(Some("/m"), true))
                .unwrap_err()
                .field,
            "modelConfig"
        );
        assert_eq!(
            TrainingSettings::parse(&text(Some("  "), false))
                .unwrap()
                .base_model,
            None
        );
        let tabular = TrainingInput {
            task: Some(TaskKind::TabularClassification),
            base_model: Some("/m".into()),
            ..Default::default()
        };
        assert_eq!(
            TrainingSettings::parse(&tabular).unwrap_err().field,
            "baseModel"
        );
    }
}
