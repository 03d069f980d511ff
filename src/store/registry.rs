//! Aliases, their history and promotion policies.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError, StoreResult, corrupt};
use crate::domain::{
    AliasChange, AliasRequests, AliasTarget, HyperparamsInput, ModelAlias, PromotionPolicy, Rule,
};

fn target(raw: Option<String>) -> StoreResult<Option<AliasTarget>> {
    raw.map(|t| serde_json::from_str(&t).map_err(|e| corrupt("alias target", e)))
        .transpose()
}

fn decode_alias(row: &AnyRow) -> StoreResult<ModelAlias> {
    Ok(ModelAlias {
        model_name: row.try_get("model_name")?,
        alias: row.try_get("alias")?,
        target: target(Some(row.try_get("target")?))?.expect("present"),
        updated_at: row.try_get("updated_at")?,
    })
}

fn decode_change(row: &AnyRow) -> StoreResult<AliasChange> {
    Ok(AliasChange {
        model_name: row.try_get("model_name")?,
        alias: row.try_get("alias")?,
        from: target(row.try_get("from_target")?)?,
        to: target(row.try_get("to_target")?)?,
        actor: row.try_get("actor")?,
        reason: row.try_get("reason")?,
        overridden_rules: serde_json::from_str(&row.try_get::<String, _>("overridden_rules")?)
            .map_err(|e| corrupt("overridden rules", e))?,
        rollback: row.try_get::<i64, _>("rollback")? != 0,
        at: row.try_get("at")?,
    })
}

fn decode_policy(row: &AnyRow) -> StoreResult<PromotionPolicy> {
    let texts: Vec<String> = serde_json::from_str(&row.try_get::<String, _>("rules")?)
        .map_err(|e| corrupt("promotion rules", e))?;
    let rules = texts
        .iter()
        .map(|t| Rule::parse(t).map_err(|e| corrupt("promotion rule", anyhow::anyhow!(e))))
        .collect::<StoreResult<_>>()?;
    Ok(PromotionPolicy {
        model_name: row.try_get("model_name")?,
        alias: row.try_get("alias")?,
        rules,
        updated_at: row.try_get("updated_at")?,
    })
}

const CHANGE_COLUMNS: &str =
    "model_name, alias, from_target, to_target, actor, reason, overridden_rules, rollback, at";

impl Store {
    /// Every alias of a model, by name.
    pub async fn aliases_of(&self, model: &str) -> StoreResult<Vec<ModelAlias>> {
        self.tick()?;
        let rows = sqlx::query(
            "SELECT model_name, alias, target, updated_at FROM model_aliases WHERE model_name = $1 ORDER BY alias",
        )
        .bind(model)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.note(e))?;
        rows.iter().map(decode_alias).collect()
    }

    /// Every alias of many models, in one round trip, by model then alias.
    pub async fn aliases_of_models(&self, models: &[String]) -> StoreResult<Vec<ModelAlias>> {
        self.fetch_in(
            "SELECT model_name, alias, target, updated_at FROM model_aliases \
             WHERE model_name IN ({in}) ORDER BY model_name, alias",
            models,
        )
        .await?
        .iter()
        .map(decode_alias)
        .collect()
    }

    /// A model's alias moves, newest first, optionally of one alias only.
    pub async fn alias_history(
        &self,
        model: &str,
        alias: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<AliasChange>> {
        self.alias_history_of_models(&[model.to_string()], alias, limit)
            .await
    }

    /// The last `limit` alias moves of each of many models (optionally of one alias only), in one
    /// round trip: by model, newest first.
    pub async fn alias_history_of_models(
        &self,
        models: &[String],
        alias: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<AliasChange>> {
        if models.is_empty() {
            return Ok(Vec::new());
        }
        self.tick()?;
        let n = models.len();
        let sql = format!(
            "SELECT {CHANGE_COLUMNS} FROM ( \
               SELECT {CHANGE_COLUMNS}, seq, ROW_NUMBER() OVER (PARTITION BY model_name \
                      ORDER BY at DESC, seq DESC) AS rn \
               FROM model_alias_history WHERE model_name IN ({}) AND (${} = '' OR alias = ${})) ranked \
             WHERE rn <= ${} ORDER BY model_name, at DESC, seq DESC",
            super::placeholders(1, n),
            n + 1,
            n + 1,
            n + 2
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for model in models {
            query = query.bind(model);
        }
        let rows = query
            .bind(alias.unwrap_or(""))
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.note(e))?;
        rows.iter().map(decode_change).collect()
    }

    /// Moves an alias from `change.from` to `change.to` (creating or deleting it) and files the change,
    /// in one transaction. A `Conflict` when the alias no longer points to `change.from` (someone moved
    /// it meanwhile): nothing is written.
    pub async fn move_alias(&self, change: &AliasChange) -> StoreResult<()> {
        let from = change.from.as_ref().map(AliasTarget::to_json);
        let to = change.to.as_ref().map(AliasTarget::to_json);
        let mut tx = self.pool.begin().await.map_err(|e| self.note(e))?;
        // Ordered against version deletes, which take the model's row too; then the versions the
        // alias is to point to must still be there.
        self.lock_model(&mut tx, &change.model_name).await?;
        if let Some(to) = &change.to {
            let wanted = to.versions();
            self.tick()?;
            let mut query = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT COUNT(*) AS n FROM model_versions WHERE model_name = $1 AND version IN ({})",
                super::placeholders(2, wanted.len())
            )))
            .bind(&change.model_name);
            for v in &wanted {
                query = query.bind(*v);
            }
            let found: i64 = query
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| self.note(e))?
                .try_get("n")?;
            if found != wanted.len() as i64 {
                tx.rollback().await.map_err(|e| self.note(e))?;
                return Err(StoreError::Conflict(format!(
                    "a version alias {} was to point to was deleted meanwhile; look again and retry",
                    change.alias
                )));
            }
        }
        self.tick()?;
        let moved = match (&from, &to) {
            (None, Some(to)) => sqlx::query(
                "INSERT INTO model_aliases (model_name, alias, target, updated_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (model_name, alias) DO NOTHING",
            )
            .bind(&change.model_name)
            .bind(&change.alias)
            .bind(to)
            .bind(change.at),
            (Some(from), Some(to)) => sqlx::query(
                "UPDATE model_aliases SET target = $3, updated_at = $4 \
                 WHERE model_name = $1 AND alias = $2 AND target = $5",
            )
            .bind(&change.model_name)
            .bind(&change.alias)
            .bind(to)
            .bind(change.at)
            .bind(from),
            (Some(from), None) => sqlx::query(
                "DELETE FROM model_aliases WHERE model_name = $1 AND alias = $2 AND target = $3",
            )
            .bind(&change.model_name)
            .bind(&change.alias)
            .bind(from),
            (None, None) => return Ok(()),
        }
        .execute(&mut *tx)
        .await
        .map_err(|e| self.note(e))?
        .rows_affected();
        if moved != 1 {
            tx.rollback().await.map_err(|e| self.note(e))?;
            return Err(StoreError::Conflict(format!(
                "alias {} was moved by someone else meanwhile; look at it again and retry",
                change.alias
            )));
        }
        self.tick()?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO model_alias_history (seq, {CHANGE_COLUMNS}) \
             SELECT COALESCE(MAX(seq), 0) + 1, $1, $2, $3, $4, $5, $6, $7, $8, $9 \
             FROM model_alias_history WHERE model_name = $1 AND alias = $2"
        )))
        .bind(&change.model_name)
        .bind(&change.alias)
        .bind(&from)
        .bind(&to)
        .bind(&change.actor)
        .bind(&change.reason)
        .bind(serde_json::to_string(&change.overridden_rules).map_err(anyhow::Error::from)?)
        .bind(i64::from(change.rollback))
        .bind(change.at)
        .execute(&mut *tx)
        .await
        .map_err(|e| self.note(e))?;
        tx.commit().await.map_err(|e| self.note(e))?;
        Ok(())
    }

    /// A model's promotion policies, by alias.
    pub async fn promotion_policies(&self, model: &str) -> StoreResult<Vec<PromotionPolicy>> {
        self.promotion_policies_of_models(&[model.to_string()])
            .await
    }

    /// The promotion policies of many models, in one round trip, by model then alias.
    pub async fn promotion_policies_of_models(
        &self,
        models: &[String],
    ) -> StoreResult<Vec<PromotionPolicy>> {
        self.fetch_in(
            "SELECT model_name, alias, rules, updated_at FROM promotion_policies \
             WHERE model_name IN ({in}) ORDER BY model_name, alias",
            models,
        )
        .await?
        .iter()
        .map(decode_policy)
        .collect()
    }

    /// Sets an alias's policy; no rules removes it.
    pub async fn set_promotion_policy(
        &self,
        model: &str,
        alias: &str,
        rules: &[Rule],
        at: i64,
    ) -> StoreResult<()> {
        self.tick()?;
        let query = if rules.is_empty() {
            sqlx::query("DELETE FROM promotion_policies WHERE model_name = $1 AND alias = $2")
                .bind(model)
                .bind(alias)
        } else {
            let texts: Vec<&str> = rules.iter().map(|r| r.text.as_str()).collect();
            sqlx::query(
                "INSERT INTO promotion_policies (model_name, alias, rules, updated_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (model_name, alias) DO UPDATE SET rules = excluded.rules, updated_at = excluded.updated_at",
            )
            .bind(model)
            .bind(alias)
            .bind(serde_json::to_string(&texts).map_err(anyhow::Error::from)?)
            .bind(at)
        };
        query.execute(&self.pool).await.map_err(|e| self.note(e))?;
        Ok(())
    }

    /// Counts one `predict` call of `predictions` inputs answered by `version` through `alias`.
    pub async fn count_alias_requests(
        &self,
        model: &str,
        alias: &str,
        version: i64,
        predictions: i64,
    ) -> StoreResult<()> {
        self.tick()?;
        sqlx::query(
            "INSERT INTO model_alias_requests (model_name, alias, version, requests, predictions) \
             VALUES ($1, $2, $3, 1, $4) ON CONFLICT (model_name, alias, version) DO UPDATE SET \
             requests = model_alias_requests.requests + 1, \
             predictions = model_alias_requests.predictions + excluded.predictions",
        )
        .bind(model)
        .bind(alias)
        .bind(version)
        .bind(predictions)
        .execute(&self.pool)
        .await
        .map_err(|e| self.note(e))?;
        Ok(())
    }

    /// Per model, alias and version: the `predict` calls and inputs answered, for many models in one
    /// round trip, by model, alias and version.
    pub async fn alias_request_counts(
        &self,
        models: &[String],
    ) -> StoreResult<Vec<(String, AliasRequests)>> {
        self.fetch_in(
            "SELECT model_name, alias, version, requests, predictions FROM model_alias_requests \
             WHERE model_name IN ({in}) ORDER BY model_name, alias, version",
            models,
        )
        .await?
        .iter()
        .map(|r| {
            Ok((
                r.try_get("model_name")?,
                AliasRequests {
                    alias: r.try_get("alias")?,
                    version: r.try_get("version")?,
                    requests: r.try_get("requests")?,
                    predictions: r.try_get("predictions")?,
                },
            ))
        })
        .collect()
    }

    /// Sets a model's training defaults (JSON in the input's form), creating the model's row when it
    /// has none yet; `None` removes them.
    pub async fn set_training_defaults(
        &self,
        model: &str,
        hyperparameters: Option<&str>,
        at: i64,
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(|e| self.note(e))?;
        self.tick()?;
        sqlx::query(
            "INSERT INTO models (name, created_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(model)
        .bind(at)
        .execute(&mut *tx)
        .await
        .map_err(|e| self.note(e))?;
        self.tick()?;
        let query = match hyperparameters {
            None => sqlx::query("DELETE FROM model_training_defaults WHERE model_name = $1").bind(model),
            Some(json) => sqlx::query(
                "INSERT INTO model_training_defaults (model_name, hyperparameters, updated_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (model_name) DO UPDATE SET hyperparameters = excluded.hyperparameters, \
                 updated_at = excluded.updated_at",
            )
            .bind(model)
            .bind(json)
            .bind(at),
        };
        query.execute(&mut *tx).await.map_err(|e| self.note(e))?;
        tx.commit().await.map_err(|e| self.note(e))?;
        Ok(())
    }

    /// A model's training defaults and when they were set.
    pub async fn training_defaults(
        &self,
        model: &str,
    ) -> StoreResult<Option<(HyperparamsInput, i64)>> {
        Ok(self
            .training_defaults_of_models(&[model.to_string()])
            .await?
            .pop()
            .map(|(_, input, at)| (input, at)))
    }

    /// The training defaults of many models (those that have some), in one round trip.
    pub async fn training_defaults_of_models(
        &self,
        models: &[String],
    ) -> StoreResult<Vec<(String, HyperparamsInput, i64)>> {
        self.fetch_in(
            "SELECT model_name, hyperparameters, updated_at FROM model_training_defaults \
             WHERE model_name IN ({in})",
            models,
        )
        .await?
        .iter()
        .map(|r| {
            let json: String = r.try_get("hyperparameters")?;
            let input = serde_json::from_str(&json).map_err(|e| corrupt("training defaults", e))?;
            Ok((r.try_get("model_name")?, input, r.try_get("updated_at")?))
        })
        .collect()
    }
}
