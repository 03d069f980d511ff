//! Augmentation, balancing and synthetic data: `augmentationTechniques`, `previewAugmentation`,
//! `augmentDataset`, `balanceDataset`, `generateSyntheticDataset`, and the techniques a job augments
//! its training texts with (`hyperparameters.augmentation`).

use async_graphql::{Context, ID, InputObject, Object, SimpleObject};

use super::datasets::Dataset;
use super::{ApiResult, service};
use crate::domain::{self, Augmentation};

mirror_enum!(
    /// A way to change a text (`augmentationTechniques` describes each): SYNONYM, INSERTION, DELETION
    /// and SWAP of words, CASE changes, and the noise attackers use against security classifiers:
    /// LEETSPEAK, HOMOGLYPH, BASE64 and ROT13 wrapping of a span, ZERO_WIDTH characters, WHITESPACE and
    /// PUNCTUATION injection.
    AugmentationTechnique => domain::Technique {
        Synonym, Insertion, Deletion, Swap, Case, Leetspeak, Homoglyph, Base64, Rot13, ZeroWidth,
        Whitespace, Punctuation
    }
);
mirror_enum!(
    /// How `balanceDataset` evens out labels: OVERSAMPLE repeats rows of the rarer labels until each
    /// has as many as the most frequent; UNDERSAMPLE keeps a random subset of each label as large as
    /// the rarest; AUGMENT adds augmented copies of the rarer labels' rows up to the most frequent.
    BalanceStrategy => domain::BalanceStrategy { Oversample, Undersample, Augment }
);

/// One technique: `probability` (in (0, 1], default 1) that it is applied to a text, `rate` (in
/// (0, 1], default the technique's `defaultRate`) how much of the text it changes.
#[derive(InputObject, Clone)]
pub struct TechniqueSettingInput {
    pub technique: AugmentationTechnique,
    pub probability: Option<f64>,
    pub rate: Option<f64>,
}

impl From<TechniqueSettingInput> for domain::TechniqueInput {
    fn from(t: TechniqueSettingInput) -> Self {
        Self {
            technique: t.technique.into(),
            probability: t.probability,
            rate: t.rate,
        }
    }
}

fn techniques(list: Vec<TechniqueSettingInput>) -> Vec<domain::TechniqueInput> {
    list.into_iter().map(Into::into).collect()
}

/// Techniques applied together, each named once; they run in the order `AugmentationTechnique`
/// lists them.
#[derive(InputObject)]
pub struct AugmentationInput {
    /// 1 to 12 techniques.
    pub techniques: Vec<TechniqueSettingInput>,
}

impl From<AugmentationInput> for domain::AugmentationInput {
    fn from(a: AugmentationInput) -> Self {
        Self {
            techniques: techniques(a.techniques),
        }
    }
}

/// `augmentDataset`'s spec.
#[derive(InputObject)]
pub struct AugmentDatasetInput {
    /// 1 to 12 techniques; each copy is changed by at least one (when none is drawn, one of them is
    /// chosen evenly).
    pub techniques: Vec<TechniqueSettingInput>,
    /// Augmented copies per row, 1–20 (default 1); the dataset keeps its rows too.
    pub augmentation_factor: Option<i32>,
    /// true (default): every row gets `augmentationFactor` copies, so the label distribution stays as
    /// it was. false: the same number of copies in all is shared equally among the labels, so rows of
    /// rare labels get more copies each.
    pub preserve_labels: Option<bool>,
    /// Default 42; the same seed on the same dataset gives the same rows.
    pub seed: Option<i64>,
}

/// One text of a template: `{slot}` is replaced by one of the slot's values, `{{` and `}}` are
/// literal braces.
#[derive(InputObject)]
#[graphql(name = "SyntheticTemplateInput")]
pub struct TemplateInput {
    /// At most 2000 characters.
    pub template: String,
    pub label: String,
}

#[derive(InputObject)]
#[graphql(name = "SyntheticSlotInput")]
pub struct SlotInput {
    /// Letters, digits and underscores, at most 64.
    pub name: String,
    /// 1 to 10000 values of at most 500 characters.
    pub values: Vec<String>,
}

#[derive(InputObject)]
pub struct LabelShareInput {
    pub label: String,
    /// A weight of 0 or more; the shares are divided by their sum.
    pub share: f64,
}

/// `generateSyntheticDataset`'s spec.
#[derive(InputObject)]
pub struct SyntheticDatasetInput {
    pub name: String,
    /// 1 to 1000 templates.
    pub templates: Vec<TemplateInput>,
    /// At most 100 slots.
    #[graphql(default)]
    pub slots: Vec<SlotInput>,
    /// 1 to 1000000 rows.
    pub rows: i32,
    /// Default: the templates' labels in equal shares. Each row count is exact (the remainders go to
    /// the labels with the largest fractions).
    pub label_distribution: Option<Vec<LabelShareInput>>,
    /// Default 42; the same spec gives the same rows.
    pub seed: Option<i64>,
}

impl From<SyntheticDatasetInput> for domain::SyntheticInput {
    fn from(s: SyntheticDatasetInput) -> Self {
        Self {
            name: s.name,
            templates: s
                .templates
                .into_iter()
                .map(|t| domain::TemplateInput {
                    template: t.template,
                    label: t.label,
                })
                .collect(),
            slots: s
                .slots
                .into_iter()
                .map(|s| domain::SlotInput {
                    name: s.name,
                    values: s.values,
                })
                .collect(),
            rows: s.rows.into(),
            label_distribution: s.label_distribution.map(|l| {
                l.into_iter()
                    .map(|l| domain::LabelShareInput {
                        label: l.label,
                        share: l.share,
                    })
                    .collect()
            }),
            seed: s.seed,
        }
    }
}

/// A technique and what it takes.
#[derive(SimpleObject)]
pub struct AugmentationTechniqueInfo {
    pub technique: AugmentationTechnique,
    pub description: String,
    /// What `rate` means for it.
    pub rate_meaning: String,
    pub default_rate: f64,
    pub default_probability: f64,
}

/// One technique as a job or dataset was made with it.
#[derive(SimpleObject)]
pub struct TechniqueSetting {
    pub technique: AugmentationTechnique,
    pub probability: f64,
    pub rate: f64,
}

/// The techniques a job augments its training texts with.
#[derive(SimpleObject)]
pub struct TrainingAugmentation {
    pub techniques: Vec<TechniqueSetting>,
}

impl From<&Augmentation> for TrainingAugmentation {
    fn from(a: &Augmentation) -> Self {
        Self {
            techniques: a
                .techniques
                .iter()
                .map(|t| TechniqueSetting {
                    technique: t.technique.into(),
                    probability: t.probability,
                    rate: t.rate,
                })
                .collect(),
        }
    }
}

/// One augmented draw of a text.
#[derive(SimpleObject)]
pub struct AugmentationSample {
    pub text: String,
    /// The techniques that changed it, in the order they ran.
    pub techniques: Vec<AugmentationTechnique>,
}

#[derive(Default)]
pub struct AugmentQuery;

#[Object]
impl AugmentQuery {
    /// Every technique, with what its `rate` means and its defaults.
    async fn augmentation_techniques(&self) -> Vec<AugmentationTechniqueInfo> {
        domain::Technique::ALL
            .into_iter()
            .map(|t| AugmentationTechniqueInfo {
                technique: t.into(),
                description: t.description().into(),
                rate_meaning: t.rate_meaning().into(),
                default_rate: t.default_rate(),
                default_probability: domain::DEFAULT_PROBABILITY,
            })
            .collect()
    }

    /// `samples` (1–20, default 5) augmented draws of `text` (at most 100000 characters), each changed
    /// by at least one technique; nothing is stored. The same `seed` (default 42) gives the same
    /// samples.
    async fn preview_augmentation(
        &self,
        ctx: &Context<'_>,
        text: String,
        spec: AugmentationInput,
        samples: Option<i32>,
        seed: Option<i64>,
    ) -> ApiResult<Vec<AugmentationSample>> {
        let augmentation = Augmentation::parse("spec", &spec.into())?;
        let seed = match seed {
            None => domain::DEFAULT_AUGMENT_SEED,
            Some(s) if s >= 0 => s as u64,
            Some(s) => {
                return Err(super::ApiError::bad(
                    "seed",
                    format!("must be 0 or more (got {s})"),
                ));
            }
        };
        Ok(service(ctx)
            .preview_augmentation(&text, &augmentation, samples.unwrap_or(5).into(), seed)?
            .into_iter()
            .map(|p| AugmentationSample {
                text: p.text,
                techniques: p.techniques.into_iter().map(Into::into).collect(),
            })
            .collect())
    }
}

#[derive(Default)]
pub struct AugmentMutation;

#[Object]
impl AugmentMutation {
    /// A copy of a READY text dataset holding each row followed by its augmented copies (the copies'
    /// other fields as the row's). The copy is a JSONL dataset with the same mapping and rules,
    /// validated, profiled and scanned like an upload; `derivation` holds the spec. The same spec on
    /// the same dataset returns the copy made before. At most 10000000 rows in all (`PAYLOAD_TOO_LARGE`).
    async fn augment_dataset(
        &self,
        ctx: &Context<'_>,
        id: ID,
        spec: AugmentDatasetInput,
    ) -> ApiResult<Dataset> {
        let plan = domain::AugmentPlan::parse(&domain::AugmentPlanInput {
            techniques: techniques(spec.techniques),
            augmentation_factor: spec.augmentation_factor.map(Into::into),
            preserve_labels: spec.preserve_labels,
            seed: spec.seed,
        })?;
        Ok(Dataset(service(ctx).augment_dataset(&id, &plan).await?))
    }

    /// A copy of a READY dataset whose labels have as many rows each (see `BalanceStrategy`); rows
    /// keep their file order, copies follow the row they copy. `augmentation`: AUGMENT only (default:
    /// SYNONYM, INSERTION, DELETION and SWAP at their defaults). `seed` (default 42) picks the rows.
    /// `CONFLICT` when the dataset is balanced already.
    async fn balance_dataset(
        &self,
        ctx: &Context<'_>,
        id: ID,
        strategy: BalanceStrategy,
        augmentation: Option<AugmentationInput>,
        seed: Option<i64>,
    ) -> ApiResult<Dataset> {
        let techniques = augmentation.map(|a| techniques(a.techniques));
        let plan = domain::BalancePlan::parse(strategy.into(), seed, techniques.as_deref())?;
        Ok(Dataset(service(ctx).balance_dataset(&id, &plan).await?))
    }

    /// A JSONL dataset of `rows` texts made from templates (fields `text` and `label`), validated,
    /// profiled and scanned like an upload. Its `derivation` is SYNTHESIZE with no parent; the same
    /// spec returns the dataset made before.
    async fn generate_synthetic_dataset(
        &self,
        ctx: &Context<'_>,
        spec: SyntheticDatasetInput,
    ) -> ApiResult<Dataset> {
        let spec = domain::SyntheticSpec::parse(&spec.into())?;
        Ok(Dataset(
            service(ctx).generate_synthetic_dataset(spec).await?,
        ))
    }
}
