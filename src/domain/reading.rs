//! How a dataset file is read: which fields are the text, the label and the features (the mapping,
//! chosen at upload, changed by `validateDataset`, overridden per job at submit), the rules its rows
//! must meet, and what reading it found out about its layout (a CSV file's delimiter and header, the
//! columns it has).

use serde::{Deserialize, Serialize};

use super::{DisplayName, FieldError, abbreviate};

/// The longest text kiln reads, in characters.
pub const MAX_TEXT_CHARS: usize = 100_000;
/// The most feature columns a mapping may name, and the most fields `requiredFields` may name.
pub const MAX_MAPPED_FEATURES: usize = 10_000;
pub const MAX_REQUIRED_FIELDS: usize = 100;
/// The most labels `allowedLabels` may name (the most a dataset may have).
pub const MAX_ALLOWED_LABELS: usize = 1_000;

/// Which fields hold the text, the label and, for a table, the features.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FieldNames {
    pub text: String,
    pub label: String,
    /// The feature columns of a table, in this order; `None`: every column but the label, when the
    /// file has no text field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<Vec<String>>,
}

impl Default for FieldNames {
    fn default() -> Self {
        Self {
            text: "text".into(),
            label: "label".into(),
            features: None,
        }
    }
}

/// A mapping as a user sends it: each part optional, the rest from `base`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MappingInput {
    pub text_field: Option<String>,
    pub label_field: Option<String>,
    pub feature_fields: Option<Vec<String>>,
}

impl MappingInput {
    pub fn is_empty(&self) -> bool {
        self.text_field.is_none() && self.label_field.is_none() && self.feature_fields.is_none()
    }

    /// The mapping that results from applying this input over `base`, checked. `prefix` goes before the
    /// field names in errors (`fields.`, `Upload-Metadata.`).
    pub fn apply(&self, prefix: &str, base: &FieldNames) -> Result<FieldNames, FieldError> {
        let field = |f: &str| format!("{prefix}{f}");
        let name = |f: &str, value: &Option<String>, current: &str| -> Result<String, FieldError> {
            Ok(DisplayName::parse(&field(f), value.as_deref().unwrap_or(current))?.into_string())
        };
        let text = name("textField", &self.text_field, &base.text)?;
        let label = name("labelField", &self.label_field, &base.label)?;
        if text == label {
            return Err(FieldError::new(
                field("labelField"),
                "must differ from textField",
            ));
        }
        let features = match &self.feature_fields {
            // An explicit text field reads a text dataset: the features a base mapping had go.
            None if self.text_field.is_some() => None,
            None => base.features.clone(),
            Some(_) if self.text_field.is_some() => {
                return Err(FieldError::new(
                    field("featureFields"),
                    "give textField (a text dataset) or featureFields (a table), not both",
                ));
            }
            Some(list) => {
                let at = field("featureFields");
                if list.is_empty() {
                    return Err(FieldError::new(at, "must name at least one column"));
                }
                if list.len() > MAX_MAPPED_FEATURES {
                    return Err(FieldError::new(
                        at,
                        format!(
                            "names {} columns; at most {MAX_MAPPED_FEATURES}",
                            list.len()
                        ),
                    ));
                }
                let mut seen = std::collections::HashSet::new();
                let mut names = Vec::with_capacity(list.len());
                for (i, raw) in list.iter().enumerate() {
                    let name = DisplayName::parse(&format!("{at}[{i}]"), raw)?.into_string();
                    if name == label {
                        return Err(FieldError::new(
                            format!("{at}[{i}]"),
                            format!("{name:?} is the label field"),
                        ));
                    }
                    if !seen.insert(name.clone()) {
                        return Err(FieldError::new(
                            format!("{at}[{i}]"),
                            format!("{name:?} is named twice"),
                        ));
                    }
                    names.push(name);
                }
                Some(names)
            }
        };
        Ok(FieldNames {
            text,
            label,
            features,
        })
    }
}

/// Rules a dataset's rows must meet beyond being readable; each is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ValidationRules {
    /// At least this many valid rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_rows: Option<u64>,
    /// Every label is one of these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_labels: Option<Vec<String>>,
    /// No text is longer than this, in characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_text_length: Option<u64>,
    /// Every row has these fields, not null and not blank.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_fields: Vec<String>,
    /// Every label has at least this many rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_rows_per_label: Option<u64>,
}

/// Rules as a user sends them (numbers as GraphQL gives them).
#[derive(Debug, Clone, Default)]
pub struct RulesInput {
    pub min_rows: Option<i64>,
    pub allowed_labels: Option<Vec<String>>,
    pub max_text_length: Option<i64>,
    pub required_fields: Option<Vec<String>>,
    pub min_rows_per_label: Option<i64>,
}

impl ValidationRules {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Checks each rule; `prefix` goes before the field names in errors (`rules.`).
    pub fn parse(prefix: &str, input: &RulesInput) -> Result<Self, FieldError> {
        let field = |f: &str| format!("{prefix}{f}");
        let count = |f: &str, value: Option<i64>, min: i64| -> Result<Option<u64>, FieldError> {
            match value {
                Some(v) if v < min => Err(FieldError::new(
                    field(f),
                    format!("must be at least {min} (got {v})"),
                )),
                other => Ok(other.map(|v| v as u64)),
            }
        };
        let max_text_length = count("maxTextLength", input.max_text_length, 1)?;
        if let Some(max) = max_text_length
            && max > MAX_TEXT_CHARS as u64
        {
            return Err(FieldError::new(
                field("maxTextLength"),
                format!(
                    "must be at most {} (the longest text kiln reads)",
                    MAX_TEXT_CHARS
                ),
            ));
        }
        let names = |f: &str, list: &[String], max: usize| -> Result<Vec<String>, FieldError> {
            if list.len() > max {
                return Err(FieldError::new(
                    field(f),
                    format!("names {} entries; at most {max}", list.len()),
                ));
            }
            let mut out: Vec<String> = Vec::with_capacity(list.len());
            for (i, raw) in list.iter().enumerate() {
                let at = format!("{}[{i}]", field(f));
                let trimmed = raw.trim();
                if trimmed.is_empty() {
                    return Err(FieldError::new(at, "must not be blank"));
                }
                if trimmed.chars().count() > 200 {
                    return Err(FieldError::new(
                        at,
                        format!(
                            "{:?} is longer than 200 characters",
                            abbreviate(trimmed, 40)
                        ),
                    ));
                }
                if out.iter().any(|o| o == trimmed) {
                    return Err(FieldError::new(at, format!("{trimmed:?} is named twice")));
                }
                out.push(trimmed.to_string());
            }
            Ok(out)
        };
        let allowed_labels = match &input.allowed_labels {
            None => None,
            Some(list) if list.is_empty() => {
                return Err(FieldError::new(
                    field("allowedLabels"),
                    "must name at least one label",
                ));
            }
            Some(list) => Some(names("allowedLabels", list, MAX_ALLOWED_LABELS)?),
        };
        let required_fields = names(
            "requiredFields",
            input.required_fields.as_deref().unwrap_or_default(),
            MAX_REQUIRED_FIELDS,
        )?;
        Ok(Self {
            min_rows: count("minRows", input.min_rows, 1)?,
            allowed_labels,
            max_text_length,
            required_fields,
            min_rows_per_label: count("minRowsPerLabel", input.min_rows_per_label, 1)?,
        })
    }
}

/// How a CSV file is laid out, found by reading its start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CsvDialect {
    pub delimiter: u8,
    /// Whether the first row names the columns; without one they are `column1`, `column2`, ….
    pub header: bool,
}

impl Default for CsvDialect {
    fn default() -> Self {
        Self {
            delimiter: b',',
            header: true,
        }
    }
}

impl CsvDialect {
    /// The delimiter as a user reads it (`\t` for a tab).
    pub fn delimiter_name(&self) -> String {
        match self.delimiter {
            b'\t' => "\\t".to_string(),
            d => (d as char).to_string(),
        }
    }
}

/// What reading a file found out about its layout.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileLayout {
    /// The fields the file has: a CSV file's columns, a Parquet file's top-level columns, the keys of
    /// a JSONL file's rows (at most [`MAX_MAPPED_FEATURES`] + 2).
    #[serde(default)]
    pub columns: Vec<String>,
    /// CSV only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csv: Option<CsvDialect>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mapping_applies_over_its_base_and_names_the_field_at_fault() {
        let base = FieldNames::default();
        let given = MappingInput {
            label_field: Some("class".into()),
            feature_fields: Some(vec!["a".into(), "b".into()]),
            ..Default::default()
        };
        let mapped = given.apply("fields.", &base).unwrap();
        assert_eq!(mapped.label, "class");
        assert_eq!(mapped.features, Some(vec!["a".into(), "b".into()]));
        let both = MappingInput {
            text_field: Some("body".into()),
            feature_fields: Some(vec!["a".into()]),
            ..Default::default()
        };
        assert_eq!(
            both.apply("fields.", &base).unwrap_err().field,
            "fields.featureFields"
        );
        let twice = MappingInput {
            feature_fields: Some(vec!["a".into(), "a".into()]),
            ..Default::default()
        };
        assert_eq!(
            twice.apply("", &base).unwrap_err().field,
            "featureFields[1]"
        );
        // Naming a text field drops the features of a table's mapping.
        let text = MappingInput {
            text_field: Some("body".into()),
            ..Default::default()
        };
        assert_eq!(text.apply("", &mapped).unwrap().features, None);
    }

    #[test]
    fn rules_are_checked_one_by_one() {
        let ok = ValidationRules::parse(
            "rules.",
            &RulesInput {
                min_rows: Some(10),
                allowed_labels: Some(vec![" benign ".into(), "injection".into()]),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(
            ok.allowed_labels,
            Some(vec!["benign".into(), "injection".into()])
        );
        let bad = |input: RulesInput| ValidationRules::parse("rules.", &input).unwrap_err().field;
        assert_eq!(
            bad(RulesInput {
                min_rows: Some(0),
                ..Default::default()
            }),
            "rules.minRows"
        );
        assert_eq!(
            bad(RulesInput {
                allowed_labels: Some(vec![]),
                ..Default::default()
            }),
            "rules.allowedLabels"
        );
        assert_eq!(
            bad(RulesInput {
                required_fields: Some(vec!["a".into(), "a".into()]),
                ..Default::default()
            }),
            "rules.requiredFields[1]"
        );
        assert_eq!(
            bad(RulesInput {
                max_text_length: Some(1_000_000),
                ..Default::default()
            }),
            "rules.maxTextLength"
        );
    }
}
