//! The one pass over a file: validation, statistics and, when asked, the index of valid rows.

use std::collections::HashMap;
use std::io::BufRead;

use super::lines::{Line, LineLimit, LineTooLong, read_line};
use super::record::{Cells, CsvCells, CsvLayout, JsonCells, check};
use super::rows::{IndexedRows, Layout, RowSource};
use super::{MAX_LABELS, MAX_REPORTED_ERRORS, ReadOptions};
use crate::domain::{DatasetFormat, DatasetKind, DatasetSummary, ExampleKind, RowError};

/// What one pass over a file found.
#[derive(Debug, Default)]
pub struct Scan {
    pub summary: DatasetSummary,
    /// Built only by [`index`].
    rows: Option<RowIndex>,
    csv: Option<CsvLayout>,
}

/// Where each valid row is, and its label.
#[derive(Debug, Default)]
struct RowIndex {
    /// Byte offset and length of each valid row.
    spans: Vec<(u64, u32)>,
    /// Each row's label, numbered in the order labels were first seen.
    labels: Vec<u32>,
    seen: HashMap<String, u32>,
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

    /// Counts one valid row and, when indexing, records where it is.
    fn accept(&mut self, line: u64, label: String, offset: u64, len: usize) {
        if !self.summary.labels.contains_key(&label) && self.summary.labels.len() >= MAX_LABELS {
            self.error(
                Some(line),
                format!(
                    "label {label:?} would be label number {}; at most {MAX_LABELS} are allowed",
                    MAX_LABELS + 1
                ),
            );
            return;
        }
        self.summary.row_count += 1;
        if let Some(index) = &mut self.rows {
            let next = index.seen.len() as u32;
            let id = *index.seen.entry(label.clone()).or_insert(next);
            index.labels.push(id);
            index.spans.push((offset, len as u32));
        }
        *self.summary.labels.entry(label).or_default() += 1;
    }
}

/// Reads a whole file once and reports what is wrong with it, by line, in constant memory.
pub fn scan(reader: impl BufRead, options: &ReadOptions) -> Scan {
    run(reader, options, Scan::default())
}

/// Validates a file as [`scan`] does and indexes its valid rows; a file with any problem is refused with
/// what was found. The rows are read back from `source`, which must hold the same bytes.
pub fn index(
    reader: impl BufRead,
    options: &ReadOptions,
    source: RowSource,
) -> Result<IndexedRows, DatasetSummary> {
    let scan = run(
        reader,
        options,
        Scan {
            rows: Some(RowIndex::default()),
            ..Scan::default()
        },
    );
    if !scan.is_valid() {
        return Err(scan.summary);
    }
    let index = scan.rows.unwrap_or_default();
    // Label numbers follow the sorted label names.
    let names: Vec<String> = scan.summary.labels.keys().cloned().collect();
    let sorted: HashMap<&str, u32> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i as u32))
        .collect();
    let mut renumber = vec![0u32; index.seen.len()];
    for (name, first_seen) in &index.seen {
        renumber[*first_seen as usize] = sorted[name.as_str()];
    }
    let labels = index.labels.iter().map(|&l| renumber[l as usize]).collect();
    let kind = match scan.summary.kind {
        Some(DatasetKind::Tabular) => ExampleKind::Tabular {
            feature_names: scan.summary.features.clone(),
        },
        _ => ExampleKind::Text,
    };
    Ok(IndexedRows::new(
        source,
        Layout {
            options: options.clone(),
            kind,
            csv: scan.csv,
        },
        index.spans,
        labels,
        names,
    ))
}

fn run(reader: impl BufRead, options: &ReadOptions, mut scan: Scan) -> Scan {
    match options.format {
        DatasetFormat::Jsonl => scan_jsonl(reader, options, &mut scan),
        DatasetFormat::Csv => scan_csv(reader, options, &mut scan),
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

/// Checks `cells` and counts the row, or records its problems against `line`. `features` are the
/// summary's feature names, taken out by the caller while `cells` may borrow them.
fn record(
    scan: &mut Scan,
    cells: &impl Cells,
    options: &ReadOptions,
    line: u64,
    (offset, len): (u64, usize),
    features: &[String],
) {
    let kind = scan.summary.kind.unwrap_or(DatasetKind::Text);
    let mut problems = Vec::new();
    let label = check(cells, kind, &options.names, features, &mut problems).map(|r| r.label);
    for problem in problems {
        scan.error(Some(line), problem);
    }
    if let Some(label) = label {
        scan.accept(line, label, offset, len);
    }
}

fn scan_jsonl(mut reader: impl BufRead, options: &ReadOptions, scan: &mut Scan) {
    let names = &options.names;
    let mut line = Vec::new();
    let mut number = 0u64;
    let mut offset = 0u64;
    loop {
        number += 1;
        let start = offset;
        let consumed = match read_line(&mut reader, &mut line, options.max_line_bytes) {
            Ok(Line::End) => break,
            Ok(Line::Text { consumed }) => consumed,
            Ok(Line::TooLong { consumed }) => {
                offset += consumed as u64;
                scan.error(
                    Some(number),
                    format!(
                        "is longer than {} bytes (KILN_MAX_LINE_BYTES)",
                        options.max_line_bytes
                    ),
                );
                continue;
            }
            Err(e) => {
                scan.error(Some(number), format!("cannot be read: {e}"));
                break;
            }
        };
        offset += consumed as u64;
        if line.trim_ascii().is_empty() {
            continue;
        }
        let object = match serde_json::from_slice::<serde_json::Value>(&line) {
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
                let words = object
                    .iter()
                    .find(|(k, v)| **k != names.label && v.as_str().is_some_and(|s| !is_number(s)));
                if let Some((likely, _)) = words {
                    let fields: Vec<&str> = object.keys().map(String::as_str).collect();
                    scan.error(Some(number), no_text_field(names, &fields, likely));
                    return;
                }
                scan.summary.features = object
                    .keys()
                    .filter(|k| **k != names.label)
                    .cloned()
                    .collect();
            }
            scan.summary.kind = Some(kind);
        }
        let features = std::mem::take(&mut scan.summary.features);
        let cells = JsonCells {
            object: &object,
            names,
            features: &features,
        };
        // The row's span excludes its line break.
        let span = (start, line.len());
        record(scan, &cells, options, number, span, &features);
        scan.summary.features = features;
    }
}

fn scan_csv(reader: impl BufRead, options: &ReadOptions, scan: &mut Scan) {
    let names = &options.names;
    let mut csv = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_reader(LineLimit::new(reader, options.max_line_bytes));
    let headers = match csv.headers() {
        Ok(h) => h.clone(),
        Err(e) => {
            scan.error(
                Some(1),
                format!("the header cannot be read: {}", csv_problem(&e)),
            );
            return;
        }
    };
    if headers.is_empty() {
        return;
    }
    let columns: Vec<&str> = headers.iter().map(str::trim).collect();
    let position = |name: &str| columns.iter().position(|c| *c == name);
    let Some(label) = position(&names.label) else {
        scan.error(
            Some(1),
            format!(
                "there is no column {:?} (columns: {})",
                names.label,
                columns.join(", ")
            ),
        );
        return;
    };
    let text = position(&names.text);
    let layout = CsvLayout {
        label,
        text,
        features: match text {
            Some(_) => Vec::new(),
            None => (0..columns.len()).filter(|&i| i != label).collect(),
        },
    };
    scan.summary.kind = Some(if text.is_some() {
        DatasetKind::Text
    } else {
        DatasetKind::Tabular
    });
    scan.summary.features = layout
        .features
        .iter()
        .map(|&i| columns[i].to_string())
        .collect();
    let mut row = csv::StringRecord::new();
    let mut first = true;
    loop {
        match csv.read_record(&mut row) {
            Ok(false) => break,
            Ok(true) => {
                if std::mem::take(&mut first) && text.is_none() {
                    let words = layout
                        .features
                        .iter()
                        .find(|&&i| row.get(i).is_some_and(|s| !is_number(s)));
                    if let Some(&likely) = words {
                        let line = row.position().map_or(2, csv::Position::line);
                        scan.error(Some(line), no_text_field(names, &columns, columns[likely]));
                        break;
                    }
                }
                let position = row.position().cloned().unwrap_or_else(csv::Position::new);
                // The reader now stands where the next record starts.
                let len = (csv.position().byte() - position.byte()) as usize;
                let cells = CsvCells {
                    record: &row,
                    layout: &layout,
                };
                let features = std::mem::take(&mut scan.summary.features);
                let span = (position.byte(), len);
                record(scan, &cells, options, position.line(), span, &features);
                scan.summary.features = features;
            }
            Err(e) => {
                let line = e
                    .position()
                    .map(|p| p.line())
                    .or_else(|| too_long(&e).map(|t| t.line));
                scan.error(line, format!("is not valid CSV: {}", csv_problem(&e)));
                if !matches!(
                    e.kind(),
                    csv::ErrorKind::UnequalLengths { .. } | csv::ErrorKind::Utf8 { .. }
                ) {
                    break;
                }
            }
        }
    }
    scan.csv = Some(layout);
}

/// Whether a cell reads as a number (an empty one counts: it is reported as missing later).
fn is_number(cell: &str) -> bool {
    let cell = cell.trim();
    cell.is_empty() || cell.parse::<f64>().is_ok()
}

/// What to say when rows without the text field hold words: a text dataset whose text is under
/// another name, most likely, not a table of numbers.
fn no_text_field(names: &super::FieldNames, fields: &[&str], likely: &str) -> String {
    let fields: Vec<String> = fields.iter().map(|f| format!("{f:?}")).collect();
    format!(
        "there is no text field {:?}, and field {likely:?} holds words, not numbers (fields: {}); if \
         the text is in {likely:?}, name it: textField: {likely:?} on upload (kiln train: \
         --text-field {likely})",
        names.text,
        crate::domain::abbreviate(&fields.join(", "), 300)
    )
}

fn too_long(e: &csv::Error) -> Option<&LineTooLong> {
    match e.kind() {
        csv::ErrorKind::Io(io) => io.get_ref().and_then(|inner| inner.downcast_ref()),
        _ => None,
    }
}

/// A CSV error in the user's terms: a line over the limit says so rather than "I/O error".
fn csv_problem(e: &csv::Error) -> String {
    match too_long(e) {
        Some(t) => t.to_string(),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::FieldNames;
    use crate::domain::Examples;

    fn options(format: DatasetFormat) -> ReadOptions {
        ReadOptions::new(format, FieldNames::default())
    }

    fn jsonl(text: &str) -> Scan {
        scan(text.as_bytes(), &options(DatasetFormat::Jsonl))
    }

    fn indexed(text: &str, format: DatasetFormat) -> IndexedRows {
        index(
            text.as_bytes(),
            &options(format),
            RowSource::Bytes(text.as_bytes().to_vec()),
        )
        .unwrap()
    }

    #[test]
    fn a_good_text_file_is_counted_by_label_and_read_back_by_row() {
        let file = "{\"text\":\"ignore all\",\"label\":\"injection\"}\n\n{\"text\":\"hi\",\"label\":\"benign\"}\n";
        let s = jsonl(file);
        assert!(s.is_valid(), "{:?}", s.summary.errors);
        assert_eq!(s.summary.kind, Some(DatasetKind::Text));
        assert_eq!(s.summary.row_count, 2);
        assert_eq!(s.summary.labels.get("benign"), Some(&1));
        let rows = indexed(file, DatasetFormat::Jsonl);
        assert_eq!(rows.label_names(), ["benign", "injection"]);
        assert_eq!(rows.labels(), &[1, 0], "labels follow the sorted names");
        assert_eq!(rows.text(0).unwrap(), "ignore all");
        assert_eq!(rows.text(1).unwrap(), "hi");
    }

    #[test]
    fn csv_rows_are_read_back_by_row_including_quoted_line_breaks() {
        let file = "x,label,y\n1,a,2\n\"3\",b,4\n5,\"a\",\"6\"";
        let rows = indexed(file, DatasetFormat::Csv);
        assert_eq!(
            rows.kind(),
            &ExampleKind::Tabular {
                feature_names: vec!["x".into(), "y".into()]
            }
        );
        assert_eq!(rows.features(1).unwrap(), [3.0, 4.0]);
        assert_eq!(rows.features(2).unwrap(), [5.0, 6.0]);
        assert_eq!(rows.labels(), &[0, 1, 0]);
        let text = "text,label\n\"two\nlines\",a\nplain,b\n";
        let rows = indexed(text, DatasetFormat::Csv);
        assert_eq!(rows.text(0).unwrap(), "two\nlines");
        assert_eq!(rows.text(1).unwrap(), "plain");
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
    fn csv_features_must_be_finite_numbers() {
        let csv = "a,b,label\n1,2,x\n3,oops,y\n1e300,1,z\n";
        let s = scan(csv.as_bytes(), &options(DatasetFormat::Csv));
        assert_eq!(s.summary.kind, Some(DatasetKind::Tabular));
        assert_eq!(s.summary.features, vec!["a", "b"]);
        assert_eq!(s.summary.errors.len(), 2);
        assert_eq!(s.summary.errors[0].line, Some(3));
        assert!(
            s.summary.errors[0]
                .message
                .contains("\"b\" is not a number"),
            "{:?}",
            s.summary.errors
        );
        assert_eq!(s.summary.errors[1].line, Some(4));
        assert!(
            s.summary.errors[1]
                .message
                .contains("outside the range of a 32-bit float"),
            "{:?}",
            s.summary.errors
        );
    }

    #[test]
    fn a_line_longer_than_the_limit_is_named_and_not_held() {
        let mut options = options(DatasetFormat::Jsonl);
        options.max_line_bytes = 64;
        let file = format!(
            "{{\"text\":\"a\",\"label\":\"x\"}}\n{{\"text\":\"{}\",\"label\":\"y\"}}\n{{\"text\":\"b\",\"label\":\"y\"}}\n",
            "z".repeat(200)
        );
        let s = scan(file.as_bytes(), &options);
        assert_eq!(s.summary.error_count, 1);
        assert_eq!(s.summary.errors[0].line, Some(2));
        assert!(s.summary.errors[0].message.contains("longer than 64 bytes"));
        assert_eq!(s.summary.row_count, 2);
        let mut options = options.clone();
        options.format = DatasetFormat::Csv;
        let csv = format!("text,label\na,x\n{},y\n", "z".repeat(200));
        let s = scan(csv.as_bytes(), &options);
        assert_eq!(s.summary.errors[0].line, Some(3), "{:?}", s.summary.errors);
        assert!(
            s.summary.errors[0]
                .message
                .contains("line 3 is longer than 64 bytes"),
            "{:?}",
            s.summary.errors
        );
    }

    #[test]
    fn words_where_a_table_wants_numbers_point_to_the_text_field_once() {
        let rows: String = (0..50)
            .map(|i| format!("{{\"sentence\":\"hello there {i}\",\"label\":\"x\"}}\n"))
            .collect();
        let s = jsonl(&rows);
        assert_eq!(s.summary.error_count, 1, "{:?}", s.summary.errors);
        let message = &s.summary.errors[0].message;
        assert!(
            message.contains("there is no text field \"text\", and field \"sentence\" holds words"),
            "{message}"
        );
        assert!(message.contains("textField: \"sentence\""), "{message}");
        assert!(message.contains("--text-field sentence"), "{message}");
        let csv = "sentence,label\nhello there,x\nbye,y\n";
        let s = scan(csv.as_bytes(), &options(DatasetFormat::Csv));
        assert_eq!(s.summary.error_count, 1, "{:?}", s.summary.errors);
        assert_eq!(s.summary.errors[0].line, Some(2));
        assert!(
            s.summary.errors[0]
                .message
                .contains("textField: \"sentence\"")
        );
        // Numbers written as strings are a table still.
        let s = jsonl("{\"a\":\"1.5\",\"label\":\"x\"}\n{\"a\":\"2\",\"label\":\"y\"}\n");
        assert!(s.is_valid(), "{:?}", s.summary.errors);
    }

    #[test]
    fn a_single_label_file_is_refused() {
        let s = jsonl("{\"text\":\"a\",\"label\":\"x\"}\n{\"text\":\"b\",\"label\":\"x\"}\n");
        assert!(!s.is_valid());
        assert_eq!(s.summary.errors[0].line, None);
    }

    #[test]
    fn many_columns_are_checked_in_linear_time() {
        let columns: Vec<String> = (0..10_000).map(|i| format!("c{i}")).collect();
        let mut csv = format!("{},label\n", columns.join(","));
        let row = vec!["1"; 10_000].join(",");
        for i in 0..200 {
            csv.push_str(&format!("{row},{}\n", i % 2));
        }
        let mut options = options(DatasetFormat::Csv);
        options.max_line_bytes = 1 << 20;
        let started = std::time::Instant::now();
        let s = scan(csv.as_bytes(), &options);
        assert!(s.is_valid(), "{:?}", s.summary.errors);
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }
}
