//! Finding a CSV file's dialect from its start: which delimiter it uses and whether its first row is a
//! header.
//!
//! The delimiter is the one of `,` `\t` `;` `|` that splits the first row into at least two fields and
//! the most of the following rows (up to [`SAMPLE_ROWS`]) into as many; a tie goes to the earlier one.
//! The first row is a header when it holds a mapped field name, or else when none of its cells is a
//! number (a data row of a table has numbers; a headerless text file with word labels reads as having a
//! header, and the error that its label column is missing lists what was taken for names).

use std::io::{self, BufRead, Read};

use super::FieldNames;
use crate::domain::CsvDialect;

/// How much of a file's start is read to find its dialect.
pub const SAMPLE_BYTES: usize = 64 * 1024;
/// How many rows of the sample are compared.
pub const SAMPLE_ROWS: usize = 100;
const DELIMITERS: [u8; 4] = [b',', b'\t', b';', b'|'];

/// A reader whose start was read, handed back whole: the bytes read, then the rest.
pub type Rewound<R> = io::Chain<io::Cursor<Vec<u8>>, R>;

/// Reads the start of `reader` and finds the file's dialect; the reader handed back yields the whole
/// file again, from its first byte.
pub fn dialect<R: BufRead>(
    mut reader: R,
    names: &FieldNames,
) -> io::Result<(CsvDialect, Rewound<R>)> {
    let mut head = Vec::with_capacity(SAMPLE_BYTES);
    (&mut reader)
        .take(SAMPLE_BYTES as u64)
        .read_to_end(&mut head)?;
    let dialect = of_sample(&head, head.len() < SAMPLE_BYTES, names);
    Ok((dialect, io::Cursor::new(head).chain(reader)))
}

/// The dialect of a file that starts with `sample`; `whole` when the sample is all of it (otherwise
/// its last, likely cut, row is left out).
pub fn of_sample(sample: &[u8], whole: bool, names: &FieldNames) -> CsvDialect {
    let sample = if whole {
        sample
    } else {
        match sample.iter().rposition(|&b| b == b'\n') {
            Some(end) => &sample[..end + 1],
            None => sample,
        }
    };
    let mut best: Option<(usize, u8)> = None;
    for delimiter in DELIMITERS {
        let counts = field_counts(sample, delimiter);
        let Some(&first) = counts.first() else {
            continue;
        };
        if first < 2 {
            continue;
        }
        let agreeing = counts.iter().filter(|&&c| c == first).count();
        // Rows agreeing per thousand, so that samples of different lengths compare.
        let score = agreeing * 1000 / counts.len();
        if best.is_none_or(|(s, _)| score > s) {
            best = Some((score, delimiter));
        }
    }
    let delimiter = best.map_or(b',', |(_, d)| d);
    CsvDialect {
        delimiter,
        header: first_row(sample, delimiter).is_none_or(|row| is_header(&row, names)),
    }
}

/// How many fields each of the sample's first rows has with `delimiter`.
fn field_counts(sample: &[u8], delimiter: u8) -> Vec<usize> {
    let mut reader = reader(sample, delimiter);
    let mut record = csv::ByteRecord::new();
    let mut counts = Vec::new();
    while counts.len() < SAMPLE_ROWS {
        match reader.read_byte_record(&mut record) {
            Ok(true) => counts.push(record.len()),
            _ => break,
        }
    }
    counts
}

fn first_row(sample: &[u8], delimiter: u8) -> Option<csv::StringRecord> {
    let mut record = csv::StringRecord::new();
    match reader(sample, delimiter).read_record(&mut record) {
        Ok(true) => Some(record),
        _ => None,
    }
}

fn reader(sample: &[u8], delimiter: u8) -> csv::Reader<&[u8]> {
    csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(false)
        .flexible(true)
        .from_reader(sample)
}

fn is_header(row: &csv::StringRecord, names: &FieldNames) -> bool {
    let cells: Vec<&str> = row.iter().map(str::trim).collect();
    let mapped = |cell: &&str| {
        *cell == names.label
            || *cell == names.text
            || names
                .features
                .as_ref()
                .is_some_and(|f| f.iter().any(|n| n == cell))
    };
    if cells.iter().any(mapped) {
        return true;
    }
    !cells
        .iter()
        .any(|c| !c.is_empty() && c.parse::<f64>().is_ok())
}

/// The names of a headerless file's columns: `column1`, `column2`, ….
pub fn column_names(count: usize) -> Vec<String> {
    (1..=count).map(|i| format!("column{i}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sniff(text: &str) -> CsvDialect {
        of_sample(text.as_bytes(), true, &FieldNames::default())
    }

    #[test]
    fn the_delimiter_is_the_one_the_rows_agree_on() {
        assert_eq!(sniff("text,label\nhi; there,a\n").delimiter, b',');
        assert_eq!(sniff("text\tlabel\nhi, there; you\ta\n").delimiter, b'\t');
        assert_eq!(sniff("a;b;label\n1,5;2;x\n3;4;y\n").delimiter, b';');
        assert_eq!(sniff("a|label\n1|x\n").delimiter, b'|');
        // Quoted delimiters do not count.
        assert_eq!(
            sniff("text;label\n\"a, b, c\";x\n\"d, e\";y\n").delimiter,
            b';'
        );
        // One column: the comma, and the missing label column is reported later.
        assert_eq!(sniff("just text\nmore\n").delimiter, b',');
    }

    #[test]
    fn a_first_row_of_numbers_is_data_and_names_are_a_header() {
        assert!(sniff("text,label\nhello,1\n").header);
        assert!(!sniff("0.5,1.5,0\n0.1,0.2,1\n").header);
        assert!(!sniff("hello world,1\nbye,0\n").header);
        assert!(sniff("sentence,class\nhello,benign\n").header);
        // A header with a number in it still names the mapped field.
        assert!(sniff("2024,label\n1,x\n").header);
    }

    #[test]
    fn a_cut_last_row_is_left_out_of_a_partial_sample() {
        let sample = "a;b;label\n1;2;x\n3;4;y\n5;6";
        let d = of_sample(sample.as_bytes(), false, &FieldNames::default());
        assert_eq!(d.delimiter, b';');
    }

    #[test]
    fn the_reader_handed_back_yields_the_whole_file() {
        let text = "x".repeat(SAMPLE_BYTES + 10);
        let (_, mut rest) = dialect(text.as_bytes(), &FieldNames::default()).unwrap();
        let mut all = String::new();
        rest.read_to_string(&mut all).unwrap();
        assert_eq!(all, text);
    }
}
