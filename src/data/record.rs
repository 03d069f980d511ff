//! Checking one record, whatever its format: the rules a row must meet, written once for validation and
//! for reading rows back.

use super::{FieldNames, MAX_FEATURES, MAX_TEXT_CHARS};
use crate::domain::{DatasetKind, ValidationRules, abbreviate};

/// One cell of a record.
pub(super) enum Cell<'a> {
    Missing,
    Null,
    Str(&'a str),
    Num(f64),
    Bool(bool),
    Other,
}

impl<'a> Cell<'a> {
    pub(super) fn from_json(value: Option<&'a serde_json::Value>) -> Self {
        match value {
            None => Cell::Missing,
            Some(serde_json::Value::Null) => Cell::Null,
            Some(serde_json::Value::String(s)) => Cell::Str(s),
            Some(serde_json::Value::Number(n)) => n.as_f64().map(Cell::Num).unwrap_or(Cell::Other),
            Some(serde_json::Value::Bool(b)) => Cell::Bool(*b),
            Some(_) => Cell::Other,
        }
    }

    fn describe(&self) -> &'static str {
        match self {
            Cell::Missing => "missing",
            Cell::Null => "null",
            Cell::Str(_) => "a string",
            Cell::Num(_) => "a number",
            Cell::Bool(_) => "a boolean",
            Cell::Other => "an array or object",
        }
    }
}

/// A record's cells by role.
pub(super) trait Cells {
    fn label(&self) -> Cell<'_>;
    fn text(&self) -> Cell<'_>;
    /// The `j`-th feature column.
    fn feature(&self, j: usize) -> Cell<'_>;
    /// The `j`-th of the rules' required fields.
    fn required(&self, j: usize) -> Cell<'_>;
}

/// A JSONL record: an object whose keys are the field names.
pub(super) struct JsonCells<'a> {
    pub object: &'a serde_json::Map<String, serde_json::Value>,
    pub names: &'a FieldNames,
    pub features: &'a [String],
    pub required: &'a [String],
}

impl Cells for JsonCells<'_> {
    fn label(&self) -> Cell<'_> {
        Cell::from_json(self.object.get(&self.names.label))
    }
    fn text(&self) -> Cell<'_> {
        Cell::from_json(self.object.get(&self.names.text))
    }
    fn feature(&self, j: usize) -> Cell<'_> {
        Cell::from_json(self.object.get(&self.features[j]))
    }
    fn required(&self, j: usize) -> Cell<'_> {
        Cell::from_json(self.object.get(&self.required[j]))
    }
}

/// Where the columns a CSV file is read by are, found once from its header.
#[derive(Debug, Clone)]
pub(super) struct CsvLayout {
    pub delimiter: u8,
    pub label: usize,
    pub text: Option<usize>,
    pub features: Vec<usize>,
    /// The rules' required fields; `None` for a field the file has no column for (reported once).
    pub required: Vec<Option<usize>>,
}

pub(super) struct CsvCells<'a> {
    pub record: &'a csv::StringRecord,
    pub layout: &'a CsvLayout,
}

impl CsvCells<'_> {
    fn at(&self, i: Option<usize>) -> Cell<'_> {
        match i.and_then(|i| self.record.get(i)) {
            None => Cell::Missing,
            Some(s) => Cell::Str(s),
        }
    }
}

impl Cells for CsvCells<'_> {
    fn label(&self) -> Cell<'_> {
        self.at(Some(self.layout.label))
    }
    fn text(&self) -> Cell<'_> {
        self.at(self.layout.text)
    }
    fn feature(&self, j: usize) -> Cell<'_> {
        self.at(self.layout.features.get(j).copied())
    }
    fn required(&self, j: usize) -> Cell<'_> {
        self.at(self.layout.required.get(j).copied().flatten())
    }
}

/// What a valid row holds.
pub(super) struct Row<'a> {
    pub label: String,
    pub text: Option<&'a str>,
    pub features: Vec<f32>,
}

/// Checks one record of a dataset of `kind` with `feature_names` (tabular); every problem found is
/// pushed to `problems`, and the row comes back only when there was none.
pub(super) fn check<'a>(
    cells: &'a impl Cells,
    kind: DatasetKind,
    names: &FieldNames,
    feature_names: &[String],
    problems: &mut Vec<String>,
) -> Option<Row<'a>> {
    let before = problems.len();
    let cell = cells.label();
    let label = match label_text(&cell) {
        Some(label) => Some(label),
        None => match cell {
            Cell::Str(_) => {
                problems.push(format!("field {:?} is empty", names.label));
                None
            }
            other => {
                problems.push(format!(
                    "field {:?} is {}; expected a string or a number",
                    names.label,
                    other.describe()
                ));
                None
            }
        },
    };
    let mut text = None;
    let mut features = Vec::new();
    match kind {
        DatasetKind::Text => match cells.text() {
            Cell::Str(s) if s.trim().is_empty() => {
                problems.push(format!("field {:?} is empty", names.text))
            }
            Cell::Str(s) if s.chars().count() > MAX_TEXT_CHARS => problems.push(format!(
                "field {:?} is longer than {MAX_TEXT_CHARS} characters",
                names.text
            )),
            Cell::Str(s) => text = Some(s),
            other => problems.push(format!(
                "field {:?} is {}; expected a string",
                names.text,
                other.describe()
            )),
        },
        DatasetKind::Tabular => {
            if feature_names.is_empty() {
                problems.push(format!("has no feature columns besides {:?}", names.label));
            } else if feature_names.len() > MAX_FEATURES {
                problems.push(format!("has more than {MAX_FEATURES} feature columns"));
            }
            features.reserve(feature_names.len());
            for (j, name) in feature_names.iter().enumerate() {
                let value = match cells.feature(j) {
                    Cell::Num(v) => Ok(v),
                    Cell::Str(s) => s
                        .trim()
                        .parse::<f64>()
                        .map_err(|_| format!("feature {name:?} is not a number: {s:?}")),
                    other => Err(format!(
                        "feature {name:?} is {}; expected a number",
                        other.describe()
                    )),
                };
                match value {
                    Ok(v) if (v as f32).is_finite() => features.push(v as f32),
                    Ok(v) => problems.push(format!(
                        "feature {name:?} is {v}, outside the range of a 32-bit float"
                    )),
                    Err(problem) => problems.push(problem),
                }
            }
        }
    }
    if problems.len() > before {
        return None;
    }
    Some(Row {
        label: label?,
        text,
        features,
    })
}

/// Checks a valid row against `rules` (the per-row ones: allowed labels, text length, required
/// fields), pushing what it breaks to `problems`. The count rules (`minRows`, `minRowsPerLabel`) apply
/// to the whole file, after the pass.
pub(super) fn check_rules(
    cells: &impl Cells,
    row: &Row<'_>,
    rules: &ValidationRules,
    names: &FieldNames,
    problems: &mut Vec<String>,
) {
    if let Some(allowed) = &rules.allowed_labels
        && !allowed.contains(&row.label)
    {
        problems.push(format!(
            "label {:?} is not one of allowedLabels ({})",
            abbreviate(&row.label, 100),
            abbreviate(&allowed.join(", "), 200)
        ));
    }
    if let (Some(max), Some(text)) = (rules.max_text_length, row.text) {
        let chars = text.chars().count() as u64;
        if chars > max {
            problems.push(format!(
                "field {:?} is {chars} characters, more than maxTextLength {max}",
                names.text
            ));
        }
    }
    for (j, name) in rules.required_fields.iter().enumerate() {
        let present = match cells.required(j) {
            Cell::Missing | Cell::Null => false,
            Cell::Str(s) => !s.trim().is_empty(),
            _ => true,
        };
        if !present {
            problems.push(format!(
                "field {name:?} is missing or blank (requiredFields)"
            ));
        }
    }
}

/// A label cell as validation reads it: a trimmed non-blank string, a number or a boolean.
fn label_text(cell: &Cell<'_>) -> Option<String> {
    match cell {
        Cell::Str(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Cell::Num(n) => Some(format_number(*n)),
        Cell::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The label of a row read as a JSON object (JSONL, or a CSV or Parquet row as rewriting reads it),
/// as validation reads it; `None` when it has none it could read.
pub fn row_label(
    object: &serde_json::Map<String, serde_json::Value>,
    names: &FieldNames,
) -> Option<String> {
    label_text(&Cell::from_json(object.get(&names.label)))
}

/// Integral numbers as labels read `1`, not `1.0`.
fn format_number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        n.to_string()
    }
}
