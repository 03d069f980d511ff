//! Reading a Parquet file's rows as JSON objects, with arrow-rs's record reader: a row group at a time,
//! its pages decoded as they are read. Strings stay strings, numbers numbers, booleans booleans; dates
//! and timestamps become strings, nested lists and structs arrays and objects (which the row checks
//! then refuse where a text, label or feature is expected).

use std::panic::{AssertUnwindSafe, catch_unwind};

use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::reader::RowIter;

use super::RowSource;

/// What [`for_each_row`] hands out: the file's top-level columns first, then each row.
pub(super) enum Item {
    Columns(Vec<String>),
    Row(Object),
}

/// What the reader of [`for_each_row`] wants next.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Flow {
    Next,
    Stop,
}

pub(super) type Object = serde_json::Map<String, serde_json::Value>;

/// Calls `each` with the columns of the Parquet file in `source`, then with every row, in order, until
/// it answers [`Flow::Stop`]. A file that cannot be read (no Parquet footer, a corrupt page) is an
/// error saying why; rows before the damage have been handed out.
pub(super) fn for_each_row(
    source: &RowSource,
    each: &mut dyn FnMut(Item) -> Flow,
) -> Result<(), String> {
    let run = || -> Result<(), String> {
        let reader: Box<dyn FileReader> = match source {
            RowSource::File(file) => {
                let file = file.try_clone().map_err(|e| e.to_string())?;
                Box::new(SerializedFileReader::new(file).map_err(problem)?)
            }
            RowSource::Bytes(bytes) => Box::new(
                SerializedFileReader::new(bytes::Bytes::from(bytes.clone())).map_err(problem)?,
            ),
        };
        let names = reader
            .metadata()
            .file_metadata()
            .schema_descr()
            .root_schema()
            .get_fields()
            .iter()
            .map(|f| f.name().to_string())
            .collect();
        if each(Item::Columns(names)) == Flow::Stop {
            return Ok(());
        }
        for row in RowIter::from_file_into(reader) {
            let row = row.map_err(problem)?;
            let serde_json::Value::Object(object) = row.to_json_value() else {
                return Err("a row is not a record".into());
            };
            if each(Item::Row(object)) == Flow::Stop {
                break;
            }
        }
        Ok(())
    };
    // The record reader asserts on some malformed files instead of failing; such a file is refused
    // like any other unreadable one.
    catch_unwind(AssertUnwindSafe(run))
        .unwrap_or_else(|_| Err("the Parquet reader stopped on malformed contents".to_string()))
}

fn problem(e: parquet::errors::ParquetError) -> String {
    let text = e.to_string();
    text.strip_prefix("Parquet error: ")
        .map(str::to_string)
        .unwrap_or(text)
}

/// Writes rows to Parquet, for tests: `columns` of strings (`None` a null), one row group per
/// `group` rows, compressed with snappy.
#[cfg(test)]
pub(super) fn write_strings(columns: &[&str], rows: &[Vec<Option<&str>>], group: usize) -> Vec<u8> {
    use parquet::basic::{Compression, LogicalType, Repetition, Type as Physical};
    use parquet::data_type::{ByteArray, ByteArrayType};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::types::Type;
    use std::sync::Arc;

    let fields = columns
        .iter()
        .map(|name| {
            Arc::new(
                Type::primitive_type_builder(name, Physical::BYTE_ARRAY)
                    .with_logical_type(Some(LogicalType::String))
                    .with_repetition(Repetition::OPTIONAL)
                    .build()
                    .unwrap(),
            )
        })
        .collect();
    let schema = Arc::new(
        Type::group_type_builder("schema")
            .with_fields(fields)
            .build()
            .unwrap(),
    );
    let props = Arc::new(
        WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .build(),
    );
    let mut out = Vec::new();
    let mut writer = SerializedFileWriter::new(&mut out, schema, props).unwrap();
    for chunk in rows.chunks(group.max(1)) {
        let mut group_writer = writer.next_row_group().unwrap();
        for c in 0..columns.len() {
            let mut column = group_writer.next_column().unwrap().unwrap();
            let values: Vec<ByteArray> = chunk
                .iter()
                .filter_map(|r| r[c].map(ByteArray::from))
                .collect();
            let levels: Vec<i16> = chunk.iter().map(|r| i16::from(r[c].is_some())).collect();
            column
                .typed::<ByteArrayType>()
                .write_batch(&values, Some(&levels), None)
                .unwrap();
            column.close().unwrap();
        }
        group_writer.close().unwrap();
    }
    writer.close().unwrap();
    out
}
