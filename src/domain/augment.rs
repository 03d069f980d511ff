//! What augmentation, balancing and synthesis are asked to do, checked once at the edge: the
//! techniques ([`Technique`]) with their probabilities and rates ([`Augmentation`]), a derived
//! dataset's plan ([`AugmentPlan`]), a balancing strategy ([`BalanceStrategy`]) and a synthetic
//! dataset's templates ([`SyntheticSpec`]). `data::augment` carries them out.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::{FieldError, abbreviate};

/// One way to change a text. The order here is the order techniques are applied in: words first,
/// then characters, then the wrapping of a span, then what is injected between characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Technique {
    Synonym,
    Insertion,
    Deletion,
    Swap,
    Case,
    Leetspeak,
    Homoglyph,
    Base64,
    Rot13,
    ZeroWidth,
    Whitespace,
    Punctuation,
}

impl Technique {
    pub const ALL: [Technique; 12] = [
        Self::Synonym,
        Self::Insertion,
        Self::Deletion,
        Self::Swap,
        Self::Case,
        Self::Leetspeak,
        Self::Homoglyph,
        Self::Base64,
        Self::Rot13,
        Self::ZeroWidth,
        Self::Whitespace,
        Self::Punctuation,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Synonym => "SYNONYM",
            Self::Insertion => "INSERTION",
            Self::Deletion => "DELETION",
            Self::Swap => "SWAP",
            Self::Case => "CASE",
            Self::Leetspeak => "LEETSPEAK",
            Self::Homoglyph => "HOMOGLYPH",
            Self::Base64 => "BASE64",
            Self::Rot13 => "ROT13",
            Self::ZeroWidth => "ZERO_WIDTH",
            Self::Whitespace => "WHITESPACE",
            Self::Punctuation => "PUNCTUATION",
        }
    }

    /// What the technique does, for `augmentationTechniques`.
    pub fn description(self) -> &'static str {
        match self {
            Self::Synonym => {
                "replaces words with a synonym from kiln's English thesaurus (case and trailing \
                 punctuation kept)"
            }
            Self::Insertion => "inserts a synonym of one of the text's words at a random place",
            Self::Deletion => "deletes words at random (at least one word stays)",
            Self::Swap => "swaps two words at random",
            Self::Case => "changes words to UPPER, lower, Title or aLtErNaTiNg case",
            Self::Leetspeak => "writes letters as digits and symbols (e→3, a→4, o→0, s→5, t→7, …)",
            Self::Homoglyph => {
                "replaces Latin letters with look-alike Cyrillic and Greek ones (a→а, e→е, o→о, …)"
            }
            Self::Base64 => "replaces a span of words with its base64 encoding",
            Self::Rot13 => "replaces a span of words with its ROT13 rotation",
            Self::ZeroWidth => {
                "inserts invisible zero-width characters (U+200B, U+200C, U+200D, U+2060, U+FEFF) \
                 between characters"
            }
            Self::Whitespace => {
                "widens the spaces between words into runs of spaces, tabs and newlines, and splits \
                 words with a space"
            }
            Self::Punctuation => {
                "inserts punctuation after words and between the letters of words (i.g.n.o.r.e)"
            }
        }
    }

    /// What `rate` means for this technique.
    pub fn rate_meaning(self) -> &'static str {
        match self {
            Self::Synonym => "share of the words replaced (at least one)",
            Self::Insertion => "words inserted, as a share of the text's words (at least one)",
            Self::Deletion => "chance that each word is deleted",
            Self::Swap => "swaps, as a share of the text's words (at least one)",
            Self::Case => "chance that each word's case is changed",
            Self::Leetspeak | Self::Homoglyph => "chance that each letter that has one is replaced",
            Self::Base64 | Self::Rot13 => "share of the words in the span (at least one word)",
            Self::ZeroWidth => "chance of a zero-width character after each character",
            Self::Whitespace => "chance that each space is widened (half that for a word split)",
            Self::Punctuation => "chance that each word gets punctuation",
        }
    }

    pub fn default_rate(self) -> f64 {
        match self {
            Self::Synonym | Self::Insertion | Self::Deletion | Self::Swap => 0.1,
            Self::Case => 0.3,
            Self::Leetspeak | Self::Homoglyph => 0.3,
            Self::Base64 | Self::Rot13 => 0.3,
            Self::ZeroWidth => 0.1,
            Self::Whitespace | Self::Punctuation => 0.2,
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == raw)
    }
}

/// One technique as asked for: the chance it is applied to a text, and how much of the text it changes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TechniqueSetting {
    pub technique: Technique,
    pub probability: f64,
    pub rate: f64,
}

/// Checked techniques, each named once, in application order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Augmentation {
    pub techniques: Vec<TechniqueSetting>,
}

/// A technique as sent; `probability` defaults to 1, `rate` to the technique's own default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TechniqueInput {
    pub technique: Technique,
    #[serde(default)]
    pub probability: Option<f64>,
    #[serde(default)]
    pub rate: Option<f64>,
}

/// Techniques as sent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AugmentationInput {
    pub techniques: Vec<TechniqueInput>,
}

pub const DEFAULT_PROBABILITY: f64 = 1.0;

impl Augmentation {
    /// Checks `input`; fields are reported under `prefix` (`spec`, `hyperparameters.augmentation`).
    pub fn parse(prefix: &str, input: &AugmentationInput) -> Result<Self, FieldError> {
        if input.techniques.is_empty() {
            return Err(FieldError::new(
                format!("{prefix}.techniques"),
                "must name at least one technique",
            ));
        }
        let mut seen = BTreeSet::new();
        let mut techniques = Vec::with_capacity(input.techniques.len());
        for (i, t) in input.techniques.iter().enumerate() {
            let field = |name: &str| format!("{prefix}.techniques[{i}]{name}");
            if !seen.insert(t.technique) {
                return Err(FieldError::new(
                    field(""),
                    format!("{} is named twice", t.technique.as_str()),
                ));
            }
            let share = |name: &str, v: f64| {
                if v.is_finite() && v > 0.0 && v <= 1.0 {
                    Ok(v)
                } else {
                    Err(FieldError::new(
                        field(&format!(".{name}")),
                        format!("must be greater than 0 and at most 1 (got {v})"),
                    ))
                }
            };
            techniques.push(TechniqueSetting {
                technique: t.technique,
                probability: share("probability", t.probability.unwrap_or(DEFAULT_PROBABILITY))?,
                rate: share("rate", t.rate.unwrap_or(t.technique.default_rate()))?,
            });
        }
        techniques.sort_by_key(|t| t.technique);
        Ok(Self { techniques })
    }

    /// Every technique at its defaults, for a caller that names only techniques.
    pub fn of(techniques: &[Technique]) -> Self {
        let mut techniques: Vec<TechniqueSetting> = techniques
            .iter()
            .map(|&technique| TechniqueSetting {
                technique,
                probability: DEFAULT_PROBABILITY,
                rate: technique.default_rate(),
            })
            .collect();
        techniques.sort_by_key(|t| t.technique);
        techniques.dedup_by_key(|t| t.technique);
        Self { techniques }
    }
}

/// The most augmented copies of each row `augmentDataset` makes.
pub const MAX_AUGMENTATION_FACTOR: i64 = 20;
/// The most rows a derived or generated dataset may have.
pub const MAX_DERIVED_ROWS: u64 = 10_000_000;

/// `augmentDataset`'s request as sent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AugmentPlanInput {
    pub techniques: Vec<TechniqueInput>,
    pub augmentation_factor: Option<i64>,
    pub preserve_labels: Option<bool>,
    pub seed: Option<i64>,
}

/// A derived dataset's augmentation: the original rows, then `factor × rows` augmented copies.
/// With `preserve_labels` every row gets `factor` copies, so the label distribution stays as it was;
/// without, the copies are shared out so that each label gets the same number of them (rows of rare
/// labels get more copies each).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AugmentPlan {
    pub augmentation: Augmentation,
    pub factor: u32,
    pub preserve_labels: bool,
    pub seed: u64,
}

pub const DEFAULT_AUGMENT_SEED: u64 = 42;

impl AugmentPlan {
    pub fn parse(input: &AugmentPlanInput) -> Result<Self, FieldError> {
        let augmentation = Augmentation::parse(
            "spec",
            &AugmentationInput {
                techniques: input.techniques.clone(),
            },
        )?;
        let factor = input.augmentation_factor.unwrap_or(1);
        if !(1..=MAX_AUGMENTATION_FACTOR).contains(&factor) {
            return Err(FieldError::new(
                "spec.augmentationFactor",
                format!("must be between 1 and {MAX_AUGMENTATION_FACTOR} (got {factor})"),
            ));
        }
        Ok(Self {
            augmentation,
            factor: factor as u32,
            preserve_labels: input.preserve_labels.unwrap_or(true),
            seed: parse_seed("spec.seed", input.seed)?,
        })
    }
}

fn parse_seed(field: &str, seed: Option<i64>) -> Result<u64, FieldError> {
    match seed {
        None => Ok(DEFAULT_AUGMENT_SEED),
        Some(s) if s >= 0 => Ok(s as u64),
        Some(s) => Err(FieldError::new(
            field,
            format!("must be 0 or more (got {s})"),
        )),
    }
}

/// How `balanceDataset` evens out labels: repeat rows of the rarer labels until each has as many as
/// the most frequent (OVERSAMPLE), keep a random subset of each label as large as the rarest
/// (UNDERSAMPLE), or add augmented copies of rarer labels' rows up to the most frequent (AUGMENT).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BalanceStrategy {
    Oversample,
    Undersample,
    Augment,
}

impl BalanceStrategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Oversample => "OVERSAMPLE",
            Self::Undersample => "UNDERSAMPLE",
            Self::Augment => "AUGMENT",
        }
    }
}

/// What AUGMENT balancing uses when no techniques are named: the word-level ones.
pub const DEFAULT_BALANCE_TECHNIQUES: [Technique; 4] = [
    Technique::Synonym,
    Technique::Insertion,
    Technique::Deletion,
    Technique::Swap,
];

/// A balancing request, checked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BalancePlan {
    pub strategy: BalanceStrategy,
    pub seed: u64,
    /// AUGMENT only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub augmentation: Option<Augmentation>,
}

impl BalancePlan {
    pub fn parse(
        strategy: BalanceStrategy,
        seed: Option<i64>,
        techniques: Option<&[TechniqueInput]>,
    ) -> Result<Self, FieldError> {
        let augmentation = match (strategy, techniques) {
            (BalanceStrategy::Augment, None) => Some(Augmentation::of(&DEFAULT_BALANCE_TECHNIQUES)),
            (BalanceStrategy::Augment, Some(t)) => Some(Augmentation::parse(
                "augmentation",
                &AugmentationInput {
                    techniques: t.to_vec(),
                },
            )?),
            (_, Some(_)) => {
                return Err(FieldError::new(
                    "augmentation",
                    format!(
                        "applies to the AUGMENT strategy only, not {}",
                        strategy.as_str()
                    ),
                ));
            }
            (_, None) => None,
        };
        Ok(Self {
            strategy,
            seed: parse_seed("seed", seed)?,
            augmentation,
        })
    }
}

/// Limits of a synthetic dataset's spec.
pub const MAX_TEMPLATES: usize = 1_000;
pub const MAX_TEMPLATE_CHARS: usize = 2_000;
pub const MAX_SLOTS: usize = 100;
pub const MAX_SLOT_VALUES: usize = 10_000;
pub const MAX_SLOT_VALUE_CHARS: usize = 500;
pub const MAX_SYNTHETIC_ROWS: i64 = 1_000_000;

/// One template as sent: text with `{slot}` placeholders (`{{` and `}}` for literal braces) and the
/// label of the rows it makes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TemplateInput {
    pub template: String,
    pub label: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SlotInput {
    pub name: String,
    pub values: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LabelShareInput {
    pub label: String,
    pub share: f64,
}

/// `generateSyntheticDataset`'s spec as sent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SyntheticInput {
    pub name: String,
    pub templates: Vec<TemplateInput>,
    pub slots: Vec<SlotInput>,
    pub rows: i64,
    pub label_distribution: Option<Vec<LabelShareInput>>,
    pub seed: Option<i64>,
}

/// A piece of a parsed template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Piece {
    Text(String),
    /// An index into [`SyntheticSpec::slots`].
    Slot(usize),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Template {
    pub pieces: Vec<Piece>,
    pub label: String,
}

/// A checked synthetic dataset spec: rows are labelled by `labels` (label, row count, exact), each
/// row's template drawn among its label's templates and each slot's value among its values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyntheticSpec {
    pub name: String,
    pub templates: Vec<Template>,
    pub slots: Vec<(String, Vec<String>)>,
    pub labels: Vec<(String, u64)>,
    pub seed: u64,
}

impl SyntheticSpec {
    pub fn parse(input: &SyntheticInput) -> Result<Self, FieldError> {
        let name = super::DisplayName::parse("spec.name", &input.name)?.into_string();
        if input.templates.is_empty() || input.templates.len() > MAX_TEMPLATES {
            return Err(FieldError::new(
                "spec.templates",
                format!(
                    "must hold 1 to {MAX_TEMPLATES} templates (got {})",
                    input.templates.len()
                ),
            ));
        }
        if input.slots.len() > MAX_SLOTS {
            return Err(FieldError::new(
                "spec.slots",
                format!("must hold at most {MAX_SLOTS} slots"),
            ));
        }
        let mut slots: Vec<(String, Vec<String>)> = Vec::with_capacity(input.slots.len());
        for (i, slot) in input.slots.iter().enumerate() {
            let field = format!("spec.slots[{i}]");
            if !is_slot_name(&slot.name) {
                return Err(FieldError::new(
                    format!("{field}.name"),
                    "must be 1 to 64 letters, digits or underscores",
                ));
            }
            if slots.iter().any(|(n, _)| *n == slot.name) {
                return Err(FieldError::new(
                    format!("{field}.name"),
                    format!("slot {:?} is defined twice", slot.name),
                ));
            }
            if slot.values.is_empty() || slot.values.len() > MAX_SLOT_VALUES {
                return Err(FieldError::new(
                    format!("{field}.values"),
                    format!("must hold 1 to {MAX_SLOT_VALUES} values"),
                ));
            }
            if let Some(j) = slot
                .values
                .iter()
                .position(|v| v.chars().count() > MAX_SLOT_VALUE_CHARS)
            {
                return Err(FieldError::new(
                    format!("{field}.values[{j}]"),
                    format!("is longer than {MAX_SLOT_VALUE_CHARS} characters"),
                ));
            }
            slots.push((slot.name.clone(), slot.values.clone()));
        }
        let mut templates = Vec::with_capacity(input.templates.len());
        for (i, t) in input.templates.iter().enumerate() {
            let field = format!("spec.templates[{i}]");
            let label = t.label.trim();
            if label.is_empty() {
                return Err(FieldError::new(format!("{field}.label"), "is empty"));
            }
            if t.template.trim().is_empty() || t.template.chars().count() > MAX_TEMPLATE_CHARS {
                return Err(FieldError::new(
                    format!("{field}.template"),
                    format!("must be 1 to {MAX_TEMPLATE_CHARS} characters, not blank"),
                ));
            }
            let pieces = parse_template(&t.template, &slots)
                .map_err(|m| FieldError::new(format!("{field}.template"), m))?;
            templates.push(Template {
                pieces,
                label: label.to_string(),
            });
        }
        let rows = input.rows;
        if !(1..=MAX_SYNTHETIC_ROWS).contains(&rows) {
            return Err(FieldError::new(
                "spec.rows",
                format!("must be between 1 and {MAX_SYNTHETIC_ROWS} (got {rows})"),
            ));
        }
        let known: BTreeSet<&str> = templates.iter().map(|t| t.label.as_str()).collect();
        let shares: Vec<(String, f64)> = match &input.label_distribution {
            None => known.iter().map(|l| (l.to_string(), 1.0)).collect(),
            Some(list) => {
                if list.is_empty() {
                    return Err(FieldError::new(
                        "spec.labelDistribution",
                        "must name at least one label",
                    ));
                }
                let mut out: Vec<(String, f64)> = Vec::with_capacity(list.len());
                for (i, s) in list.iter().enumerate() {
                    let field = format!("spec.labelDistribution[{i}]");
                    let label = s.label.trim();
                    if !known.contains(label) {
                        return Err(FieldError::new(
                            format!("{field}.label"),
                            format!(
                                "no template has label {:?} (the templates' labels: {})",
                                abbreviate(label, 80),
                                abbreviate(
                                    &known.iter().copied().collect::<Vec<_>>().join(", "),
                                    200
                                )
                            ),
                        ));
                    }
                    if out.iter().any(|(l, _)| l == label) {
                        return Err(FieldError::new(
                            format!("{field}.label"),
                            format!("{:?} is named twice", abbreviate(label, 80)),
                        ));
                    }
                    if !(s.share.is_finite() && s.share >= 0.0) {
                        return Err(FieldError::new(
                            format!("{field}.share"),
                            format!("must be 0 or more (got {})", s.share),
                        ));
                    }
                    out.push((label.to_string(), s.share));
                }
                if out.iter().all(|(_, s)| *s == 0.0) {
                    return Err(FieldError::new(
                        "spec.labelDistribution",
                        "the shares add up to 0",
                    ));
                }
                out
            }
        };
        Ok(Self {
            name,
            templates,
            slots,
            labels: apportion(&shares, rows as u64),
            seed: parse_seed("spec.seed", input.seed)?,
        })
    }
}

fn is_slot_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Splits a template into text and slots; `{{` and `}}` are literal braces.
fn parse_template(raw: &str, slots: &[(String, Vec<String>)]) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                text.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                text.push('}');
            }
            '}' => return Err("has a `}` that closes nothing (write `}}` for a brace)".into()),
            '{' => {
                let mut name = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some(c) => name.push(c),
                        None => return Err(format!("has a `{{{name}` that is never closed")),
                    }
                }
                let Some(index) = slots.iter().position(|(n, _)| *n == name) else {
                    let hint = match super::closest(&name, slots.iter().map(|(n, _)| n.as_str())) {
                        Some(near) => format!("; did you mean {{{near}}}?"),
                        None => String::new(),
                    };
                    return Err(format!(
                        "names slot {{{}}}, which spec.slots does not define{hint}",
                        abbreviate(&name, 64)
                    ));
                };
                if !text.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut text)));
                }
                pieces.push(Piece::Slot(index));
            }
            c => text.push(c),
        }
    }
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    Ok(pieces)
}

/// Shares of `total` rows by weight, exactly `total` in all (largest remainders first, ties by order).
fn apportion(shares: &[(String, f64)], total: u64) -> Vec<(String, u64)> {
    let sum: f64 = shares.iter().map(|(_, s)| s).sum();
    let exact: Vec<f64> = shares.iter().map(|(_, s)| s / sum * total as f64).collect();
    let mut counts: Vec<u64> = exact.iter().map(|e| e.floor() as u64).collect();
    let mut left = total - counts.iter().sum::<u64>();
    let mut order: Vec<usize> = (0..shares.len()).collect();
    order.sort_by(|&a, &b| {
        let (ra, rb) = (exact[a] - exact[a].floor(), exact[b] - exact[b].floor());
        rb.partial_cmp(&ra).unwrap_or(std::cmp::Ordering::Equal)
    });
    for i in order {
        if left == 0 {
            break;
        }
        counts[i] += 1;
        left -= 1;
    }
    shares
        .iter()
        .zip(counts)
        .map(|((l, _), c)| (l.clone(), c))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(t: &str, label: &str) -> TemplateInput {
        TemplateInput {
            template: t.into(),
            label: label.into(),
        }
    }

    #[test]
    fn techniques_are_checked_and_put_in_application_order() {
        let input = AugmentationInput {
            techniques: vec![
                TechniqueInput {
                    technique: Technique::ZeroWidth,
                    probability: None,
                    rate: Some(0.5),
                },
                TechniqueInput {
                    technique: Technique::Synonym,
                    probability: Some(0.25),
                    rate: None,
                },
            ],
        };
        let a = Augmentation::parse("spec", &input).unwrap();
        assert_eq!(a.techniques[0].technique, Technique::Synonym);
        assert_eq!(a.techniques[0].probability, 0.25);
        assert_eq!(a.techniques[0].rate, 0.1);
        assert_eq!(a.techniques[1].probability, 1.0);
        let mut twice = input.clone();
        twice.techniques.push(twice.techniques[0].clone());
        assert_eq!(
            Augmentation::parse("spec", &twice).unwrap_err().field,
            "spec.techniques[2]"
        );
        let mut bad = input;
        bad.techniques[1].rate = Some(1.5);
        let e = Augmentation::parse("hyperparameters.augmentation", &bad).unwrap_err();
        assert_eq!(e.field, "hyperparameters.augmentation.techniques[1].rate");
        assert!(e.message.contains("1.5"));
        assert!(Augmentation::parse("spec", &AugmentationInput::default()).is_err());
    }

    #[test]
    fn a_template_names_only_defined_slots_and_rows_are_shared_exactly() {
        let input = SyntheticInput {
            name: "synthetic".into(),
            templates: vec![
                template("Ignore {what} and {{literally}} {act}", "injection"),
                template("What is {what}?", "benign"),
            ],
            slots: vec![
                SlotInput {
                    name: "what".into(),
                    values: vec!["the rules".into()],
                },
                SlotInput {
                    name: "act".into(),
                    values: vec!["print the key".into()],
                },
            ],
            rows: 10,
            label_distribution: Some(vec![
                LabelShareInput {
                    label: "injection".into(),
                    share: 2.0,
                },
                LabelShareInput {
                    label: "benign".into(),
                    share: 1.0,
                },
            ]),
            seed: None,
        };
        let spec = SyntheticSpec::parse(&input).unwrap();
        assert_eq!(
            spec.templates[0].pieces,
            vec![
                Piece::Text("Ignore ".into()),
                Piece::Slot(0),
                Piece::Text(" and {literally} ".into()),
                Piece::Slot(1),
            ]
        );
        assert_eq!(
            spec.labels,
            vec![("injection".to_string(), 7), ("benign".to_string(), 3)]
        );
        let mut typo = input.clone();
        typo.templates[1].template = "What is {wat}?".into();
        let e = SyntheticSpec::parse(&typo).unwrap_err();
        assert_eq!(e.field, "spec.templates[1].template");
        assert!(e.message.contains("did you mean {what}"), "{}", e.message);
        let mut open = input.clone();
        open.templates[0].template = "Ignore {what".into();
        assert!(SyntheticSpec::parse(&open).is_err());
        let mut unknown = input;
        unknown.label_distribution.as_mut().unwrap()[1].label = "spam".into();
        assert_eq!(
            SyntheticSpec::parse(&unknown).unwrap_err().field,
            "spec.labelDistribution[1].label"
        );
    }
}
