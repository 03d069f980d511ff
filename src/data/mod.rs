//! Dataset files: parsing JSONL and CSV, validation with errors that name the line and the problem,
//! label statistics, and loading examples for training.
//!
//! One streaming pass does all of it ([`scan`]): validation keeps only counts and the first errors, so a
//! large file is checked in constant memory; loading keeps the examples.
//!
//! Limits: a text is at most [`MAX_TEXT_CHARS`] characters; a file has at most [`MAX_LABELS`] distinct
//! labels and [`MAX_FEATURES`] feature columns; at most [`MAX_REPORTED_ERRORS`] errors are listed (the
//! count covers all of them).

use std::collections::BTreeMap;
use std::io::BufRead;

use crate::domain::{DatasetFormat, DatasetKind, DatasetSummary, RowError, TrainData};

pub const MAX_TEXT_CHARS: usize = 100_000;
pub const MAX_LABELS: usize = 1_000;
pub const MAX_FEATURES: usize = 10_000;
pub const MAX_REPORTED_ERRORS: usize = 100;

/// Which fields hold the text and the label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldNames {
    pub text: String,
    pub label: String,
}

impl Default for FieldNames {
    fn default() -> Self {
        Self {
            text: "text".into(),
            label: "label".into(),
        }
    }
}

/// What one pass over a file found: the summary a dataset is stored with and, when loading, the examples.
#[derive(Debug, Clone, Default)]
pub struct Scan {
    pub summary: DatasetSummary,
    /// Filled only when loading.
    texts: Vec<String>,
    rows: Vec<Vec<f32>>,
    row_labels: Vec<String>,
}

impl Scan {
    pub fn is_valid(&self) -> bool {
        self.summary.is_valid()
    }

    fn error(&mut self, line: Option<u64>, message: impl Into<String>) {
        self.summary.error_count += 1;
        if self.summary.errors.len() < MAX_REPORTED_ERRORS {
            self.summary.errors.push(RowError {
                line,
                message: message.into(),
            });
        }
    }

    /// The examples for training, labels indexed in sorted order, and the label names.
    pub fn into_train_data(self) -> (TrainData, Vec<String>) {
        let names: Vec<String> = self.summary.labels.keys().cloned().collect();
        let index: BTreeMap<&str, u32> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i as u32))
            .collect();
        let labels = self.row_labels.iter().map(|l| index[l.as_str()]).collect();
        let data = match self.summary.kind {
            Some(DatasetKind::Tabular) => TrainData::Tabular {
                feature_names: self.summary.features,
                features: self.rows,
                labels,
            },
            _ => TrainData::Text {
                texts: self.texts,
                labels,
            },
        };
        (data, names)
    }
}

/// One cell of a record, whatever the format.
enum Cell<'a> {
    Missing,
    Null,
    Str(&'a str),
    Num(f64),
    Bool(bool),
    Other,
}

impl<'a> Cell<'a> {
    fn from_json(value: Option<&'a serde_json::Value>) -> Self {
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

/// Reads a whole file once. With `keep`, the examples are kept for [`Scan::into_train_data`].
pub fn scan(reader: impl BufRead, format: DatasetFormat, names: &FieldNames, keep: bool) -> Scan {
    let mut scan = Scan::default();
    match format {
        DatasetFormat::Jsonl => scan_jsonl(reader, names, keep, &mut scan),
        DatasetFormat::Csv => scan_csv(reader, names, keep, &mut scan),
    }
    if scan.summary.row_count == 0 && scan.summary.error_count == 0 {
        scan.error(None, "the file holds no rows");
    }
    if scan.summary.row_count > 0 && scan.summary.error_count == 0 && scan.summary.labels.len() < 2
    {
        let only = scan
            .summary
            .labels
            .keys()
            .next()
            .cloned()
            .unwrap_or_default();
        scan.error(
            None,
            format!("every row has the label {only:?}; classification needs at least 2 labels"),
        );
    }
    scan
}

fn scan_jsonl(mut reader: impl BufRead, names: &FieldNames, keep: bool, scan: &mut Scan) {
    let mut line = String::new();
    let mut number = 0u64;
    loop {
        line.clear();
        number += 1;
        match reader.read_line(&mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                scan.error(Some(number), format!("cannot be read: {e}"));
                break;
            }
        }
        if line.trim().is_empty() {
            continue;
        }
        let object = match serde_json::from_str::<serde_json::Value>(&line) {
            Ok(serde_json::Value::Object(map)) => map,
            Ok(_) => {
                scan.error(Some(number), "is not a JSON object");
                continue;
            }
            Err(e) => {
                scan.error(Some(number), format!("is not valid JSON: {e}"));
                continue;
            }
        };
        if scan.summary.kind.is_none() {
            let kind = if object.contains_key(&names.text) {
                DatasetKind::Text
            } else {
                DatasetKind::Tabular
            };
            if kind == DatasetKind::Tabular {
                scan.summary.features = object
                    .keys()
                    .filter(|k| **k != names.label)
                    .cloned()
                    .collect();
            }
            scan.summary.kind = Some(kind);
        }
        let get = |name: &str| Cell::from_json(object.get(name));
        record(scan, number, names, keep, get);
    }
}

fn scan_csv(reader: impl BufRead, names: &FieldNames, keep: bool, scan: &mut Scan) {
    let mut csv = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_reader(reader);
    let headers = match csv.headers() {
        Ok(h) => h.clone(),
        Err(e) => {
            scan.error(Some(1), format!("the header cannot be read: {e}"));
            return;
        }
    };
    if headers.is_empty() {
        return;
    }
    let columns: Vec<String> = headers.iter().map(|h| h.trim().to_string()).collect();
    if !columns.contains(&names.label) {
        scan.error(
            Some(1),
            format!(
                "there is no column {:?} (columns: {})",
                names.label,
                columns.join(", ")
            ),
        );
        return;
    }
    let kind = if columns.contains(&names.text) {
        DatasetKind::Text
    } else {
        DatasetKind::Tabular
    };
    scan.summary.kind = Some(kind);
    if kind == DatasetKind::Tabular {
        scan.summary.features = columns
            .iter()
            .filter(|c| **c != names.label)
            .cloned()
            .collect();
    }
    let mut row = csv::StringRecord::new();
    loop {
        match csv.read_record(&mut row) {
            Ok(false) => break,
            Ok(true) => {
                let number = row.position().map(|p| p.line()).unwrap_or(0);
                let get = |name: &str| match columns.iter().position(|c| c == name) {
                    None => Cell::Missing,
                    Some(i) => match row.get(i) {
                        None => Cell::Missing,
                        Some(s) => Cell::Str(s),
                    },
                };
                record(scan, number, names, keep, get);
            }
            Err(e) => {
                let line = e.position().map(|p| p.line());
                scan.error(line, format!("is not valid CSV: {e}"));
                if !matches!(
                    e.kind(),
                    csv::ErrorKind::UnequalLengths { .. } | csv::ErrorKind::Utf8 { .. }
                ) {
                    break;
                }
            }
        }
    }
}

/// Checks one record and, when it is good, counts (and with `keep`, keeps) it.
fn record<'a>(
    scan: &mut Scan,
    line: u64,
    names: &FieldNames,
    keep: bool,
    get: impl Fn(&str) -> Cell<'a>,
) {
    let errors_before = scan.summary.error_count;
    let label = match get(&names.label) {
        Cell::Str(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Cell::Num(n) => Some(format_number(n)),
        Cell::Bool(b) => Some(b.to_string()),
        Cell::Str(_) => {
            scan.error(Some(line), format!("field {:?} is empty", names.label));
            None
        }
        other => {
            scan.error(
                Some(line),
                format!(
                    "field {:?} is {}; expected a string or a number",
                    names.label,
                    other.describe()
                ),
            );
            None
        }
    };
    let mut text = None;
    let mut features = Vec::new();
    match scan.summary.kind {
        Some(DatasetKind::Text) => match get(&names.text) {
            Cell::Str(s) if s.trim().is_empty() => {
                scan.error(Some(line), format!("field {:?} is empty", names.text))
            }
            Cell::Str(s) if s.chars().count() > MAX_TEXT_CHARS => scan.error(
                Some(line),
                format!(
                    "field {:?} is longer than {MAX_TEXT_CHARS} characters",
                    names.text
                ),
            ),
            Cell::Str(s) => text = Some(s.to_string()),
            other => scan.error(
                Some(line),
                format!(
                    "field {:?} is {}; expected a string",
                    names.text,
                    other.describe()
                ),
            ),
        },
        Some(DatasetKind::Tabular) => {
            if scan.summary.features.is_empty() {
                scan.error(
                    Some(line),
                    format!("has no feature columns besides {:?}", names.label),
                );
            } else if scan.summary.features.len() > MAX_FEATURES {
                scan.error(
                    Some(line),
                    format!("has more than {MAX_FEATURES} feature columns"),
                );
            }
            let feature_names = scan.summary.features.clone();
            for name in &feature_names {
                match get(name) {
                    Cell::Num(v) if v.is_finite() => features.push(v as f32),
                    Cell::Str(s) => match s.trim().parse::<f64>() {
                        Ok(v) if v.is_finite() => features.push(v as f32),
                        _ => scan.error(
                            Some(line),
                            format!("feature {name:?} is not a number: {s:?}"),
                        ),
                    },
                    other => scan.error(
                        Some(line),
                        format!(
                            "feature {name:?} is {}; expected a number",
                            other.describe()
                        ),
                    ),
                }
            }
        }
        None => {}
    }
    if scan.summary.error_count > errors_before {
        return;
    }
    let Some(label) = label else { return };
    if !scan.summary.labels.contains_key(&label) && scan.summary.labels.len() >= MAX_LABELS {
        scan.error(
            Some(line),
            format!(
                "label {label:?} would be label number {}; at most {MAX_LABELS} are allowed",
                MAX_LABELS + 1
            ),
        );
        return;
    }
    scan.summary.row_count += 1;
    *scan.summary.labels.entry(label.clone()).or_default() += 1;
    if keep {
        scan.row_labels.push(label);
        match text {
            Some(t) => scan.texts.push(t),
            None => scan.rows.push(features),
        }
    }
}

/// Integral numbers as labels read `1`, not `1.0`.
fn format_number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        n.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jsonl(text: &str) -> Scan {
        scan(
            text.as_bytes(),
            DatasetFormat::Jsonl,
            &FieldNames::default(),
            true,
        )
    }

    #[test]
    fn a_good_text_file_is_counted_by_label() {
        let s = jsonl(
            "{\"text\":\"hi\",\"label\":\"benign\"}\n\n{\"text\":\"ignore all\",\"label\":\"injection\"}\n",
        );
        assert!(s.is_valid(), "{:?}", s.summary.errors);
        assert_eq!(s.summary.kind, Some(DatasetKind::Text));
        assert_eq!(s.summary.row_count, 2);
        assert_eq!(s.summary.labels.get("benign"), Some(&1));
        let (data, names) = s.into_train_data();
        assert_eq!(names, vec!["benign", "injection"]);
        assert_eq!(data.labels(), &[0, 1]);
    }

    #[test]
    fn errors_name_the_line_and_the_problem() {
        let s = jsonl(
            "{\"text\":\"a\",\"label\":\"x\"}\nnot json\n{\"text\":\"\",\"label\":\"y\"}\n{\"label\":\"y\",\"text\":3}\n",
        );
        let lines: Vec<_> = s.summary.errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![Some(2), Some(3), Some(4)]);
        assert!(s.summary.errors[0].message.contains("not valid JSON"));
        assert!(s.summary.errors[1].message.contains("\"text\" is empty"));
        assert!(s.summary.errors[2].message.contains("expected a string"));
    }

    #[test]
    fn csv_features_must_be_numeric() {
        let csv = "a,b,label\n1,2,x\n3,oops,y\n";
        let s = scan(
            csv.as_bytes(),
            DatasetFormat::Csv,
            &FieldNames::default(),
            false,
        );
        assert_eq!(s.summary.kind, Some(DatasetKind::Tabular));
        assert_eq!(s.summary.features, vec!["a", "b"]);
        assert_eq!(s.summary.errors.len(), 1);
        assert_eq!(s.summary.errors[0].line, Some(3));
        assert!(
            s.summary.errors[0]
                .message
                .contains("\"b\" is not a number"),
            "{:?}",
            s.summary.errors
        );
    }

    #[test]
    fn a_single_label_file_is_refused() {
        let s = jsonl("{\"text\":\"a\",\"label\":\"x\"}\n{\"text\":\"b\",\"label\":\"x\"}\n");
        assert!(!s.is_valid());
        assert_eq!(s.summary.errors[0].line, None);
    }
}
