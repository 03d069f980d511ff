//! Statistics gathered in the validation pass ([`DatasetStats`]): each valid row's text (or feature
//! values) is reduced to a 64-bit key, and a table of keys seen finds repeated rows and texts labelled
//! two ways. Memory: a hash table of 25 bytes a slot for up to [`MAX_TRACKED_ROWS`] distinct rows (past
//! it the statistics say they are not complete), so at most 2^20 slots (26 MB, and half that again
//! while it grows), and 800 KB for the text-length histogram.
//!
//! Texts are compared with their whitespace collapsed (runs of spaces, tabs and line breaks read as one
//! space; leading and trailing ones dropped), case kept. The keys of a dataset's distinct rows, sorted,
//! are what `overlapWith` compares two datasets by ([`encode_keys`], [`overlap`]).

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::domain::{
    Bucket, DatasetStats, FeatureSummary, LabelConflict, LengthSummary, MAX_CONFLICT_LINES,
    MAX_LISTED_CONFLICTS, MAX_TEXT_CHARS, MAX_TRACKED_ROWS, abbreviate,
};

/// Buckets of the length histogram.
const HISTOGRAM_BUCKETS: u64 = 20;

/// What is known of one distinct row: 12 bytes, so that a table entry with its key is 24.
struct Seen {
    first_line: u32,
    rows: u32,
    first_label: u16,
    /// It has occurred with a second label; its labels are then in `Collector::conflict_labels`.
    conflict: bool,
}

/// A listed conflict, as it grows.
struct Conflict {
    excerpt: String,
    rows_by_label: BTreeMap<u16, u64>,
    lines: Vec<u64>,
}

/// Running mean and variance (Welford), extremes and count of one feature.
#[derive(Default, Clone)]
struct Moments {
    count: u64,
    mean: f64,
    m2: f64,
    min: f64,
    max: f64,
}

impl Moments {
    fn add(&mut self, x: f64) {
        if self.count == 0 {
            self.min = x;
            self.max = x;
        } else {
            self.min = self.min.min(x);
            self.max = self.max.max(x);
        }
        self.count += 1;
        let delta = x - self.mean;
        self.mean += delta / self.count as f64;
        self.m2 += delta * (x - self.mean);
    }
}

/// Gathers [`DatasetStats`] a row at a time.
pub(super) struct Collector {
    seen: HashMap<u64, Seen, ahash::RandomState>,
    /// (key, label id) of each label a row labelled two or more ways has occurred with.
    conflict_labels: HashSet<(u64, u16), ahash::RandomState>,
    label_ids: HashMap<String, u16>,
    label_names: Vec<String>,
    listed: HashMap<u64, usize>,
    conflicts: Vec<Conflict>,
    duplicate_rows: u64,
    conflicting_texts: u64,
    conflicting_rows: u64,
    empty_texts: u64,
    /// Rows by text length in characters (longer texts are errors and not counted).
    lengths: Vec<u64>,
    features: Vec<Moments>,
    missing: Vec<u64>,
    complete: bool,
}

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collector")
            .field("distinct", &self.seen.len())
            .finish_non_exhaustive()
    }
}

impl Default for Collector {
    fn default() -> Self {
        Self {
            seen: HashMap::default(),
            conflict_labels: HashSet::default(),
            label_ids: HashMap::new(),
            label_names: Vec::new(),
            listed: HashMap::new(),
            conflicts: Vec::new(),
            duplicate_rows: 0,
            conflicting_texts: 0,
            conflicting_rows: 0,
            empty_texts: 0,
            lengths: Vec::new(),
            features: Vec::new(),
            missing: Vec::new(),
            complete: true,
        }
    }
}

impl Collector {
    pub fn empty_text(&mut self) {
        self.empty_texts += 1;
    }

    /// Counts a missing (null, blank) cell of feature `j` of `count` features.
    pub fn missing_feature(&mut self, j: usize, count: usize) {
        if self.missing.len() < count {
            self.missing.resize(count, 0);
        }
        self.missing[j] += 1;
    }

    /// Adds one valid row.
    pub fn row(&mut self, line: u64, label: &str, text: Option<&str>, features: &[f32]) {
        let label = self.label_id(label);
        if let Some(text) = text {
            if self.lengths.is_empty() {
                self.lengths = vec![0; MAX_TEXT_CHARS + 1];
            }
            let chars = text.chars().count().min(MAX_TEXT_CHARS);
            self.lengths[chars] += 1;
        }
        if self.features.len() < features.len() {
            self.features.resize(features.len(), Moments::default());
        }
        for (m, &v) in self.features.iter_mut().zip(features) {
            m.add(f64::from(v));
        }
        let key = match text {
            Some(text) => text_key(text),
            None => features_key(features),
        };
        self.track(key, line, label, || match text {
            Some(text) => excerpt(text),
            None => abbreviate(
                &features
                    .iter()
                    .map(f32::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                200,
            ),
        });
    }

    fn label_id(&mut self, label: &str) -> u16 {
        if let Some(&id) = self.label_ids.get(label) {
            return id;
        }
        // At most MAX_LABELS (1000) labels reach here.
        let id = self.label_names.len() as u16;
        self.label_ids.insert(label.to_string(), id);
        self.label_names.push(label.to_string());
        id
    }

    fn track(&mut self, key: u64, line: u64, label: u16, excerpt: impl FnOnce() -> String) {
        let line32 = line.min(u64::from(u32::MAX)) as u32;
        let Some(seen) = self.seen.get_mut(&key) else {
            if self.seen.len() >= MAX_TRACKED_ROWS {
                self.complete = false;
                return;
            }
            self.seen.insert(
                key,
                Seen {
                    first_line: line32,
                    first_label: label,
                    rows: 1,
                    conflict: false,
                },
            );
            return;
        };
        let had = if seen.conflict {
            !self.conflict_labels.insert((key, label))
        } else {
            seen.first_label == label
        };
        let before = seen.rows;
        seen.rows = seen.rows.saturating_add(1);
        if had {
            self.duplicate_rows += 1;
        }
        if seen.conflict {
            self.conflicting_rows += 1;
            if let Some(&i) = self.listed.get(&key) {
                let conflict = &mut self.conflicts[i];
                *conflict.rows_by_label.entry(label).or_default() += 1;
                if conflict.lines.len() < MAX_CONFLICT_LINES {
                    conflict.lines.push(line);
                }
            }
        } else if !had {
            // A second label: every earlier row had the first one.
            seen.conflict = true;
            self.conflict_labels.insert((key, seen.first_label));
            self.conflict_labels.insert((key, label));
            self.conflicting_texts += 1;
            self.conflicting_rows += u64::from(before) + 1;
            if self.conflicts.len() < MAX_LISTED_CONFLICTS {
                let first = seen.first_line;
                let first_label = seen.first_label;
                self.listed.insert(key, self.conflicts.len());
                self.conflicts.push(Conflict {
                    excerpt: excerpt(),
                    rows_by_label: BTreeMap::from([(first_label, u64::from(before)), (label, 1)]),
                    lines: vec![u64::from(first), line],
                });
            }
        }
    }

    /// The statistics, with the dataset's label counts and feature names.
    pub fn finish(&self, labels: &BTreeMap<String, u64>, feature_names: &[String]) -> DatasetStats {
        let rows: u64 = labels.values().sum();
        let imbalance_ratio = match (labels.values().max(), labels.values().min()) {
            (Some(&most), Some(&least)) if labels.len() >= 2 && least > 0 => {
                Some(most as f64 / least as f64)
            }
            _ => None,
        };
        let mut conflicts: Vec<LabelConflict> = self
            .conflicts
            .iter()
            .map(|c| {
                let mut by_label: Vec<(String, u64)> = c
                    .rows_by_label
                    .iter()
                    .map(|(&id, &n)| (self.label_names[id as usize].clone(), n))
                    .collect();
                by_label.sort();
                LabelConflict {
                    excerpt: c.excerpt.clone(),
                    labels: by_label,
                    lines: c.lines.clone(),
                }
            })
            .collect();
        conflicts.sort_by_key(|c| c.lines.first().copied());
        let features = feature_names
            .iter()
            .enumerate()
            .map(|(j, name)| {
                let m = self.features.get(j).cloned().unwrap_or_default();
                let some = |v: f64| (m.count > 0).then_some(v);
                FeatureSummary {
                    name: name.clone(),
                    count: m.count,
                    missing: self.missing.get(j).copied().unwrap_or(0),
                    min: some(m.min),
                    max: some(m.max),
                    mean: some(m.mean),
                    std: some((m.m2 / m.count.max(1) as f64).sqrt()),
                }
            })
            .collect();
        DatasetStats {
            rows,
            imbalance_ratio,
            duplicate_rows: self.duplicate_rows,
            conflicting_texts: self.conflicting_texts,
            conflicting_rows: self.conflicting_rows,
            conflicts,
            empty_texts: self.empty_texts,
            text_length: length_summary(&self.lengths),
            features,
            complete: self.complete,
        }
    }

    /// The keys of the distinct rows seen, sorted, with how many rows each has and its first line, in
    /// the form [`overlap`] reads.
    pub fn encoded_keys(&self) -> Vec<u8> {
        let mut keys: Vec<(u64, u32, u32)> = self
            .seen
            .iter()
            .map(|(&k, s)| (k, s.rows, s.first_line))
            .collect();
        keys.sort_unstable();
        encode_keys(&keys)
    }
}

/// A text's whitespace collapsed, at most 200 characters.
fn excerpt(text: &str) -> String {
    abbreviate(&text.split_whitespace().collect::<Vec<_>>().join(" "), 200)
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv(mut hash: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    hash
}

/// The key of a text: 64-bit FNV-1a of its words joined by single spaces (stable across versions
/// and machines, since keys are stored).
pub fn text_key(text: &str) -> u64 {
    let mut hash = FNV_OFFSET;
    for (i, word) in text.split_whitespace().enumerate() {
        if i > 0 {
            hash = fnv(hash, b" ");
        }
        hash = fnv(hash, word.as_bytes());
    }
    hash
}

/// The key of a table row: FNV-1a of its values' bits (`-0` and `0` are the same value).
fn features_key(features: &[f32]) -> u64 {
    let mut hash = FNV_OFFSET ^ 0x9e37_79b9_7f4a_7c15;
    for &v in features {
        let v = if v == 0.0 { 0.0f32 } else { v };
        hash = fnv(hash, &v.to_bits().to_le_bytes());
    }
    hash
}

/// Nearest-rank percentiles, the mean and a histogram of `lengths` (rows by length); `None` when it
/// counts no row.
pub fn length_summary(lengths: &[u64]) -> Option<LengthSummary> {
    let total: u64 = lengths.iter().sum();
    if total == 0 {
        return None;
    }
    let percentile = |p: u64| -> u64 {
        let rank = (total * p).div_ceil(100).max(1);
        let mut seen = 0;
        for (len, &n) in lengths.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return len as u64;
            }
        }
        (lengths.len() - 1) as u64
    };
    let min = lengths.iter().position(|&n| n > 0).unwrap_or(0) as u64;
    let max = lengths.iter().rposition(|&n| n > 0).unwrap_or(0) as u64;
    let sum: f64 = lengths
        .iter()
        .enumerate()
        .map(|(len, &n)| len as f64 * n as f64)
        .sum();
    let p99 = percentile(99);
    let span = p99 - min + 1;
    let width = span.div_ceil(HISTOGRAM_BUCKETS).max(1);
    let buckets = span.div_ceil(width);
    let histogram = (0..buckets)
        .map(|k| {
            let from = min + k * width;
            let last = k + 1 == buckets;
            let to = if last {
                max.max(from)
            } else {
                from + width - 1
            };
            let end = (to as usize).min(lengths.len() - 1);
            let count = if from as usize > end {
                0
            } else {
                lengths[from as usize..=end].iter().sum()
            };
            Bucket { from, to, count }
        })
        .collect();
    Some(LengthSummary {
        min,
        max,
        mean: sum / total as f64,
        p50: percentile(50),
        p90: percentile(90),
        p95: percentile(95),
        p99,
        histogram,
    })
}

/// One record of an encoded key list: key, rows, first line; 16 bytes, little-endian.
const KEY_RECORD: usize = 16;

fn encode_keys(keys: &[(u64, u32, u32)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(keys.len() * KEY_RECORD);
    for &(key, rows, line) in keys {
        out.extend_from_slice(&key.to_le_bytes());
        out.extend_from_slice(&rows.to_le_bytes());
        out.extend_from_slice(&line.to_le_bytes());
    }
    out
}

fn decode_key(record: &[u8]) -> (u64, u32, u32) {
    let key = u64::from_le_bytes(record[0..8].try_into().expect("8 bytes"));
    let rows = u32::from_le_bytes(record[8..12].try_into().expect("4 bytes"));
    let line = u32::from_le_bytes(record[12..16].try_into().expect("4 bytes"));
    (key, rows, line)
}

/// Rows of one dataset whose text (or features) also occurs in another.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overlap {
    /// Rows of the first dataset, and distinct texts, that also occur in the second.
    pub rows: u64,
    pub distinct: u64,
    /// The first lines of the first dataset where a shared text occurs, in order (at most `limit`).
    pub lines: Vec<u64>,
}

/// Compares two encoded key lists (sorted, as [`Collector::encoded_keys`] writes them); `None` when
/// either is not such a list.
pub fn overlap(first: &[u8], second: &[u8], limit: usize) -> Option<Overlap> {
    if !first.len().is_multiple_of(KEY_RECORD) || !second.len().is_multiple_of(KEY_RECORD) {
        return None;
    }
    let mut a = first.chunks_exact(KEY_RECORD).map(decode_key).peekable();
    let mut b = second.chunks_exact(KEY_RECORD).map(|r| decode_key(r).0);
    let mut found = Overlap::default();
    let mut lines = Vec::new();
    let mut next_b = b.next();
    while let (Some(&(key, rows, line)), Some(other)) = (a.peek(), next_b) {
        match key.cmp(&other) {
            std::cmp::Ordering::Less => {
                a.next();
            }
            std::cmp::Ordering::Greater => next_b = b.next(),
            std::cmp::Ordering::Equal => {
                found.rows += u64::from(rows);
                found.distinct += 1;
                lines.push(u64::from(line));
                a.next();
            }
        }
    }
    lines.sort_unstable();
    lines.truncate(limit);
    found.lines = lines;
    Some(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
        pairs.iter().map(|(l, n)| (l.to_string(), *n)).collect()
    }

    #[test]
    fn repeats_and_conflicts_are_told_apart_and_listed() {
        let mut c = Collector::default();
        c.row(1, "benign", Some("hello   world"), &[]);
        c.row(2, "benign", Some("hello world "), &[]);
        c.row(3, "injection", Some("ignore all"), &[]);
        c.row(4, "benign", Some(" ignore\tall"), &[]);
        c.row(5, "benign", Some("ignore all"), &[]);
        c.row(6, "other", Some("Hello world"), &[]);
        let stats = c.finish(
            &labels(&[("benign", 4), ("injection", 1), ("other", 1)]),
            &[],
        );
        assert_eq!(stats.duplicate_rows, 2, "lines 2 and 5 repeat a row");
        assert_eq!(
            stats.conflicting_texts, 1,
            "case counts: Hello is another text"
        );
        assert_eq!(stats.conflicting_rows, 3);
        assert_eq!(
            stats.conflicts,
            [LabelConflict {
                excerpt: "ignore all".into(),
                labels: vec![("benign".into(), 2), ("injection".into(), 1)],
                lines: vec![3, 4, 5],
            }]
        );
        assert_eq!(stats.imbalance_ratio, Some(4.0));
        assert!(stats.complete);
    }

    #[test]
    fn lengths_have_exact_percentiles_and_a_histogram_to_the_99th() {
        let mut c = Collector::default();
        for i in 1..=100u64 {
            let text = "x".repeat(i as usize);
            c.row(i, if i % 2 == 0 { "a" } else { "b" }, Some(&text), &[]);
        }
        c.row(101, "a", Some(&"y".repeat(5000)), &[]);
        let stats = c.finish(&labels(&[("a", 51), ("b", 50)]), &[]);
        let l = stats.text_length.unwrap();
        assert_eq!((l.min, l.max, l.p50, l.p90, l.p99), (1, 5000, 51, 91, 100));
        assert!(l.histogram.len() <= 20, "{:?}", l.histogram);
        assert_eq!(l.histogram[0].from, 1, "from the shortest text");
        assert_eq!(l.histogram.last().unwrap().to, 5000);
        assert_eq!(l.histogram.iter().map(|b| b.count).sum::<u64>(), 101);
    }

    #[test]
    fn feature_columns_are_summarised() {
        let mut c = Collector::default();
        c.row(2, "a", None, &[1.0, 10.0]);
        c.row(3, "b", None, &[3.0, 10.0]);
        c.row(4, "b", None, &[1.0, 10.0]);
        c.missing_feature(1, 2);
        let stats = c.finish(&labels(&[("a", 1), ("b", 2)]), &["x".into(), "y".into()]);
        let x = &stats.features[0];
        assert_eq!((x.count, x.min, x.max), (3, Some(1.0), Some(3.0)));
        assert!((x.mean.unwrap() - 5.0 / 3.0).abs() < 1e-9);
        assert!((x.std.unwrap() - (8.0f64 / 9.0).sqrt()).abs() < 1e-9);
        assert_eq!(stats.features[1].missing, 1);
        assert_eq!(stats.features[1].std, Some(0.0));
        assert_eq!(
            stats.conflicting_texts, 1,
            "the same features labelled a and b"
        );
    }

    #[test]
    fn overlap_counts_the_rows_of_the_first_whose_text_the_second_has() {
        let mut test = Collector::default();
        test.row(1, "a", Some("shared one"), &[]);
        test.row(2, "a", Some("only in test"), &[]);
        test.row(3, "a", Some("shared  one"), &[]);
        test.row(4, "b", Some("shared two"), &[]);
        let mut train = Collector::default();
        train.row(1, "a", Some("shared two"), &[]);
        train.row(2, "b", Some("shared one"), &[]);
        train.row(3, "b", Some("training only"), &[]);
        let found = overlap(&test.encoded_keys(), &train.encoded_keys(), 10).unwrap();
        assert_eq!(
            found,
            Overlap {
                rows: 3,
                distinct: 2,
                lines: vec![1, 4]
            }
        );
        assert!(overlap(&[1, 2, 3], &train.encoded_keys(), 10).is_none());
    }
}
