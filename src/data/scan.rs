//! The one pass over a file: validation, statistics and, when asked, the index of valid rows.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, Write};
use std::path::Path;

use super::lines::{Line, LineLimit, LineTooLong, read_line};
use super::parquet::{self, Flow, Item, Object};
use super::pii::PiiCollector;
use super::record::{Cell, Cells, CsvCells, CsvLayout, JsonCells, check, check_rules};
use super::rows::{IndexedRows, Layout, RowSource};
use super::stats::Collector;
use super::{MAX_FEATURES, MAX_LABELS, MAX_REPORTED_ERRORS, ReadOptions, sniff};
use crate::domain::{
    DatasetFormat, DatasetKind, DatasetSummary, ExampleKind, RowError, abbreviate,
};

/// The most columns a file's layout lists.
pub const MAX_COLUMNS: usize = MAX_FEATURES + 2;

/// What one pass over a file found.
#[derive(Debug, Default)]
pub struct Scan {
    pub summary: DatasetSummary,
    /// Built only by [`index`].
    rows: Option<RowIndex>,
    csv: Option<CsvLayout>,
    /// The columns listed so far (JSONL rows may each have other keys).
    columns: HashSet<String>,
    /// Gather the statistics and the personal data found; only [`scan`] keeps them.
    stats: Option<Collector>,
    pii: Option<PiiCollector>,
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

    /// The keys of the distinct rows read (see `data::overlap`), when statistics were gathered.
    pub fn row_keys(&self) -> Option<Vec<u8>> {
        self.stats.as_ref().map(Collector::encoded_keys)
    }

    /// Counts one valid row and, when indexing, records where it is; false when the row is one label
    /// too many.
    fn accept(&mut self, line: u64, label: String, offset: u64, len: usize) -> bool {
        if !self.summary.labels.contains_key(&label) && self.summary.labels.len() >= MAX_LABELS {
            self.error(
                Some(line),
                format!(
                    "label {label:?} would be label number {}; at most {MAX_LABELS} are allowed",
                    MAX_LABELS + 1
                ),
            );
            return false;
        }
        self.summary.row_count += 1;
        if let Some(index) = &mut self.rows {
            let next = index.seen.len() as u32;
            let id = *index.seen.entry(label.clone()).or_insert(next);
            index.labels.push(id);
            index.spans.push((offset, len as u32));
        }
        *self.summary.labels.entry(label).or_default() += 1;
        true
    }

    /// Lists columns not seen before, up to [`MAX_COLUMNS`].
    fn note_columns<'a>(&mut self, names: impl Iterator<Item = &'a String>) {
        for name in names {
            if self.columns.len() >= MAX_COLUMNS {
                return;
            }
            if !self.columns.contains(name) {
                self.columns.insert(name.clone());
                self.summary.layout.columns.push(name.clone());
            }
        }
    }
}

/// Reads a whole file once and reports what is wrong with it, by line, in constant memory.
/// Statistics and the personal data in valid rows' texts are gathered in the same pass
/// (`summary.stats`, `summary.pii`, and [`Scan::row_keys`]).
pub fn scan(source: &RowSource, options: &ReadOptions) -> Scan {
    let mut scan = Scan {
        stats: Some(Collector::default()),
        pii: Some(PiiCollector::default()),
        ..Scan::default()
    };
    run(source, options, &mut scan, None);
    scan.summary.stats = scan
        .stats
        .as_ref()
        .map(|c| c.finish(&scan.summary.labels, &scan.summary.features));
    scan.summary.pii = scan.pii.as_ref().map(PiiCollector::finish);
    scan
}

/// Validates a file as [`scan`] does and indexes its valid rows; a file with any problem is refused with
/// what was found. Rows are read back from `source`; a Parquet file's rows are first written to
/// `scratch` as JSONL lines and read back from there (the caller removes it).
pub fn index(
    source: RowSource,
    options: &ReadOptions,
    scratch: &Path,
) -> Result<IndexedRows, Box<DatasetSummary>> {
    let mut scan = Scan {
        rows: Some(RowIndex::default()),
        ..Scan::default()
    };
    let (source, options) = if options.format == DatasetFormat::Parquet {
        let mut sink = match Sink::create(scratch) {
            Ok(sink) => sink,
            Err(e) => {
                scan.error(
                    None,
                    format!("cannot be written out at {}: {e}", scratch.display()),
                );
                return Err(Box::new(scan.summary));
            }
        };
        run(&source, options, &mut scan, Some(&mut sink));
        let file = match sink.finish() {
            Ok(file) => file,
            Err(e) => {
                scan.error(None, format!("cannot be written out: {e}"));
                return Err(Box::new(scan.summary));
            }
        };
        let as_lines = ReadOptions {
            format: DatasetFormat::Jsonl,
            ..options.clone()
        };
        (RowSource::File(file), as_lines)
    } else {
        run(&source, options, &mut scan, None);
        (source, options.clone())
    };
    if !scan.is_valid() {
        return Err(Box::new(scan.summary));
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
            options,
            kind,
            csv: scan.csv,
        },
        index.spans,
        labels,
        names,
    ))
}

/// Where a Parquet file's rows are written as JSONL lines while it is indexed.
struct Sink {
    out: std::io::BufWriter<std::fs::File>,
    offset: u64,
    line: Vec<u8>,
}

impl Sink {
    fn create(path: &Path) -> std::io::Result<Self> {
        let file = std::fs::File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        Ok(Self {
            out: std::io::BufWriter::with_capacity(256 * 1024, file),
            offset: 0,
            line: Vec::new(),
        })
    }

    /// Writes one row as a line; answers where it is.
    fn write(&mut self, object: &Object) -> std::io::Result<(u64, usize)> {
        self.line.clear();
        serde_json::to_writer(&mut self.line, object)?;
        self.line.push(b'\n');
        self.out.write_all(&self.line)?;
        let at = (self.offset, self.line.len() - 1);
        self.offset += self.line.len() as u64;
        Ok(at)
    }

    fn finish(self) -> std::io::Result<std::fs::File> {
        self.out.into_inner().map_err(|e| e.into_error())
    }
}

fn run(source: &RowSource, options: &ReadOptions, scan: &mut Scan, sink: Option<&mut Sink>) {
    match options.format {
        DatasetFormat::Parquet => scan_parquet(source, options, scan, sink),
        text_format => match source.reader() {
            Ok(reader) if text_format == DatasetFormat::Jsonl => scan_jsonl(reader, options, scan),
            Ok(reader) => scan_csv(reader, options, scan),
            Err(e) => scan.error(None, format!("cannot be read: {e}")),
        },
    }
    finish(scan, options);
}

/// The checks of the whole file, after its rows: that it has rows, the count rules, and two labels.
fn finish(scan: &mut Scan, options: &ReadOptions) {
    let rules = &options.rules;
    let rows = scan.summary.row_count;
    if rows == 0 && scan.summary.error_count == 0 {
        scan.error(None, "the file holds no rows");
    }
    if let Some(min) = rules.min_rows
        && rows < min
    {
        scan.error(None, format!("has {rows} valid rows; minRows is {min}"));
    }
    if let Some(min) = rules.min_rows_per_label {
        // Allowed labels that never occur have 0 rows.
        let mut counts: Vec<(String, u64)> = scan
            .summary
            .labels
            .iter()
            .map(|(l, c)| (l.clone(), *c))
            .collect();
        for allowed in rules.allowed_labels.iter().flatten() {
            if !scan.summary.labels.contains_key(allowed) {
                counts.push((allowed.clone(), 0));
            }
        }
        for (label, count) in counts {
            if count < min {
                scan.error(
                    None,
                    format!(
                        "label {:?} has {count} rows; minRowsPerLabel is {min}",
                        abbreviate(&label, 100)
                    ),
                );
            }
        }
    }
    if rows > 0 && scan.summary.error_count == 0 && scan.summary.labels.len() < 2 {
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
}

/// Checks `cells` and the rules' per-row checks and counts the row, or records its problems against
/// `line`. `features` are the summary's feature names, taken out by the caller while `cells` may
/// borrow them.
fn record(
    scan: &mut Scan,
    cells: &impl Cells,
    options: &ReadOptions,
    line: u64,
    (offset, len): (u64, usize),
    features: &[String],
) {
    let kind = scan.summary.kind.unwrap_or(DatasetKind::Text);
    if let Some(stats) = &mut scan.stats {
        match kind {
            DatasetKind::Text => {
                if matches!(cells.text(), Cell::Null)
                    || matches!(cells.text(), Cell::Str(s) if s.trim().is_empty())
                {
                    stats.empty_text();
                }
            }
            DatasetKind::Tabular => {
                for j in 0..features.len() {
                    let missing = match cells.feature(j) {
                        Cell::Missing | Cell::Null => true,
                        Cell::Str(s) => s.trim().is_empty(),
                        _ => false,
                    };
                    if missing {
                        stats.missing_feature(j, features.len());
                    }
                }
            }
        }
    }
    let mut problems = Vec::new();
    let row = check(cells, kind, &options.names, features, &mut problems);
    if let Some(row) = &row {
        check_rules(cells, row, &options.rules, &options.names, &mut problems);
    }
    let broke = !problems.is_empty();
    for problem in problems {
        scan.error(Some(line), problem);
    }
    let Some(row) = row.filter(|_| !broke) else {
        return;
    };
    if !scan.accept(line, row.label.clone(), offset, len) {
        return;
    }
    if let Some(stats) = &mut scan.stats {
        stats.row(line, &row.label, row.text, &row.features);
    }
    if let (Some(pii), Some(text)) = (&mut scan.pii, row.text) {
        pii.text(line, text);
    }
}

/// Checks one JSON object: a JSONL line or a Parquet row. The first one decides the dataset's kind;
/// [`Flow::Stop`] when the file cannot be a dataset under its mapping.
fn json_row(
    scan: &mut Scan,
    object: &Object,
    options: &ReadOptions,
    number: u64,
    span: (u64, usize),
) -> Flow {
    let names = &options.names;
    scan.note_columns(object.keys());
    if scan.summary.kind.is_none() {
        let kind = match &names.features {
            Some(_) => DatasetKind::Tabular,
            None if object.contains_key(&names.text) => DatasetKind::Text,
            None => DatasetKind::Tabular,
        };
        if kind == DatasetKind::Tabular {
            scan.summary.features = match &names.features {
                Some(mapped) => mapped.clone(),
                None => {
                    let words = object.iter().find(|(k, v)| {
                        **k != names.label && v.as_str().is_some_and(|s| !is_number(s))
                    });
                    if let Some((likely, _)) = words {
                        let fields: Vec<&str> = object.keys().map(String::as_str).collect();
                        scan.error(Some(number), no_text_field(names, &fields, likely));
                        return Flow::Stop;
                    }
                    object
                        .keys()
                        .filter(|k| **k != names.label)
                        .cloned()
                        .collect()
                }
            };
        }
        scan.summary.kind = Some(kind);
    }
    let features = std::mem::take(&mut scan.summary.features);
    let cells = JsonCells {
        object,
        names,
        features: &features,
        required: &options.rules.required_fields,
    };
    record(scan, &cells, options, number, span, &features);
    scan.summary.features = features;
    Flow::Next
}

/// The UTF-8 byte order mark some tools write at a file's start.
const BOM: &[u8] = b"\xEF\xBB\xBF";

fn scan_jsonl(mut reader: impl BufRead, options: &ReadOptions, scan: &mut Scan) {
    let mut line = Vec::new();
    let mut number = 0u64;
    let mut offset = 0u64;
    if reader.fill_buf().is_ok_and(|b| b.starts_with(BOM)) {
        reader.consume(BOM.len());
        offset = BOM.len() as u64;
    }
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
        // The row's span excludes its line break.
        if json_row(scan, &object, options, number, (start, line.len())) == Flow::Stop {
            return;
        }
    }
}

/// A Parquet file's rows, numbered from 1, checked as JSON objects; written to `sink` when indexing.
fn scan_parquet(
    source: &RowSource,
    options: &ReadOptions,
    scan: &mut Scan,
    mut sink: Option<&mut Sink>,
) {
    let mut number = 0u64;
    let read = parquet::for_each_row(source, &mut |item| match item {
        Item::Columns(columns) => {
            scan.note_columns(columns.iter());
            Flow::Next
        }
        Item::Row(object) => {
            number += 1;
            let span = match sink.as_deref_mut().map(|s| s.write(&object)) {
                None => (0, 0),
                Some(Ok(span)) => span,
                Some(Err(e)) => {
                    scan.error(None, format!("cannot be written out: {e}"));
                    return Flow::Stop;
                }
            };
            json_row(scan, &object, options, number, span)
        }
    });
    if let Err(problem) = read {
        let line = (number > 0).then_some(number + 1);
        scan.error(line, format!("is not a readable Parquet file: {problem}"));
    }
}

fn scan_csv(reader: impl BufRead, options: &ReadOptions, scan: &mut Scan) {
    let names = &options.names;
    let (dialect, reader) = match sniff::dialect(reader, names) {
        Ok(found) => found,
        Err(e) => {
            scan.error(Some(1), format!("cannot be read: {e}"));
            return;
        }
    };
    scan.summary.layout.csv = Some(dialect);
    let mut csv = csv::ReaderBuilder::new()
        .delimiter(dialect.delimiter)
        .has_headers(false)
        .flexible(false)
        .from_reader(LineLimit::new(reader, options.max_line_bytes));
    let mut row = csv::StringRecord::new();
    match csv.read_record(&mut row) {
        Ok(true) => {}
        Ok(false) => return,
        Err(e) => {
            let what = if dialect.header {
                "the header"
            } else {
                "the first row"
            };
            scan.error(
                Some(1),
                format!("{what} cannot be read: {}", csv_problem(&e)),
            );
            return;
        }
    }
    let columns: Vec<String> = if dialect.header {
        row.iter().map(|c| c.trim().to_string()).collect()
    } else {
        sniff::column_names(row.len())
    };
    scan.note_columns(columns.iter());
    let Some(layout) = csv_layout(scan, &columns, dialect, options) else {
        return;
    };
    scan.summary.kind = Some(if layout.text.is_some() {
        DatasetKind::Text
    } else {
        DatasetKind::Tabular
    });
    scan.summary.features = layout
        .features
        .iter()
        .map(|&i| columns[i].clone())
        .collect();
    // Without a header the first record is the first row.
    let mut pending = !dialect.header;
    let mut first = true;
    loop {
        if !pending {
            match csv.read_record(&mut row) {
                Ok(false) => break,
                Ok(true) => {}
                Err(e) => {
                    let line = e
                        .position()
                        .map(|p| p.line())
                        .or_else(|| too_long(&e).map(|t| t.line));
                    scan.error(line, format!("is not valid CSV: {}", csv_problem(&e)));
                    if matches!(
                        e.kind(),
                        csv::ErrorKind::UnequalLengths { .. } | csv::ErrorKind::Utf8 { .. }
                    ) {
                        continue;
                    }
                    break;
                }
            }
        }
        pending = false;
        let guess_words =
            std::mem::take(&mut first) && layout.text.is_none() && names.features.is_none();
        if guess_words {
            let words = layout
                .features
                .iter()
                .find(|&&i| row.get(i).is_some_and(|s| !is_number(s)));
            if let Some(&likely) = words {
                let line = row.position().map_or(2, csv::Position::line);
                let fields: Vec<&str> = columns.iter().map(String::as_str).collect();
                scan.error(Some(line), no_text_field(names, &fields, &columns[likely]));
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
    scan.csv = Some(layout);
}

/// Where the mapped fields are among a CSV file's columns; a missing one is reported against line 1.
fn csv_layout(
    scan: &mut Scan,
    columns: &[String],
    dialect: crate::domain::CsvDialect,
    options: &ReadOptions,
) -> Option<CsvLayout> {
    let names = &options.names;
    let position = |name: &str| columns.iter().position(|c| c == name);
    let listed = abbreviate(&columns.join(", "), 300);
    let headerless = if dialect.header {
        String::new()
    } else {
        "; the file has no header row (its first row holds numbers), so its columns are named \
         column1, column2, …"
            .to_string()
    };
    let missing = |what: &str, name: &str| {
        format!("there is no {what} {name:?} (columns: {listed}){headerless}")
    };
    let Some(label) = position(&names.label) else {
        scan.error(Some(1), missing("column", &names.label));
        return None;
    };
    let (text, features) = match &names.features {
        Some(mapped) => {
            let mut at = Vec::with_capacity(mapped.len());
            for name in mapped {
                match position(name) {
                    Some(i) => at.push(i),
                    None => {
                        scan.error(Some(1), missing("feature column", name));
                        return None;
                    }
                }
            }
            (None, at)
        }
        None => match position(&names.text) {
            Some(t) => (Some(t), Vec::new()),
            None => (None, (0..columns.len()).filter(|&i| i != label).collect()),
        },
    };
    let mut required = Vec::with_capacity(options.rules.required_fields.len());
    for name in &options.rules.required_fields {
        match position(name) {
            Some(i) => required.push(Some(i)),
            None => {
                scan.error(Some(1), missing("column", name) + " (requiredFields)");
                return None;
            }
        }
    }
    Some(CsvLayout {
        delimiter: dialect.delimiter,
        label,
        text,
        features,
        required,
    })
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
        abbreviate(&fields.join(", "), 300)
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

    fn bytes(text: &str) -> RowSource {
        RowSource::Bytes(text.as_bytes().to_vec())
    }

    fn jsonl(text: &str) -> Scan {
        scan(&bytes(text), &options(DatasetFormat::Jsonl))
    }

    fn indexed(text: &str, format: DatasetFormat) -> IndexedRows {
        index(bytes(text), &options(format), Path::new("/nonexistent")).unwrap()
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
        let s = scan(&bytes(csv), &options(DatasetFormat::Csv));
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
        let s = scan(&bytes(&file), &options);
        assert_eq!(s.summary.error_count, 1);
        assert_eq!(s.summary.errors[0].line, Some(2));
        assert!(s.summary.errors[0].message.contains("longer than 64 bytes"));
        assert_eq!(s.summary.row_count, 2);
        let mut options = options.clone();
        options.format = DatasetFormat::Csv;
        let csv = format!("text,label\na,x\n{},y\n", "z".repeat(200));
        let s = scan(&bytes(&csv), &options);
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
        let s = scan(&bytes(csv), &options(DatasetFormat::Csv));
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
        let s = scan(&bytes(&csv), &options);
        assert!(s.is_valid(), "{:?}", s.summary.errors);
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn a_byte_order_mark_is_skipped_in_jsonl_and_csv() {
        let file = "\u{feff}{\"text\":\"a\",\"label\":\"x\"}\n{\"text\":\"b\",\"label\":\"y\"}\n";
        let rows = indexed(file, DatasetFormat::Jsonl);
        assert_eq!(rows.text(0).unwrap(), "a");
        let csv = "\u{feff}text;label\nfirst;x\nsecond;y\n";
        let s = scan(&bytes(csv), &options(DatasetFormat::Csv));
        assert!(s.is_valid(), "{:?}", s.summary.errors);
        assert_eq!(s.summary.layout.columns, ["text", "label"]);
        let rows = indexed(csv, DatasetFormat::Csv);
        assert_eq!(rows.text(0).unwrap(), "first");
        assert_eq!(rows.text(1).unwrap(), "second");
    }

    #[test]
    fn a_tab_separated_file_is_read_with_its_quoting() {
        let tsv = "label\ttext\nx\t\"says \"\"hi\"\", then\tleaves\"\ny\tplain, with a comma\n";
        let s = scan(&bytes(tsv), &options(DatasetFormat::Csv));
        assert!(s.is_valid(), "{:?}", s.summary.errors);
        assert_eq!(s.summary.layout.csv.unwrap().delimiter, b'\t');
        let rows = indexed(tsv, DatasetFormat::Csv);
        assert_eq!(rows.text(0).unwrap(), "says \"hi\", then\tleaves");
        assert_eq!(rows.text(1).unwrap(), "plain, with a comma");
    }

    #[test]
    fn a_headerless_table_names_its_columns_and_says_so() {
        let csv = "0.5,1.5,0\n0.25,2.5,1\n";
        let s = scan(&bytes(csv), &options(DatasetFormat::Csv));
        assert!(!s.is_valid());
        let message = &s.summary.errors[0].message;
        assert!(
            message.contains("there is no column \"label\"") && message.contains("column1"),
            "{message}"
        );
        let mut options = options(DatasetFormat::Csv);
        options.names.label = "column3".into();
        let s = scan(&bytes(csv), &options);
        assert!(s.is_valid(), "{:?}", s.summary.errors);
        assert!(!s.summary.layout.csv.unwrap().header);
        assert_eq!(s.summary.row_count, 2, "the first line is a row");
        assert_eq!(s.summary.features, ["column1", "column2"]);
        let rows = index(bytes(csv), &options, Path::new("/nonexistent")).unwrap();
        assert_eq!(rows.features(0).unwrap(), [0.5, 1.5]);
    }

    #[test]
    fn mapped_feature_columns_are_read_in_their_order_and_the_rest_ignored() {
        let csv = "id,b,a,label,note\n1,2,3,x,hello\n4,5,6,y,bye\n";
        let mut options = options(DatasetFormat::Csv);
        options.names.features = Some(vec!["a".into(), "b".into()]);
        let rows = index(bytes(csv), &options, Path::new("/nonexistent")).unwrap();
        assert_eq!(
            rows.kind(),
            &ExampleKind::Tabular {
                feature_names: vec!["a".into(), "b".into()]
            }
        );
        assert_eq!(rows.features(1).unwrap(), [6.0, 5.0]);
        let jsonl = "{\"a\":1,\"b\":2,\"note\":\"hi\",\"label\":\"x\"}\n{\"a\":3,\"b\":4,\"label\":\"y\"}\n";
        let mut options = options.clone();
        options.format = DatasetFormat::Jsonl;
        let s = scan(&bytes(jsonl), &options);
        assert!(s.is_valid(), "{:?}", s.summary.errors);
        assert_eq!(s.summary.layout.columns, ["a", "b", "label", "note"]);
        options.names.features = Some(vec!["a".into(), "missing".into()]);
        let s = scan(
            &bytes(csv),
            &ReadOptions {
                format: DatasetFormat::Csv,
                ..options
            },
        );
        assert!(
            s.summary.errors[0]
                .message
                .starts_with("there is no feature column \"missing\""),
            "{:?}",
            s.summary.errors
        );
    }

    #[test]
    fn rules_report_each_row_and_the_counts_of_the_file() {
        let mut file = String::new();
        for i in 0..6 {
            file.push_str(&format!(
                "{{\"text\":\"row {i}\",\"label\":\"a\",\"source\":\"s\"}}\n"
            ));
        }
        file.push_str("{\"text\":\"a much longer text\",\"label\":\"b\"}\n");
        file.push_str("{\"text\":\"c\",\"label\":\"c\",\"source\":\" \"}\n");
        let mut options = options(DatasetFormat::Jsonl);
        options.rules = crate::domain::ValidationRules {
            min_rows: Some(20),
            allowed_labels: Some(vec!["a".into(), "b".into(), "d".into()]),
            max_text_length: Some(10),
            required_fields: vec!["source".into()],
            min_rows_per_label: Some(2),
        };
        let s = scan(&bytes(&file), &options);
        let found: Vec<(Option<u64>, &str)> = s
            .summary
            .errors
            .iter()
            .map(|e| (e.line, e.message.as_str()))
            .collect();
        assert_eq!(
            found,
            [
                (
                    Some(7),
                    "field \"text\" is 18 characters, more than maxTextLength 10"
                ),
                (
                    Some(7),
                    "field \"source\" is missing or blank (requiredFields)"
                ),
                (Some(8), "label \"c\" is not one of allowedLabels (a, b, d)"),
                (
                    Some(8),
                    "field \"source\" is missing or blank (requiredFields)"
                ),
                (None, "has 6 valid rows; minRows is 20"),
                (None, "label \"b\" has 0 rows; minRowsPerLabel is 2"),
                (None, "label \"d\" has 0 rows; minRowsPerLabel is 2"),
            ]
        );
        assert_eq!(
            s.summary.row_count, 6,
            "rows that break a rule are not counted"
        );
    }

    #[test]
    fn csv_required_fields_must_be_columns() {
        let mut options = options(DatasetFormat::Csv);
        options.rules.required_fields = vec!["source".into()];
        let s = scan(&bytes("text,label\na,x\nb,y\n"), &options);
        assert_eq!(s.summary.error_count, 1);
        assert!(
            s.summary.errors[0]
                .message
                .contains("there is no column \"source\""),
            "{:?}",
            s.summary.errors
        );
    }

    fn parquet(rows: &[Vec<Option<&str>>], group: usize) -> RowSource {
        RowSource::Bytes(super::parquet::write_strings(
            &["text", "label", "note"],
            rows,
            group,
        ))
    }

    #[test]
    fn parquet_rows_are_checked_by_row_number_and_read_back() {
        let rows: Vec<Vec<Option<&str>>> = vec![
            vec![Some("first"), Some("x"), None],
            vec![Some("second"), Some("y"), Some("n")],
            vec![Some(""), Some("y"), None],
            vec![Some("fourth"), None, None],
            vec![Some("fifth"), Some("x"), None],
        ];
        let s = scan(&parquet(&rows, 2), &options(DatasetFormat::Parquet));
        assert_eq!(s.summary.layout.columns, ["text", "label", "note"]);
        let lines: Vec<Option<u64>> = s.summary.errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, [Some(3), Some(4)], "{:?}", s.summary.errors);
        assert!(s.summary.errors[1].message.contains("\"label\" is null"));
        let good: Vec<Vec<Option<&str>>> = vec![
            vec![Some("first"), Some("x"), None],
            vec![Some("second"), Some("y"), Some("n")],
            vec![Some("third"), Some("x"), None],
        ];
        let dir = tempfile::tempdir().unwrap();
        let rows = index(
            parquet(&good, 2),
            &options(DatasetFormat::Parquet),
            &dir.path().join("rows.jsonl"),
        )
        .unwrap();
        assert_eq!(rows.label_names(), ["x", "y"]);
        assert_eq!(rows.labels(), &[0, 1, 0]);
        assert_eq!(rows.text(2).unwrap(), "third");
        assert_eq!(rows.text(1).unwrap(), "second");
    }

    #[test]
    fn a_damaged_parquet_file_is_refused_with_what_is_wrong() {
        let s = scan(
            &bytes("{\"text\":\"a\",\"label\":\"x\"}\n"),
            &options(DatasetFormat::Parquet),
        );
        assert_eq!(s.summary.error_count, 1);
        assert!(
            s.summary.errors[0]
                .message
                .starts_with("is not a readable Parquet file"),
            "{:?}",
            s.summary.errors
        );
        let rows: Vec<Vec<Option<&str>>> = (0..100)
            .map(|i| {
                vec![
                    Some(if i % 2 == 0 { "even" } else { "odd" }),
                    Some("x"),
                    None,
                ]
            })
            .collect();
        let RowSource::Bytes(mut file) = parquet(&rows, 10) else {
            unreachable!()
        };
        // Overwrite the middle of the data pages; the footer still reads.
        let middle = file.len() / 2;
        for b in &mut file[middle - 40..middle + 40] {
            *b = 0xAB;
        }
        let s = scan(&RowSource::Bytes(file), &options(DatasetFormat::Parquet));
        assert!(!s.is_valid());
    }

    #[test]
    fn a_byte_order_mark_starting_a_later_row_reads_back_as_it_was_checked() {
        // Two files joined end to end, the second with its own mark.
        let csv = "text,label\na,x\n\u{feff}\"b, c\",y\n";
        let s = scan(&bytes(csv), &options(DatasetFormat::Csv));
        assert!(
            !s.is_valid(),
            "a quote inside an unquoted field is not valid CSV here"
        );
        let csv = "text,label\na,x\n\u{feff}b,y\n";
        let rows = indexed(csv, DatasetFormat::Csv);
        assert_eq!(rows.text(1).unwrap(), "\u{feff}b");
    }
}
