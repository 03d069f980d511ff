//! A bounded mutation fuzzer for the dataset readers (JSONL, CSV, Parquet) and the personal-data
//! scanner, run in-process on the stable toolchain (cargo-fuzz needs a nightly compiler).
//!
//! Inputs start from seeds (small valid files of each format, the Parquet ones as pyarrow wrote them,
//! in `seeds/`) and are mutated: bytes flipped, inserted, deleted and repeated, chunks spliced from
//! other seeds, bytes that mean something to a reader (quotes, delimiters, line breaks, a byte order
//! mark, digits, `@`) dropped in. Each input is scanned (the one validation pass), indexed when valid
//! (every row read back), rewritten as JSONL, and its text searched for personal data, redacted and
//! excerpted; the scanner's findings must lie in order on character boundaries without overlapping.
//!
//! A panic anywhere is a crash: the input is written to `crashes/` and the test fails naming it. Inputs
//! in `regressions/` (crashes found before, kept once fixed) are replayed first; `KILN_FUZZ_VERBOSE=1`
//! prints each panic's message and place. The run lasts
//! `KILN_FUZZ_SECONDS` (default 20) from the seed `KILN_FUZZ_SEED` (default: the time), and prints
//! how many inputs each target ran.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kiln::data::{FieldNames, ReadOptions, RowSource, index, pii, rewrite, scan};
use kiln::domain::{DatasetFormat, PiiKind, ValidationRules};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn folder(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz_data")
        .join(name)
}

/// Seeds by format: the files in `seeds/`, named by their extension.
fn seeds() -> Vec<(DatasetFormat, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(folder("seeds")).expect("tests/fuzz_data/seeds") {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if let Some(format) = DatasetFormat::from_file_name(&name) {
            out.push((format, std::fs::read(&path).unwrap()));
        }
    }
    out.sort_by(|a, b| a.1.cmp(&b.1));
    assert!(
        out.iter().any(|(f, _)| *f == DatasetFormat::Parquet),
        "the seeds hold no Parquet file"
    );
    out
}

const INTERESTING: [&[u8]; 18] = [
    b"\"",
    b",",
    b";",
    b"\t",
    b"|",
    b"\n",
    b"\r\n",
    b"\xEF\xBB\xBF",
    b"{",
    b"}",
    b"\\u0000",
    b"@",
    b"4111 1111 1111 1111",
    b"123-45-6789",
    b"\xFF\xFE",
    b"1e309",
    b"null",
    b"\xF0\x9F\x98\x80",
];

/// One mutation of `input` (or of `other`, spliced in).
fn mutate(rng: &mut StdRng, input: &mut Vec<u8>, other: &[u8]) {
    let at = |rng: &mut StdRng, len: usize| {
        if len == 0 {
            0
        } else {
            rng.random_range(0..=len)
        }
    };
    match rng.random_range(0..8) {
        0 if !input.is_empty() => {
            let i = rng.random_range(0..input.len());
            input[i] ^= 1 << rng.random_range(0..8);
        }
        1 => {
            let i = at(rng, input.len());
            input.insert(i, rng.random());
        }
        2 if !input.is_empty() => {
            let i = rng.random_range(0..input.len());
            let n = rng.random_range(1..=16.min(input.len() - i));
            input.drain(i..i + n);
        }
        3 if !input.is_empty() => {
            // A chunk repeated: long lines, many columns, repeated rows.
            let i = rng.random_range(0..input.len());
            let n = rng.random_range(1..=64.min(input.len() - i));
            let chunk = input[i..i + n].to_vec();
            let times = rng.random_range(1..8);
            for _ in 0..times {
                input.splice(i..i, chunk.iter().copied());
            }
        }
        4 if !other.is_empty() => {
            let i = rng.random_range(0..other.len());
            let n = rng.random_range(1..=128.min(other.len() - i));
            let j = at(rng, input.len());
            input.splice(j..j, other[i..i + n].iter().copied());
        }
        5 => {
            let token = INTERESTING[rng.random_range(0..INTERESTING.len())];
            let j = at(rng, input.len());
            input.splice(j..j, token.iter().copied());
        }
        6 if input.len() > 1 => {
            let keep = rng.random_range(0..input.len());
            input.truncate(keep);
        }
        _ if input.len() >= 8 => {
            // A little-endian number overwritten: lengths and offsets in binary formats.
            let i = rng.random_range(0..input.len() - 4);
            let value: u32 = match rng.random_range(0..4) {
                0 => 0,
                1 => u32::MAX,
                2 => rng.random_range(0..1 << 16),
                _ => rng.random(),
            };
            input[i..i + 4].copy_from_slice(&value.to_le_bytes());
        }
        _ => input.push(b'\n'),
    }
}

/// Everything the readers and the scanner do with one input; panics on a broken promise. True when
/// the Parquet reader stopped on an assertion of its own (kiln catches it and refuses the file).
fn exercise(format: DatasetFormat, input: &[u8], scratch: &Path) -> bool {
    let mut options = ReadOptions::new(format, FieldNames::default());
    options.max_line_bytes = 4096;
    options.rules = ValidationRules {
        min_rows: Some(2),
        max_text_length: Some(200),
        ..Default::default()
    };
    let found = scan(&RowSource::Bytes(input.to_vec()), &options);
    assert!(found.summary.errors.len() as u64 <= found.summary.error_count);
    let caught = found
        .summary
        .errors
        .iter()
        .any(|e| e.message.contains("stopped on malformed contents"));
    if found.is_valid() {
        let rows = index(RowSource::Bytes(input.to_vec()), &options, scratch)
            .expect("a file that scans valid indexes");
        use kiln::domain::Examples;
        for i in 0..rows.len() {
            match rows.kind() {
                kiln::domain::ExampleKind::Text => {
                    rows.text(i).expect("a valid row reads back");
                }
                kiln::domain::ExampleKind::Tabular { .. } => {
                    rows.features(i).expect("a valid row reads back");
                }
            }
        }
    }
    let mut out = Vec::new();
    let _ = rewrite::rewrite(
        &RowSource::Bytes(input.to_vec()),
        &options,
        &mut out,
        |_, row| vec![row],
    );
    personal_data(&String::from_utf8_lossy(input));
    caught
}

fn personal_data(text: &str) {
    let found = pii::find(text);
    let mut end = 0;
    for f in &found {
        assert!(
            f.start >= end && f.start < f.end && f.end <= text.len(),
            "{found:?}"
        );
        assert!(text.is_char_boundary(f.start) && text.is_char_boundary(f.end));
        end = f.end;
    }
    let redacted = pii::redact(text, &PiiKind::ALL);
    assert!(
        pii::find(&redacted).len() <= found.len() + 1,
        "{redacted:?}"
    );
    for f in found.iter().take(3) {
        pii::masked_excerpt(text, &found, f);
    }
}

fn keep_crash(target: &str, input: &[u8]) -> PathBuf {
    use sha2::Digest;
    let dir = folder("crashes");
    std::fs::create_dir_all(&dir).unwrap();
    let name = format!(
        "{target}-{}",
        &hex::encode(sha2::Sha256::digest(input))[..16]
    );
    let path = dir.join(name);
    std::fs::write(&path, input).unwrap();
    path
}

/// The format a kept input was read as: its file name's extension after the target.
fn regression_format(name: &str) -> Option<DatasetFormat> {
    match name.split('-').next()? {
        "jsonl" => Some(DatasetFormat::Jsonl),
        "csv" => Some(DatasetFormat::Csv),
        "parquet" => Some(DatasetFormat::Parquet),
        _ => None,
    }
}

#[test]
fn the_readers_and_the_scanner_survive_mutated_files() {
    // Panics are counted here, not printed; the Parquet reader's own are caught and reported as
    // unreadable files by kiln, and stay quiet too.
    // KILN_FUZZ_VERBOSE=1 prints them, to see where a kept input crashes.
    if std::env::var_os("KILN_FUZZ_VERBOSE").is_none() {
        std::panic::set_hook(Box::new(|_| {}));
    }
    let scratch = tempfile::tempdir().unwrap();
    let rows_file = scratch.path().join("rows.jsonl");
    let target = |format: DatasetFormat| format.extension();

    // Crashes found before, kept once fixed.
    let mut replayed = 0;
    let mut again = Vec::new();
    if let Ok(entries) = std::fs::read_dir(folder("regressions")) {
        for entry in entries {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if name.starts_with('.') {
                continue;
            }
            let format = regression_format(&name).unwrap_or(DatasetFormat::Jsonl);
            let input = std::fs::read(&path).unwrap();
            let run = catch_unwind(AssertUnwindSafe(|| exercise(format, &input, &rows_file)));
            if run.is_err() {
                again.push(path);
            }
            replayed += 1;
        }
    }

    let seconds: u64 = std::env::var("KILN_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("KILN_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
        });
    let mut rng = StdRng::seed_from_u64(seed);
    let seeds = seeds();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut runs: std::collections::BTreeMap<&str, u64> = Default::default();
    let mut crashes = Vec::new();
    let mut caught = 0u64;
    while Instant::now() < deadline {
        let (format, seed_input) = &seeds[rng.random_range(0..seeds.len())];
        let (_, other) = &seeds[rng.random_range(0..seeds.len())];
        let mut input = seed_input.clone();
        for _ in 0..rng.random_range(1..6) {
            mutate(&mut rng, &mut input, other);
        }
        let run = catch_unwind(AssertUnwindSafe(|| exercise(*format, &input, &rows_file)));
        *runs.entry(target(*format)).or_default() += 1;
        match run {
            Ok(true) => caught += 1,
            Ok(false) => {}
            Err(_) => crashes.push(keep_crash(target(*format), &input)),
        }
    }
    let _ = std::panic::take_hook();
    assert!(again.is_empty(), "kept inputs crash again: {again:?}");
    let total: u64 = runs.values().sum();
    println!(
        "fuzzed {total} inputs in {seconds} s from seed {seed} ({}), {replayed} kept inputs replayed, \
         {} crashes; {caught} Parquet files stopped the reader on its own assertions (refused as unreadable)",
        runs.iter()
            .map(|(t, n)| format!("{t} {n}"))
            .collect::<Vec<_>>()
            .join(", "),
        crashes.len()
    );
    assert!(
        crashes.is_empty(),
        "inputs that crash a reader or the scanner (rerun with KILN_FUZZ_SEED={seed}): {crashes:?}"
    );
}
