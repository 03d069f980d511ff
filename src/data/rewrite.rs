//! Writing a dataset's rows out again, changed: what derived datasets (`redactDataset`, …) are made of.
//! Every format is read as JSON objects (a CSV row keyed by its columns, its cells strings; a Parquet
//! row as the record reader gives it) and written as JSONL lines, which kiln reads with the same
//! mapping. A JSONL line that is not a JSON object is handed over as it is, so nothing is dropped
//! unseen.

use std::io::{BufRead, Write};

use super::parquet::{self, Flow, Item, Object};
use super::{ReadOptions, RowSource, sniff};
use crate::domain::DatasetFormat;

/// One row read back for rewriting.
#[derive(Debug, Clone, PartialEq)]
pub enum Row {
    Object(Object),
    /// A JSONL line that is not a JSON object, as it was.
    Raw(String),
}

/// Reads every row of `source` (as `options` say: format, and for CSV the mapping that decides its
/// header), hands each to `change` with its line (Parquet: row), and writes what it returns to `out`
/// as JSONL lines. Returns how many lines were written; an error says why reading or writing stopped.
pub fn rewrite(
    source: &RowSource,
    options: &ReadOptions,
    out: &mut impl Write,
    mut change: impl FnMut(u64, Row) -> Vec<Row>,
) -> Result<u64, String> {
    let mut written = 0u64;
    let mut emit = |rows: Vec<Row>, out: &mut dyn Write| -> Result<(), String> {
        for row in rows {
            match row {
                Row::Object(object) => {
                    serde_json::to_writer(&mut *out, &object).map_err(|e| e.to_string())?
                }
                Row::Raw(line) => out.write_all(line.as_bytes()).map_err(|e| e.to_string())?,
            }
            out.write_all(b"\n").map_err(|e| e.to_string())?;
            written += 1;
        }
        Ok(())
    };
    match options.format {
        DatasetFormat::Jsonl => {
            let reader = source.reader().map_err(|e| e.to_string())?;
            for (i, line) in reader.lines().enumerate() {
                let line = line.map_err(|e| format!("line {}: {e}", i + 1))?;
                let line = line.strip_prefix('\u{feff}').unwrap_or(&line);
                if line.trim().is_empty() {
                    continue;
                }
                let row = match serde_json::from_str::<serde_json::Value>(line) {
                    Ok(serde_json::Value::Object(object)) => Row::Object(object),
                    _ => Row::Raw(line.to_string()),
                };
                emit(change(i as u64 + 1, row), out)?;
            }
        }
        DatasetFormat::Csv => {
            let reader = source.reader().map_err(|e| e.to_string())?;
            let (dialect, reader) =
                sniff::dialect(reader, &options.names).map_err(|e| e.to_string())?;
            let mut csv = csv::ReaderBuilder::new()
                .delimiter(dialect.delimiter)
                .has_headers(false)
                .flexible(true)
                .from_reader(reader);
            let mut record = csv::StringRecord::new();
            let mut columns: Option<Vec<String>> = None;
            loop {
                match csv.read_record(&mut record) {
                    Ok(false) => break,
                    Ok(true) => {}
                    Err(e) => return Err(e.to_string()),
                }
                let names = match &columns {
                    Some(names) => names,
                    None => {
                        let header = dialect.header;
                        columns = Some(if header {
                            record.iter().map(|c| c.trim().to_string()).collect()
                        } else {
                            sniff::column_names(record.len())
                        });
                        if header {
                            continue;
                        }
                        columns.as_ref().expect("just set")
                    }
                };
                let object: Object = names
                    .iter()
                    .zip(record.iter())
                    .map(|(k, v)| (k.clone(), serde_json::Value::String(v.to_string())))
                    .collect();
                let line = record.position().map_or(0, csv::Position::line);
                emit(change(line, Row::Object(object)), out)?;
            }
        }
        DatasetFormat::Parquet => {
            let mut number = 0u64;
            let mut failed = None;
            parquet::for_each_row(source, &mut |item| match item {
                Item::Columns(_) => Flow::Next,
                Item::Row(object) => {
                    number += 1;
                    match emit(change(number, Row::Object(object)), out) {
                        Ok(()) => Flow::Next,
                        Err(e) => {
                            failed = Some(e);
                            Flow::Stop
                        }
                    }
                }
            })?;
            if let Some(e) = failed {
                return Err(e);
            }
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::FieldNames;

    fn rewritten(text: &str, format: DatasetFormat) -> String {
        let mut out = Vec::new();
        rewrite(
            &RowSource::Bytes(text.as_bytes().to_vec()),
            &ReadOptions::new(format, FieldNames::default()),
            &mut out,
            |line, row| match row {
                Row::Object(mut o) => {
                    o.insert("line".into(), line.into());
                    vec![Row::Object(o)]
                }
                raw => vec![raw],
            },
        )
        .unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn every_format_comes_out_as_jsonl_lines_keeping_what_cannot_be_read() {
        assert_eq!(
            rewritten(
                "{\"text\":\"a\",\"label\":\"x\"}\nnot json\n",
                DatasetFormat::Jsonl
            ),
            "{\"label\":\"x\",\"line\":1,\"text\":\"a\"}\nnot json\n"
        );
        assert_eq!(
            rewritten("text;label\n\"a;b\";x\n", DatasetFormat::Csv),
            "{\"label\":\"x\",\"line\":2,\"text\":\"a;b\"}\n"
        );
    }
}
