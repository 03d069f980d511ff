//! The registry's rules: aliases and their history, rollbacks, guarded promotion, comparisons.
//!
//! An alias moves only through [`Service::move_alias`]: the model and versions must exist, a guarded
//! alias's policy must pass (or an admin forces it, and the history records which rules were
//! overridden), only an admin deletes a guarded alias (the history records the policy's rules as
//! overridden), and the move is a compare-and-set on where the alias pointed, so two concurrent moves
//! cannot both win. A rollback returns to the version before the latest move not yet undone and is not
//! checked against the policy (that version already served under the alias).

use super::{Service, ServiceError, ServiceResult};
use crate::auth::{Principal, Role};
use crate::domain::{
    AliasChange, AliasName, AliasTarget, FieldError, Hyperparams, HyperparamsInput, JobRecord,
    LogLevel, ModelAlias, ModelManifest, ModelName, ModelRecord, ModelVersionRecord,
    PromotionPolicy, RegisteredModel, Rule, Verdict, VersionSelector, now_ms,
};

/// The longest reason kept with an alias move, in characters.
pub const MAX_REASON_CHARS: usize = 1000;
/// The most versions one comparison holds.
pub const MAX_COMPARED_VERSIONS: usize = 10;
/// The most history entries one read returns.
pub const MAX_HISTORY: i64 = 100;

/// Who moves an alias, and with which rights.
pub enum Mover<'a> {
    Caller(&'a Principal),
    /// A job's `autoPromote`: never forced.
    Job(&'a JobRecord),
}

impl Mover<'_> {
    /// Whether it may move an alias past its promotion policy (or delete a guarded alias): admins.
    fn may_override(&self) -> bool {
        matches!(self, Self::Caller(p) if p.role == Role::Admin)
    }

    fn name(&self) -> String {
        match self {
            Self::Caller(p) => p.name.clone(),
            Self::Job(job) => format!("job {}", job.id),
        }
    }
}

pub(super) fn reason(raw: Option<&str>) -> Result<Option<String>, FieldError> {
    let Some(raw) = raw.map(str::trim).filter(|r| !r.is_empty()) else {
        return Ok(None);
    };
    if raw.chars().count() > MAX_REASON_CHARS {
        return Err(FieldError::new(
            "reason",
            format!("must be at most {MAX_REASON_CHARS} characters"),
        ));
    }
    Ok(Some(raw.to_string()))
}

/// Checks how many alias moves a read asks for: 1–[`MAX_HISTORY`].
pub fn history_limit(limit: i64) -> Result<i64, FieldError> {
    if (1..=MAX_HISTORY).contains(&limit) {
        Ok(limit)
    } else {
        Err(FieldError::new(
            "last",
            format!("must be 1 to {MAX_HISTORY}"),
        ))
    }
}

impl Service {
    async fn existing_model(&self, model: &str) -> ServiceResult<(ModelName, ModelRecord)> {
        let name = ModelName::parse("model", model)?;
        let record =
            self.store.get_model(name.as_str()).await?.ok_or_else(|| {
                ServiceError::NotFound(format!("no model named {}", name.as_str()))
            })?;
        Ok((name, record))
    }

    /// The parts of a request that moves an alias, each checked: the model (which must exist), its
    /// record, the alias name and the reason.
    async fn alias_request(
        &self,
        model: &str,
        alias: &str,
        why: Option<&str>,
    ) -> ServiceResult<(ModelName, ModelRecord, AliasName, Option<String>)> {
        let alias = AliasName::parse("alias", alias)?;
        let why = reason(why)?;
        let (name, record) = self.existing_model(model).await?;
        Ok((name, record, alias, why))
    }

    /// Where one alias of a model points now, if it exists.
    pub(super) async fn alias_target(
        &self,
        model: &str,
        alias: &AliasName,
    ) -> ServiceResult<Option<AliasTarget>> {
        Ok(self
            .store
            .aliases_of(model)
            .await?
            .into_iter()
            .find(|a| a.alias == alias.as_str())
            .map(|a| a.target))
    }

    /// The version a retrain's `model:` reference names, with its manifest: a number as given, an alias
    /// where it points now (a split alias: its arm with the largest weight). Returned as the reference
    /// pinned to the number.
    pub(super) async fn registered_version(
        &self,
        reference: &RegisteredModel,
    ) -> ServiceResult<(RegisteredModel, ModelManifest)> {
        let model = reference.model.as_str();
        let refuse = |message: String| ServiceError::from(FieldError::new("baseModel", message));
        if self.store.get_model(model).await?.is_none() {
            return Err(refuse(format!("no model named {model}")));
        }
        let number = match &reference.version {
            VersionSelector::Number(v) => *v,
            VersionSelector::Alias(alias) => self
                .alias_target(model, alias)
                .await?
                .ok_or_else(|| refuse(format!("model {model} has no alias {}", alias.as_str())))?
                .primary(),
        };
        let version = self
            .store
            .model_version(model, number)
            .await?
            .ok_or_else(|| refuse(format!("model {model} has no version {number}")))?;
        let manifest = self
            .version_manifest(&version)
            .await
            .map_err(ServiceError::Internal)?;
        let pinned = RegisteredModel {
            model: reference.model.clone(),
            version: VersionSelector::Number(number),
        };
        Ok((pinned, manifest))
    }

    /// Every alias of many models, in one round trip, by model then alias.
    #[tracing::instrument(skip_all)]
    pub async fn aliases_of_models(&self, models: &[String]) -> ServiceResult<Vec<ModelAlias>> {
        Ok(self.store.aliases_of_models(models).await?)
    }

    /// The last `limit` alias moves of each of many models (optionally of one alias only), newest
    /// first, in one round trip; `limit` 1–[`MAX_HISTORY`].
    #[tracing::instrument(skip_all)]
    pub async fn alias_history_of_models(
        &self,
        models: &[String],
        alias: Option<&str>,
        limit: i64,
    ) -> ServiceResult<Vec<AliasChange>> {
        history_limit(limit)?;
        Ok(self
            .store
            .alias_history_of_models(models, alias, limit)
            .await?)
    }

    /// Per model, alias and version, the `predict` calls answered, for many models in one round trip.
    #[tracing::instrument(skip_all)]
    pub async fn alias_requests_of_models(
        &self,
        models: &[String],
    ) -> ServiceResult<Vec<(String, crate::domain::AliasRequests)>> {
        Ok(self.store.alias_request_counts(models).await?)
    }

    /// The promotion policies of many models, in one round trip.
    #[tracing::instrument(skip_all)]
    pub async fn promotion_policies_of_models(
        &self,
        models: &[String],
    ) -> ServiceResult<Vec<PromotionPolicy>> {
        Ok(self.store.promotion_policies_of_models(models).await?)
    }

    /// Points `alias` at `target` (a version or a split), after the alias's policy passes.
    #[tracing::instrument(skip_all, fields(model = %model))]
    pub async fn set_model_alias(
        &self,
        caller: &Principal,
        model: &str,
        alias: &str,
        target: AliasTarget,
        why: Option<&str>,
        force: bool,
    ) -> ServiceResult<ModelRecord> {
        if force && caller.role != Role::Admin {
            return Err(ServiceError::Forbidden(
                "only an admin token can force an alias past its promotion policy".into(),
            ));
        }
        let (name, record, alias, why) = self.alias_request(model, alias, why).await?;
        self.move_alias(
            &name,
            &alias,
            Some(target),
            Mover::Caller(caller),
            why,
            force,
            false,
        )
        .await?;
        Ok(record)
    }

    /// Removes an alias (its history stays).
    #[tracing::instrument(skip_all, fields(model = %model))]
    pub async fn delete_model_alias(
        &self,
        caller: &Principal,
        model: &str,
        alias: &str,
        why: Option<&str>,
    ) -> ServiceResult<ModelRecord> {
        let (name, record, alias, why) = self.alias_request(model, alias, why).await?;
        self.move_alias(
            &name,
            &alias,
            None,
            Mover::Caller(caller),
            why,
            false,
            false,
        )
        .await?;
        Ok(record)
    }

    /// Moves an alias back to where it pointed before its latest move that no rollback has undone.
    #[tracing::instrument(skip_all, fields(model = %model))]
    pub async fn rollback_model_alias(
        &self,
        caller: &Principal,
        model: &str,
        alias: &str,
        why: Option<&str>,
    ) -> ServiceResult<ModelRecord> {
        let (name, record, alias, why) = self.alias_request(model, alias, why).await?;
        // Enough history to walk back over the rollbacks already made.
        let history = self
            .store
            .alias_history(name.as_str(), Some(alias.as_str()), i64::MAX)
            .await?;
        let target = AliasChange::rollback_target(&history).ok_or_else(|| {
            ServiceError::Conflict(format!(
                "alias {} has no earlier version to go back to",
                alias.as_str()
            ))
        })?;
        self.move_alias(
            &name,
            &alias,
            Some(target),
            Mover::Caller(caller),
            why,
            false,
            true,
        )
        .await?;
        Ok(record)
    }

    /// Sets the rules a version must pass before `alias` may point to it; no rules removes the policy.
    /// Admins only: a policy is what keeps members from promoting a worse version.
    #[tracing::instrument(skip_all, fields(model = %model))]
    pub async fn set_promotion_policy(
        &self,
        caller: &Principal,
        model: &str,
        alias: &str,
        rules: &[String],
    ) -> ServiceResult<ModelRecord> {
        if caller.role != Role::Admin {
            return Err(ServiceError::Forbidden(
                "only an admin token can change a promotion policy".into(),
            ));
        }
        let alias = AliasName::parse("alias", alias)?;
        let rules = Rule::parse_all("rules", rules)?;
        let (name, record) = self.existing_model(model).await?;
        self.store
            .set_promotion_policy(name.as_str(), alias.as_str(), &rules, now_ms())
            .await?;
        Ok(record)
    }

    /// Sets the hyperparameters `submitJob` fills in for `model` when its input leaves them out (kiln's
    /// own defaults fill the rest); each is range-checked now. An input that sets nothing removes them.
    #[tracing::instrument(skip_all, fields(model = %model))]
    pub async fn set_model_training_defaults(
        &self,
        model: &str,
        hyperparameters: &HyperparamsInput,
    ) -> ServiceResult<ModelRecord> {
        let name = ModelName::parse("model", model)?;
        // The learning rate's default does not matter here: only what is set is checked.
        Hyperparams::parse("hyperparameters", hyperparameters, 1e-3)?;
        let json = (hyperparameters != &HyperparamsInput::default())
            .then(|| serde_json::to_string(hyperparameters).expect("hyperparameters serialise"));
        self.store
            .set_training_defaults(name.as_str(), json.as_deref(), now_ms())
            .await?;
        Ok(self.existing_model(name.as_str()).await?.1)
    }

    /// The training defaults of many models (those that have some), in one round trip.
    #[tracing::instrument(skip_all)]
    pub async fn training_defaults_of_models(
        &self,
        models: &[String],
    ) -> ServiceResult<Vec<(String, HyperparamsInput, i64)>> {
        Ok(self.store.training_defaults_of_models(models).await?)
    }

    /// Versions of a model side by side, in the order asked.
    #[tracing::instrument(skip_all, fields(model = %model))]
    pub async fn compare_model_versions(
        &self,
        model: &str,
        versions: &[i64],
    ) -> ServiceResult<Vec<ModelVersionRecord>> {
        if !(2..=MAX_COMPARED_VERSIONS).contains(&versions.len()) {
            return Err(FieldError::new(
                "versions",
                format!(
                    "give 2 to {MAX_COMPARED_VERSIONS} versions (got {})",
                    versions.len()
                ),
            )
            .into());
        }
        for (i, v) in versions.iter().enumerate() {
            if versions[..i].contains(v) {
                return Err(FieldError::new(
                    format!("versions[{i}]"),
                    format!("version {v} is listed twice"),
                )
                .into());
            }
        }
        let (name, _) = self.existing_model(model).await?;
        let found = self.versions_named(&name, versions, "versions").await?;
        Ok(found)
    }

    /// The versions of `model` with these numbers, in that order; a missing one is a `BadInput` on
    /// `field[i]`.
    async fn versions_named(
        &self,
        model: &ModelName,
        versions: &[i64],
        field: &str,
    ) -> ServiceResult<Vec<ModelVersionRecord>> {
        let found = self
            .store
            .model_versions_numbered(model.as_str(), versions)
            .await?;
        versions
            .iter()
            .enumerate()
            .map(|(i, v)| {
                found
                    .iter()
                    .find(|r| r.version == *v)
                    .cloned()
                    .ok_or_else(|| {
                        let field = if versions.len() == 1 && field == "version" {
                            field.to_string()
                        } else {
                            format!("{field}[{i}]")
                        };
                        FieldError::new(
                            field,
                            format!("model {} has no version {v}", model.as_str()),
                        )
                        .into()
                    })
            })
            .collect()
    }

    /// Moves an alias to a version the job just registered, when it passes the alias's policy. A refusal
    /// is logged and leaves the alias where it was; the job is complete either way.
    pub(super) async fn auto_promote(&self, job: &JobRecord, version: &ModelVersionRecord) {
        let Some(alias) = &job.auto_promote else {
            return;
        };
        let result = async {
            let alias = AliasName::parse("autoPromote", alias)?;
            let name = ModelName::parse("modelName", &job.model_name)?;
            self.move_alias(
                &name,
                &alias,
                Some(AliasTarget::Version(version.version)),
                Mover::Job(job),
                Some(format!("autoPromote of job {}", job.name)),
                false,
                false,
            )
            .await
        }
        .await;
        let (level, message) = match result {
            Ok(()) => (
                LogLevel::Info,
                format!(
                    "autoPromote: alias {alias} now points to version {}",
                    version.version
                ),
            ),
            Err(e) => (
                LogLevel::Warn,
                format!("autoPromote: alias {alias} was not moved: {e}"),
            ),
        };
        tracing::info!(job = %job.id, %alias, version = version.version, "{message}");
        self.log_now(&job.id, level, message).await;
    }

    /// The one way an alias moves: checks the versions and the policy, then a compare-and-set write
    /// with its history entry. `to: None` deletes the alias.
    #[allow(clippy::too_many_arguments)]
    async fn move_alias(
        &self,
        model: &ModelName,
        alias: &AliasName,
        to: Option<AliasTarget>,
        mover: Mover<'_>,
        why: Option<String>,
        force: bool,
        rollback: bool,
    ) -> ServiceResult<()> {
        let current = self.alias_target(model.as_str(), alias).await?;
        if current.is_none() && to.is_none() {
            return Err(ServiceError::NotFound(format!(
                "model {} has no alias {}",
                model.as_str(),
                alias.as_str()
            )));
        }
        if current == to {
            return Ok(());
        }
        let policy = self
            .store
            .promotion_policies(model.as_str())
            .await?
            .into_iter()
            .find(|p| p.alias == alias.as_str());
        let Some(target) = &to else {
            // Deleting a guarded alias would let anyone set it afresh: it overrides the whole policy.
            let overridden = match &policy {
                Some(policy) if !mover.may_override() => {
                    return Err(ServiceError::Forbidden(format!(
                        "alias {} of model {} is guarded by a promotion policy; only an admin token \
                         can delete it",
                        alias.as_str(),
                        model.as_str()
                    )));
                }
                Some(policy) => policy.rules.iter().map(|r| r.text.clone()).collect(),
                None => vec![],
            };
            return self
                .write_move(model, alias, current, to, &mover, why, overridden, rollback)
                .await;
        };
        let field = match target {
            AliasTarget::Version(_) => "version",
            AliasTarget::Split(_) => "split",
        };
        let candidates = self
            .versions_named(model, &target.versions(), field)
            .await?;
        let mut failed = Vec::new();
        if !rollback && let Some(policy) = &policy {
            let current_metrics = match &current {
                Some(c) => self
                    .store
                    .model_version(model.as_str(), c.primary())
                    .await?
                    .map(|v| v.metrics),
                None => None,
            };
            for candidate in &candidates {
                for rule in &policy.rules {
                    if let Verdict::Fail(why) =
                        rule.check(&candidate.metrics, current_metrics.as_ref())
                    {
                        failed.push(format!("version {}: {why}", candidate.version));
                    }
                }
            }
        }
        if !failed.is_empty() && !force {
            return Err(ServiceError::FailedPrecondition {
                message: format!(
                    "alias {} of model {} is guarded and the version fails {} of its rules: {}",
                    alias.as_str(),
                    model.as_str(),
                    failed.len(),
                    failed.join("; ")
                ),
                failed,
            });
        }
        self.write_move(model, alias, current, to, &mover, why, failed, rollback)
            .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn write_move(
        &self,
        model: &ModelName,
        alias: &AliasName,
        from: Option<AliasTarget>,
        to: Option<AliasTarget>,
        mover: &Mover<'_>,
        why: Option<String>,
        overridden_rules: Vec<String>,
        rollback: bool,
    ) -> ServiceResult<()> {
        let change = AliasChange {
            model_name: model.as_str().to_string(),
            alias: alias.as_str().to_string(),
            from,
            to,
            actor: mover.name(),
            reason: why,
            overridden_rules,
            rollback,
            at: now_ms(),
        };
        self.store.move_alias(&change).await?;
        tracing::info!(model = %change.model_name, alias = %change.alias, to = ?change.to, by = %change.actor, "alias moved");
        Ok(())
    }
}
