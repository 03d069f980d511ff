//! Augmented, balanced and generated datasets (`augmentDataset`, `balanceDataset`,
//! `generateSyntheticDataset`) and the preview that stores nothing (`previewAugmentation`). Each is a
//! derived JSONL dataset ([`derive`](super::derive)) whose `Dataset.derivation` holds the spec it was
//! made with: the same spec on the same parent gives back the dataset it made before.

use std::collections::HashMap;

use super::{Service, ServiceError, ServiceResult};
use crate::data::augment::{Augmenter, Spread, draw_rng, synthesize};
use crate::data::rewrite::Row;
use crate::data::row_label;
use crate::domain::{
    AugmentPlan, Augmentation, BalancePlan, BalanceStrategy, DatasetKind, DatasetRecord,
    DatasetStatus, Derivation, DerivationKind, FieldError, FieldNames, MAX_DERIVED_ROWS,
    MAX_TEXT_CHARS, SyntheticSpec, Technique, ValidationRules, abbreviate,
};

/// The most samples `previewAugmentation` draws.
pub const MAX_PREVIEW_SAMPLES: i64 = 20;

/// One augmented draw of a text, and the techniques that made it.
#[derive(Debug, Clone, PartialEq)]
pub struct Preview {
    pub text: String,
    pub techniques: Vec<Technique>,
}

impl Service {
    /// `samples` augmented draws of `text` (each changed by at least one technique), from `seed`.
    pub fn preview_augmentation(
        &self,
        text: &str,
        augmentation: &Augmentation,
        samples: i64,
        seed: u64,
    ) -> ServiceResult<Vec<Preview>> {
        if text.trim().is_empty() {
            return Err(FieldError::new("text", "is empty").into());
        }
        if text.chars().count() > MAX_TEXT_CHARS {
            return Err(FieldError::new(
                "text",
                format!("is longer than {MAX_TEXT_CHARS} characters"),
            )
            .into());
        }
        if !(1..=MAX_PREVIEW_SAMPLES).contains(&samples) {
            return Err(FieldError::new(
                "samples",
                format!("must be between 1 and {MAX_PREVIEW_SAMPLES} (got {samples})"),
            )
            .into());
        }
        let augmenter = Augmenter::new(augmentation);
        Ok((0..samples as u64)
            .map(|i| {
                let (text, techniques) = augmenter.draw(text, &mut draw_rng(seed, 0, i), true);
                Preview { text, techniques }
            })
            .collect())
    }

    /// A copy of a text dataset holding its rows and, after each, its augmented copies (each changed
    /// by at least one technique; the copy's other fields as the row's).
    #[tracing::instrument(skip_all, fields(dataset_id = %id))]
    pub async fn augment_dataset(
        &self,
        id: &str,
        plan: &AugmentPlan,
    ) -> ServiceResult<DatasetRecord> {
        let parent = self.text_dataset(id, "augmented").await?;
        let rows = parent.summary.row_count;
        let copies = rows.saturating_mul(plan.factor as u64);
        check_size("spec.augmentationFactor", rows.saturating_add(copies))?;
        let mut rng = draw_rng(plan.seed, u64::MAX, 1);
        let counts = &parent.summary.labels;
        // Without preserveLabels, each label gets an equal share of the copies.
        let spreads: Option<HashMap<String, Spread>> = (!plan.preserve_labels).then(|| {
            let shares = equal_shares(copies, counts.len() as u64);
            counts
                .iter()
                .zip(shares)
                .map(|((label, &n), share)| (label.clone(), Spread::new(share, n, &mut rng)))
                .collect()
        });
        let factor = plan.factor as u64;
        let copies_of = move |label: &str, k: u64| match &spreads {
            None => factor,
            Some(spreads) => spreads.get(label).map_or(0, |s| s.copies(k)),
        };
        let spec = serde_json::to_value(plan).map_err(anyhow::Error::from)?;
        let derivation = Derivation::new(DerivationKind::Augment, Some(parent.id.clone()), spec);
        let name = format!(
            "{} (augmented ×{})",
            abbreviate(&parent.name, 170),
            plan.factor
        );
        let augmenter = Some(Augmenter::new(&plan.augmentation));
        self.derive(
            &parent,
            name,
            derivation,
            with_copies(parent.fields.clone(), copies_of, augmenter, plan.seed),
        )
        .await
    }

    /// A copy of a dataset whose labels have as many rows each, as `plan.strategy` says.
    #[tracing::instrument(skip_all, fields(dataset_id = %id))]
    pub async fn balance_dataset(
        &self,
        id: &str,
        plan: &BalancePlan,
    ) -> ServiceResult<DatasetRecord> {
        let parent = self.checked_dataset(id).await?;
        if parent.status != DatasetStatus::Ready {
            return Err(ServiceError::Conflict(format!(
                "dataset {} is {}; only a READY dataset can be balanced",
                parent.id,
                parent.status.as_str()
            )));
        }
        if plan.strategy == BalanceStrategy::Augment
            && parent.summary.kind != Some(DatasetKind::Text)
        {
            return Err(FieldError::new(
                "strategy",
                "AUGMENT changes texts; this dataset is not a text dataset (OVERSAMPLE and \
                 UNDERSAMPLE work on any)",
            )
            .into());
        }
        let counts = &parent.summary.labels;
        let (Some(&most), Some(&fewest)) = (counts.values().max(), counts.values().min()) else {
            return Err(ServiceError::Conflict(format!(
                "dataset {} has no labelled rows",
                parent.id
            )));
        };
        if counts.len() < 2 || most == fewest {
            return Err(ServiceError::Conflict(format!(
                "dataset {} is balanced already: {} label(s) with {most} rows each",
                parent.id,
                counts.len()
            )));
        }
        let mut rng = draw_rng(plan.seed, u64::MAX, 2);
        let spreads: HashMap<String, Spread> = counts
            .iter()
            .map(|(label, &n)| {
                let total = match plan.strategy {
                    BalanceStrategy::Undersample => fewest,
                    BalanceStrategy::Oversample | BalanceStrategy::Augment => most - n,
                };
                (label.clone(), Spread::new(total, n, &mut rng))
            })
            .collect();
        if plan.strategy != BalanceStrategy::Undersample {
            check_size("strategy", most.saturating_mul(counts.len() as u64))?;
        }
        let spec = serde_json::to_value(plan).map_err(anyhow::Error::from)?;
        let derivation = Derivation::new(DerivationKind::Balance, Some(parent.id.clone()), spec);
        let name = format!(
            "{} (balanced, {})",
            abbreviate(&parent.name, 170),
            plan.strategy.as_str().to_lowercase()
        );
        let fields = parent.fields.clone();
        let copies_of = move |label: &str, k: u64| spreads.get(label).map_or(0, |s| s.copies(k));
        if plan.strategy == BalanceStrategy::Undersample {
            let mut ordinals: HashMap<String, u64> = HashMap::new();
            return self
                .derive(&parent, name, derivation, move |_, row| match &row {
                    Row::Object(object) => match row_label(object, &fields) {
                        Some(label) => {
                            let k = next_ordinal(&mut ordinals, &label);
                            if copies_of(&label, k) > 0 {
                                vec![row]
                            } else {
                                Vec::new()
                            }
                        }
                        None => vec![row],
                    },
                    Row::Raw(_) => vec![row],
                })
                .await;
        }
        let augmenter = plan.augmentation.as_ref().map(Augmenter::new);
        self.derive(
            &parent,
            name,
            derivation,
            with_copies(fields, copies_of, augmenter, plan.seed),
        )
        .await
    }

    /// A dataset of rows made from templates (text field `text`, label `label`).
    #[tracing::instrument(skip_all)]
    pub async fn generate_synthetic_dataset(
        &self,
        spec: SyntheticSpec,
    ) -> ServiceResult<DatasetRecord> {
        let value = serde_json::to_value(&spec).map_err(anyhow::Error::from)?;
        let derivation = Derivation::new(DerivationKind::Synthesize, None, value);
        let name = spec.name.clone();
        let written = self
            .write_rows(
                move |mut out| Ok(synthesize(&spec, &mut out).map_err(anyhow::Error::from)?),
            )
            .await?;
        self.store_derived(
            name,
            FieldNames::default(),
            ValidationRules::default(),
            derivation,
            written,
        )
        .await
    }

    /// A dataset `id` that holds texts, to make a `what` copy of.
    async fn text_dataset(&self, id: &str, what: &str) -> ServiceResult<DatasetRecord> {
        let parent = self.checked_dataset(id).await?;
        if parent.status != DatasetStatus::Ready {
            return Err(ServiceError::Conflict(format!(
                "dataset {} is {}; only a READY dataset can be {what}",
                parent.id,
                parent.status.as_str()
            )));
        }
        if parent.summary.kind != Some(DatasetKind::Text) {
            return Err(ServiceError::Conflict(format!(
                "dataset {} is a {} dataset; only texts can be {what}",
                parent.id,
                parent.summary.kind.map_or("TABULAR", |k| k.as_str())
            )));
        }
        Ok(parent)
    }
}

/// The rewriting of rows that writes each row, then `copies_of(label, k)` copies of it (`k`: the
/// row's place among its label's rows): exact ones, or with the text field drawn by `augmenter` from
/// `seed`, the row's line and the copy's number (from 1).
fn with_copies(
    fields: FieldNames,
    copies_of: impl Fn(&str, u64) -> u64 + Send + 'static,
    augmenter: Option<Augmenter>,
    seed: u64,
) -> impl FnMut(u64, Row) -> Vec<Row> + Send + 'static {
    let mut ordinals: HashMap<String, u64> = HashMap::new();
    move |line, row| {
        let Row::Object(object) = &row else {
            return vec![row];
        };
        let Some(label) = row_label(object, &fields) else {
            return vec![row];
        };
        let k = next_ordinal(&mut ordinals, &label);
        let n = copies_of(&label, k);
        let mut out = Vec::with_capacity(1 + n as usize);
        for c in 1..=n {
            let mut copy = object.clone();
            if let (Some(augmenter), Some(serde_json::Value::String(text))) =
                (&augmenter, copy.get_mut(&fields.text))
            {
                *text = augmenter.draw(text, &mut draw_rng(seed, line, c), true).0;
            }
            out.push(Row::Object(copy));
        }
        out.insert(0, row);
        out
    }
}

/// The place of the next row of `label` among its label's rows (from 0).
fn next_ordinal(ordinals: &mut HashMap<String, u64>, label: &str) -> u64 {
    let next = ordinals.entry(label.to_string()).or_insert(0);
    *next += 1;
    *next - 1
}

/// `total` in `parts` shares differing by at most one, the larger ones first.
fn equal_shares(total: u64, parts: u64) -> Vec<u64> {
    if parts == 0 {
        return Vec::new();
    }
    (0..parts)
        .map(|i| total / parts + u64::from(i < total % parts))
        .collect()
}

fn check_size(field: &str, rows: u64) -> ServiceResult<()> {
    if rows > MAX_DERIVED_ROWS {
        return Err(ServiceError::TooLarge(FieldError::new(
            field,
            format!(
                "the dataset would have {rows} rows, more than the limit of {MAX_DERIVED_ROWS}"
            ),
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up() {
        assert_eq!(equal_shares(10, 3), vec![4, 3, 3]);
        assert_eq!(equal_shares(0, 2), vec![0, 0]);
        assert!(equal_shares(5, 0).is_empty());
    }
}
