//! Reading a validated dataset back a row at a time, through its index of row offsets.

use std::io;

use anyhow::{Context, Result, bail};

use super::ReadOptions;
use super::record::{Cells, CsvCells, CsvLayout, JsonCells, Row, check};
use crate::domain::{DatasetFormat, DatasetKind, ExampleKind, Examples};

/// Where a dataset's bytes are: a local file (read at offsets, so threads share it) or memory.
#[derive(Debug)]
pub enum RowSource {
    File(std::fs::File),
    Bytes(Vec<u8>),
}

impl RowSource {
    /// The bytes from the start, buffered.
    pub fn reader(&self) -> io::Result<Box<dyn io::BufRead + '_>> {
        Ok(match self {
            Self::File(file) => Box::new(io::BufReader::with_capacity(
                256 * 1024,
                FileAt { file, at: 0 },
            )),
            Self::Bytes(bytes) => Box::new(&bytes[..]),
        })
    }

    fn read(&self, offset: u64, len: u32) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; len as usize];
        match self {
            Self::File(file) => {
                use std::os::unix::fs::FileExt;
                file.read_exact_at(&mut buf, offset)?;
            }
            Self::Bytes(bytes) => {
                let start = offset as usize;
                let slice = bytes
                    .get(start..start + len as usize)
                    .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
                buf.copy_from_slice(slice);
            }
        }
        Ok(buf)
    }
}

/// Reads a shared file from a position of its own, leaving the file's cursor alone.
struct FileAt<'a> {
    file: &'a std::fs::File,
    at: u64,
}

impl io::Read for FileAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let n = self.file.read_at(buf, self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}

/// How the rows of one file are laid out.
#[derive(Debug, Clone)]
pub(super) struct Layout {
    pub options: ReadOptions,
    pub kind: ExampleKind,
    /// The columns of a CSV file.
    pub csv: Option<CsvLayout>,
}

/// A validated dataset whose rows are read on demand. Built by [`super::index`].
#[derive(Debug)]
pub struct IndexedRows {
    source: RowSource,
    layout: Layout,
    spans: Vec<(u64, u32)>,
    labels: Vec<u32>,
    label_names: Vec<String>,
}

impl IndexedRows {
    pub(super) fn new(
        source: RowSource,
        layout: Layout,
        spans: Vec<(u64, u32)>,
        labels: Vec<u32>,
        label_names: Vec<String>,
    ) -> Self {
        Self {
            source,
            layout,
            spans,
            labels,
            label_names,
        }
    }

    /// Reads row `i` again and hands its checked cells to `take`.
    fn with_row<T>(&self, i: usize, take: impl FnOnce(Row<'_>) -> T) -> Result<T> {
        let (offset, len) = *self
            .spans
            .get(i)
            .with_context(|| format!("row {i} is out of range"))?;
        let bytes = self
            .source
            .read(offset, len)
            .with_context(|| format!("reading row {i} of the dataset"))?;
        let options = &self.layout.options;
        let (kind, features): (DatasetKind, &[String]) = match &self.layout.kind {
            ExampleKind::Text => (DatasetKind::Text, &[]),
            ExampleKind::Tabular { feature_names } => (DatasetKind::Tabular, feature_names),
        };
        let changed =
            || format!("row {i} of the dataset no longer reads as it did when it was checked");
        match options.format {
            // Parquet rows are indexed through their JSONL copy.
            DatasetFormat::Jsonl | DatasetFormat::Parquet => {
                let object: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_slice(&bytes).with_context(changed)?;
                let cells = JsonCells {
                    object: &object,
                    names: &options.names,
                    features,
                    required: &[],
                };
                recheck(&cells, kind, options, features, take).with_context(changed)
            }
            DatasetFormat::Csv => {
                let layout = self.layout.csv.as_ref().context("a CSV layout")?;
                // The reader drops a byte order mark at the start of what it reads; one at the start
                // of a row further on (files joined end to end) is part of the row, as the checking
                // pass read it, so it goes in behind one to drop.
                const BOM: &[u8] = b"\xEF\xBB\xBF";
                let bytes = if offset > 0 && bytes.starts_with(BOM) {
                    [BOM, &bytes[..]].concat()
                } else {
                    bytes
                };
                let mut reader = csv::ReaderBuilder::new()
                    .delimiter(layout.delimiter)
                    .has_headers(false)
                    .flexible(true)
                    .from_reader(&bytes[..]);
                let mut record = csv::StringRecord::new();
                if !reader.read_record(&mut record).with_context(changed)? {
                    bail!("{}", changed());
                }
                let cells = CsvCells {
                    record: &record,
                    layout,
                };
                recheck(&cells, kind, options, features, take).with_context(changed)
            }
        }
    }
}

/// Checks a row read back with the rules it passed when it was indexed.
fn recheck<T>(
    cells: &impl Cells,
    kind: DatasetKind,
    options: &ReadOptions,
    features: &[String],
    take: impl FnOnce(Row<'_>) -> T,
) -> Result<T> {
    let mut problems = Vec::new();
    match check(cells, kind, &options.names, features, &mut problems) {
        Some(row) => Ok(take(row)),
        None => bail!("{}", problems.join("; ")),
    }
}

impl Examples for IndexedRows {
    fn kind(&self) -> &ExampleKind {
        &self.layout.kind
    }

    fn labels(&self) -> &[u32] {
        &self.labels
    }

    fn label_names(&self) -> &[String] {
        &self.label_names
    }

    fn text(&self, row: usize) -> Result<String> {
        self.with_row(row, |r| r.text.map(str::to_string))?
            .with_context(|| format!("row {row} has no text"))
    }

    fn features(&self, row: usize) -> Result<Vec<f32>> {
        self.with_row(row, |r| r.features)
    }
}
