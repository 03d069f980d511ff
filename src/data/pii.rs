//! Finding personal data and secrets in a text: emails, phone numbers, credit-card numbers (Luhn),
//! US social security numbers, IPv4/IPv6 addresses, IBANs (mod 97) and secrets (AWS access keys,
//! bearer tokens, private-key headers, API keys with known prefixes).
//!
//! Precision matters as much as recall: each kind is read by a small hand-written scanner with the
//! checks its format allows (checksums, ranges, the separators it is written with, the words before
//! it), so that dates, version numbers, order numbers and numbers with a bad checksum are not taken
//! for personal data. Scanners run in linear time over the text and allocate only for what they find.

use std::collections::BTreeMap;
use std::net::Ipv6Addr;

pub use crate::domain::PiiKind;
use crate::domain::{MAX_PII_SAMPLES, PiiFindings, PiiReport, PiiSample};

/// One finding: its kind and its byte range in the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finding {
    pub kind: PiiKind,
    pub start: usize,
    pub end: usize,
}

/// Gathers a [`PiiReport`] over a file's texts, a row at a time.
#[derive(Debug, Default)]
pub struct PiiCollector {
    rows: u64,
    by_kind: BTreeMap<PiiKind, PiiFindings>,
}

impl PiiCollector {
    /// Scans the text of the row on `line`.
    pub fn text(&mut self, line: u64, text: &str) {
        let found = find(text);
        if found.is_empty() {
            return;
        }
        self.rows += 1;
        let mut kinds_in_row: Vec<PiiKind> = Vec::new();
        for f in &found {
            let entry = self.by_kind.entry(f.kind).or_insert_with(|| PiiFindings {
                kind: f.kind,
                count: 0,
                rows: 0,
                samples: Vec::new(),
            });
            entry.count += 1;
            if !kinds_in_row.contains(&f.kind) {
                kinds_in_row.push(f.kind);
                entry.rows += 1;
                if entry.samples.len() < MAX_PII_SAMPLES {
                    entry.samples.push(PiiSample {
                        line,
                        excerpt: masked_excerpt(text, &found, f),
                    });
                }
            }
        }
    }

    pub fn finish(&self) -> PiiReport {
        PiiReport {
            rows: self.rows,
            findings: self.by_kind.values().cloned().collect(),
        }
    }
}

/// A scanner: it pushes the byte range of each finding of its kind.
type Scanner = fn(&str, &mut Vec<(usize, usize)>);

/// Every finding in `text`, in order, none overlapping another (where two would, the one found by the
/// more specific scanner stays: secrets, then emails, IBANs, cards, SSNs, IP addresses, phones).
pub fn find(text: &str) -> Vec<Finding> {
    let mut found: Vec<Finding> = Vec::new();
    let scanners: [(PiiKind, Scanner); 7] = [
        (PiiKind::Secret, secrets),
        (PiiKind::Email, emails),
        (PiiKind::Iban, ibans),
        (PiiKind::CreditCard, cards),
        (PiiKind::Ssn, ssns),
        (PiiKind::IpAddress, ip_addresses),
        (PiiKind::Phone, phones),
    ];
    // What each scanner needs to find anything: most texts hold no `@`, many no digit.
    let bytes = text.as_bytes();
    let digits = bytes.iter().any(u8::is_ascii_digit);
    let at = memchr::memchr(b'@', bytes).is_some();
    let colon = memchr::memchr(b':', bytes).is_some();
    let mut spans = Vec::new();
    for (kind, scan) in scanners {
        let possible = match kind {
            PiiKind::Secret => true,
            PiiKind::Email => at,
            PiiKind::IpAddress => digits || colon,
            PiiKind::Iban | PiiKind::CreditCard | PiiKind::Ssn | PiiKind::Phone => digits,
        };
        if !possible {
            continue;
        }
        spans.clear();
        scan(text, &mut spans);
        for &(start, end) in &spans {
            if !found.iter().any(|f| start < f.end && f.start < end) {
                found.push(Finding { kind, start, end });
            }
        }
    }
    found.sort_by_key(|f| f.start);
    found
}

/// `text` with each finding of `kinds` replaced by its kind in brackets (`[EMAIL]`).
pub fn redact(text: &str, kinds: &[PiiKind]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for f in find(text) {
        if kinds.contains(&f.kind) {
            out.push_str(&text[at..f.start]);
            out.push('[');
            out.push_str(f.kind.as_str());
            out.push(']');
            at = f.end;
        }
    }
    out.push_str(&text[at..]);
    out
}

/// A window of `text` around `finding` (about 40 characters each side, whitespace collapsed), with
/// every finding in it masked: a user sees where the data is, not the data.
pub fn masked_excerpt(text: &str, findings: &[Finding], finding: &Finding) -> String {
    const CONTEXT: usize = 40;
    let start = back_chars(text, finding.start, CONTEXT);
    let end = forward_chars(text, finding.end, CONTEXT);
    let mut out = String::new();
    if start > 0 {
        out.push('…');
    }
    let mut at = start;
    for f in findings {
        if f.end <= start || f.start >= end {
            continue;
        }
        let (s, e) = (f.start.max(start), f.end.min(end));
        if s < at {
            continue;
        }
        out.push_str(&text[at..s]);
        out.push_str(&mask(f.kind, &text[s..e]));
        at = e;
    }
    out.push_str(&text[at..end]);
    if end < text.len() {
        out.push('…');
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn back_chars(text: &str, from: usize, n: usize) -> usize {
    text[..from]
        .char_indices()
        .rev()
        .nth(n.saturating_sub(1))
        .map_or(0, |(i, _)| i)
}

fn forward_chars(text: &str, from: usize, n: usize) -> usize {
    text[from..]
        .char_indices()
        .nth(n)
        .map_or(text.len(), |(i, _)| from + i)
}

/// A finding with its letters and digits hidden: an email keeps its first letter and its top-level
/// domain, a secret its first four characters (a known prefix), the rest their last two.
fn mask(kind: PiiKind, span: &str) -> String {
    const DOT: char = '•';
    let hide = |s: &str, keep_start: usize, keep_end: usize| -> String {
        let count = s.chars().filter(char::is_ascii_alphanumeric).count();
        let mut seen = 0;
        s.chars()
            .map(|c| {
                if !c.is_ascii_alphanumeric() {
                    return c;
                }
                seen += 1;
                if seen <= keep_start || seen > count.saturating_sub(keep_end) {
                    c
                } else {
                    DOT
                }
            })
            .collect()
    };
    match kind {
        PiiKind::Email => match span.rsplit_once('.') {
            Some((head, tld)) => format!("{}.{tld}", hide(head, 1, 0)),
            None => hide(span, 1, 0),
        },
        PiiKind::Secret => hide(span, 4, 0),
        _ => hide(span, 0, 2),
    }
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The word (letters only, lowercased) that ends just before `at`, skipping spaces, `:`, `#`, `.` and
/// `-` between them.
fn word_before(text: &str, at: usize) -> String {
    let bytes = text.as_bytes();
    let mut end = at;
    while end > 0
        && matches!(
            bytes[end - 1],
            b' ' | b'\t' | b':' | b'#' | b'.' | b'-' | b'='
        )
    {
        end -= 1;
    }
    let mut start = end;
    while start > 0 && bytes[start - 1].is_ascii_alphabetic() {
        start -= 1;
    }
    text[start..end].to_ascii_lowercase()
}

/// Words that, right before a number, say it is an identifier of something, not personal data.
const NOT_PERSONAL: [&str; 16] = [
    "order",
    "invoice",
    "ref",
    "reference",
    "ticket",
    "tracking",
    "id",
    "no",
    "number",
    "case",
    "sku",
    "item",
    "part",
    "serial",
    "confirmation",
    "booking",
];

/// Words that, right before a dotted quad, say it is a version.
const VERSION_WORDS: [&str; 12] = [
    "version", "ver", "v", "release", "build", "firmware", "rev", "revision", "upgrade", "update",
    "patch", "vers",
];

// ---- emails ----

fn emails(text: &str, out: &mut Vec<(usize, usize)>) {
    let bytes = text.as_bytes();
    let local_byte = |b: u8| b.is_ascii_alphanumeric() || b"._%+-".contains(&b);
    let mut search = 0;
    while let Some(pos) = text[search..].find('@').map(|p| p + search) {
        search = pos + 1;
        let mut start = pos;
        while start > 0 && local_byte(bytes[start - 1]) {
            start -= 1;
        }
        while start < pos && bytes[start] == b'.' {
            start += 1;
        }
        if start == pos || bytes[pos - 1] == b'.' {
            continue;
        }
        // The domain: labels of letters, digits and hyphens, joined by dots.
        let mut end = pos + 1;
        let mut last_dot = None;
        let mut label_len = 0;
        while end < bytes.len() {
            let b = bytes[end];
            if b.is_ascii_alphanumeric() || (b == b'-' && label_len > 0) {
                label_len += 1;
                end += 1;
            } else if b == b'.'
                && label_len > 0
                && end + 1 < bytes.len()
                && bytes[end + 1].is_ascii_alphanumeric()
            {
                last_dot = Some(end);
                label_len = 0;
                end += 1;
            } else {
                break;
            }
        }
        let Some(dot) = last_dot else { continue };
        let tld = &text[dot + 1..end];
        if tld.len() < 2 || !tld.bytes().all(|b| b.is_ascii_alphabetic()) {
            continue;
        }
        out.push((start, end));
        search = end;
    }
}

// ---- runs of digits with separators ----

/// A run of digit groups joined by single separators from `seps`: where it starts and ends, and its
/// groups' lengths. Runs are bounded: what comes before and after is neither a letter, a digit nor a
/// joining character.
struct DigitRun {
    start: usize,
    end: usize,
    groups: Vec<usize>,
    separators: Vec<u8>,
}

fn digit_runs(text: &str, seps: &[u8]) -> Vec<DigitRun> {
    let bytes = text.as_bytes();
    let mut runs = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_digit() || (i > 0 && (is_word_byte(bytes[i - 1]))) {
            i += 1;
            continue;
        }
        let start = i;
        let mut groups = Vec::new();
        let mut separators = Vec::new();
        loop {
            let group_start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            groups.push(i - group_start);
            if i + 1 < bytes.len() && seps.contains(&bytes[i]) && bytes[i + 1].is_ascii_digit() {
                separators.push(bytes[i]);
                i += 1;
            } else {
                break;
            }
        }
        let end = i;
        // A letter, digit or underscore right after: part of a longer token.
        if end < bytes.len() && is_word_byte(bytes[end]) {
            while i < bytes.len() && is_word_byte(bytes[i]) {
                i += 1;
            }
            continue;
        }
        runs.push(DigitRun {
            start,
            end,
            groups,
            separators,
        });
    }
    runs
}

fn digits_of(s: &str) -> Vec<u8> {
    s.bytes()
        .filter(u8::is_ascii_digit)
        .map(|b| b - b'0')
        .collect()
}

fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, &d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(d);
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}

/// Whether a card number's first digits and length are those of a card network (Visa, Mastercard,
/// American Express, Discover, JCB, Diners Club, UnionPay, Maestro).
fn card_network(d: &[u8]) -> bool {
    let n = d.len();
    let prefix = |k: usize| d.iter().take(k).fold(0u32, |a, &x| a * 10 + u32::from(x));
    match d.first() {
        Some(4) => [13, 16, 19].contains(&n),
        Some(5) => {
            (51..=55).contains(&prefix(2)) && n == 16
                || n >= 12 && [50, 56, 57, 58].contains(&prefix(2))
        }
        Some(2) => (2221..=2720).contains(&prefix(4)) && n == 16,
        Some(3) => {
            ([34, 37].contains(&prefix(2)) && n == 15)
                || ((3528..=3589).contains(&prefix(4)) && (16..=19).contains(&n))
                || ([36, 38, 39].contains(&prefix(2)) || (300..=305).contains(&prefix(3)))
                    && (14..=19).contains(&n)
        }
        Some(6) => {
            (prefix(4) == 6011
                || prefix(2) == 65
                || (644..=649).contains(&prefix(3))
                || prefix(2) == 62
                || prefix(2) == 67)
                && (16..=19).contains(&n)
        }
        _ => false,
    }
}

fn cards(text: &str, out: &mut Vec<(usize, usize)>) {
    for run in digit_runs(text, b" -") {
        // One kind of separator, between groups of 3 to 6 digits; or no separator at all.
        let mixed = run.separators.windows(2).any(|w| w[0] != w[1]);
        if mixed
            || (!run.separators.is_empty() && run.groups.iter().any(|&g| !(3..=6).contains(&g)))
        {
            continue;
        }
        let digits = digits_of(&text[run.start..run.end]);
        if (13..=19).contains(&digits.len()) && card_network(&digits) && luhn(&digits) {
            out.push((run.start, run.end));
        }
    }
}

fn ssns(text: &str, out: &mut Vec<(usize, usize)>) {
    for run in digit_runs(text, b"-") {
        if run.groups != [3, 2, 4] {
            continue;
        }
        let d = digits_of(&text[run.start..run.end]);
        let area = u32::from(d[0]) * 100 + u32::from(d[1]) * 10 + u32::from(d[2]);
        let group = u32::from(d[3]) * 10 + u32::from(d[4]);
        let serial = d[5..].iter().fold(0u32, |a, &x| a * 10 + u32::from(x));
        if area == 0 || area == 666 || area >= 900 || group == 0 || serial == 0 {
            continue;
        }
        if NOT_PERSONAL.contains(&word_before(text, run.start).as_str()) {
            continue;
        }
        out.push((run.start, run.end));
    }
}

fn ip_addresses(text: &str, out: &mut Vec<(usize, usize)>) {
    let bytes = text.as_bytes();
    // IPv4: four decimal octets, not part of a longer dotted run, not a version.
    let dotted = memchr::memchr(b'.', bytes).is_some();
    for run in if dotted {
        digit_runs(text, b".")
    } else {
        Vec::new()
    } {
        if run.groups.len() != 4 || run.groups.iter().any(|&g| g > 3) {
            continue;
        }
        let octets_ok = text[run.start..run.end]
            .split('.')
            .all(|o| o.parse::<u16>().is_ok_and(|v| v <= 255) && (o == "0" || !o.starts_with('0')));
        let dotted_on = (run.end + 1 < bytes.len()
            && bytes[run.end] == b'.'
            && bytes[run.end + 1].is_ascii_digit())
            || (run.start >= 2
                && bytes[run.start - 1] == b'.'
                && bytes[run.start - 2].is_ascii_digit());
        let versioned = run.start > 0 && matches!(bytes[run.start - 1], b'v' | b'V')
            || VERSION_WORDS.contains(&word_before(text, run.start).as_str());
        if octets_ok && !dotted_on && !versioned {
            out.push((run.start, run.end));
        }
    }
    // IPv6: a run of hex digits and colons (and a trailing dotted quad) that parses as an address
    // with at least three groups written.
    if memchr::memchr(b':', bytes).is_none() {
        return;
    }
    let hexish = |b: u8| b.is_ascii_hexdigit() || b == b':' || b == b'.';
    let mut i = 0;
    while i < bytes.len() {
        if !hexish(bytes[i]) || (i > 0 && (is_word_byte(bytes[i - 1]) || bytes[i - 1] == b':')) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && hexish(bytes[i]) {
            i += 1;
        }
        let mut end = i;
        while end > start && bytes[end - 1] == b'.' {
            end -= 1;
        }
        if i < bytes.len() && is_word_byte(bytes[i]) {
            continue;
        }
        let candidate = &text[start..end];
        let colons = candidate.bytes().filter(|&b| b == b':').count();
        let groups = candidate.split(':').filter(|g| !g.is_empty()).count();
        if colons >= 2 && groups >= 3 && candidate.parse::<Ipv6Addr>().is_ok() {
            out.push((start, end));
        }
    }
}

fn phones(text: &str, out: &mut Vec<(usize, usize)>) {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let starts = (b == b'+' || b == b'(' || b.is_ascii_digit())
            && (i == 0
                || !(is_word_byte(bytes[i - 1])
                    || bytes[i - 1] == b'+'
                    || bytes[i - 1] == b'-'
                    || bytes[i - 1] == b'.'));
        if !starts {
            i += 1;
            continue;
        }
        match phone_at(text, i) {
            Some(end) => {
                if !NOT_PERSONAL.contains(&word_before(text, i).as_str()) {
                    out.push((i, end));
                }
                i = end;
            }
            None => i += 1,
        }
    }
}

/// A phone number starting at `start`: international (`+`, a country code, 8–15 digits in groups) or
/// North American (`(415) 555-0132`, `415-555-0132`, `415.555.0132`, `+1 415 555 0132`), with its
/// groups separated as people write them. Returns where it ends.
fn phone_at(text: &str, start: usize) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut i = start;
    let international = bytes[i] == b'+';
    if international {
        i += 1;
    }
    // Groups of digits, the first possibly in parentheses, separated by one space, hyphen or dot.
    let mut groups: Vec<usize> = Vec::new();
    let mut seps: Vec<u8> = Vec::new();
    let mut parenthesised = false;
    loop {
        let open = i < bytes.len() && bytes[i] == b'(';
        if open {
            // Parentheses go around the first group, or the one after an international code.
            let may_open = groups.is_empty() || (international && groups.len() == 1);
            if !may_open {
                break;
            }
            i += 1;
        }
        let g = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if i == g {
            if open {
                return None;
            }
            break;
        }
        groups.push(i - g);
        if open {
            if i >= bytes.len() || bytes[i] != b')' {
                return None;
            }
            i += 1;
            parenthesised = true;
        }
        // A separator, then more digits (or a parenthesised group).
        let sep_at = i;
        let mut j = i;
        if j < bytes.len() && matches!(bytes[j], b' ' | b'-' | b'.') {
            j += 1;
        }
        if j < bytes.len()
            && (bytes[j].is_ascii_digit() || bytes[j] == b'(')
            && (j > sep_at || open)
        {
            seps.push(if j > sep_at { bytes[sep_at] } else { b' ' });
            i = j;
        } else {
            break;
        }
    }
    // What follows must end the number.
    if i < bytes.len()
        && (is_word_byte(bytes[i])
            || (bytes[i] == b'-' || bytes[i] == b'.')
                && i + 1 < bytes.len()
                && bytes[i + 1].is_ascii_digit())
    {
        return None;
    }
    let total: usize = groups.iter().sum();
    if international {
        let country = *groups.first()?;
        let plausible = (1..=3).contains(&country)
            && groups.len() >= 3
            && (8..=15).contains(&total)
            && groups[1..].iter().all(|&g| (1..=5).contains(&g));
        return plausible.then_some(i);
    }
    // North American: (ddd) ddd-dddd or ddd-ddd-dddd (one kind of separator), optionally led by a
    // 1; area code and exchange start with 2–9.
    let (lead, rest) = match groups.as_slice() {
        [1, rest @ ..] => (true, rest),
        rest => (false, rest),
    };
    if rest != [3, 3, 4] {
        return None;
    }
    let seps = if lead { &seps[1..] } else { &seps[..] };
    let uniform = seps.windows(2).all(|w| w[0] == w[1]) || parenthesised;
    if !uniform {
        return None;
    }
    let digits = digits_of(&text[start..i]);
    let digits = if lead { &digits[1..] } else { &digits[..] };
    if digits[0] < 2 || digits[3] < 2 {
        return None;
    }
    // 555-01xx numbers are fictional but shaped like real ones; they count, as users plant them.
    Some(i)
}

// ---- IBANs ----

/// IBAN lengths by country (ISO 13616 registry).
const IBAN_LENGTHS: [(&str, usize); 60] = [
    ("AD", 24),
    ("AE", 23),
    ("AL", 28),
    ("AT", 20),
    ("AZ", 28),
    ("BA", 20),
    ("BE", 16),
    ("BG", 22),
    ("BH", 22),
    ("BR", 29),
    ("CH", 21),
    ("CR", 22),
    ("CY", 28),
    ("CZ", 24),
    ("DE", 22),
    ("DK", 18),
    ("DO", 28),
    ("EE", 20),
    ("EG", 29),
    ("ES", 24),
    ("FI", 18),
    ("FO", 18),
    ("FR", 27),
    ("GB", 22),
    ("GE", 22),
    ("GI", 23),
    ("GL", 18),
    ("GR", 27),
    ("GT", 28),
    ("HR", 21),
    ("HU", 28),
    ("IE", 22),
    ("IL", 23),
    ("IS", 26),
    ("IT", 27),
    ("JO", 30),
    ("KW", 30),
    ("KZ", 20),
    ("LB", 28),
    ("LI", 21),
    ("LT", 20),
    ("LU", 20),
    ("LV", 21),
    ("MC", 27),
    ("MD", 24),
    ("ME", 22),
    ("MK", 19),
    ("MR", 27),
    ("MT", 31),
    ("MU", 30),
    ("NL", 18),
    ("NO", 15),
    ("PK", 24),
    ("PL", 28),
    ("PT", 25),
    ("QA", 29),
    ("RO", 24),
    ("RS", 22),
    ("SA", 24),
    ("SE", 24),
];
const IBAN_LENGTHS_MORE: [(&str, usize); 8] = [
    ("SI", 19),
    ("SK", 24),
    ("SM", 27),
    ("TN", 24),
    ("TR", 26),
    ("UA", 29),
    ("VG", 24),
    ("XK", 20),
];

fn iban_length(country: &str) -> Option<usize> {
    IBAN_LENGTHS
        .iter()
        .chain(IBAN_LENGTHS_MORE.iter())
        .find(|(c, _)| *c == country)
        .map(|&(_, n)| n)
}

fn mod97(chars: &[u8]) -> bool {
    // Move the first four characters to the end; letters count 10–35.
    let mut remainder = 0u32;
    for &c in chars[4..].iter().chain(&chars[..4]) {
        let value = if c.is_ascii_digit() {
            u32::from(c - b'0')
        } else {
            u32::from(c - b'A') + 10
        };
        remainder = if value >= 10 {
            (remainder * 100 + value) % 97
        } else {
            (remainder * 10 + value) % 97
        };
    }
    remainder == 1
}

fn ibans(text: &str, out: &mut Vec<(usize, usize)>) {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i + 4 <= bytes.len() {
        let starts = bytes[i].is_ascii_uppercase()
            && bytes[i + 1].is_ascii_uppercase()
            && bytes[i + 2].is_ascii_digit()
            && bytes[i + 3].is_ascii_digit()
            && (i == 0 || !is_word_byte(bytes[i - 1]));
        if !starts {
            i += 1;
            continue;
        }
        let Some(length) = iban_length(&text[i..i + 2]) else {
            i += 1;
            continue;
        };
        // Upper-case letters and digits, in groups of four separated by single spaces, or unbroken.
        let mut chars = Vec::with_capacity(34);
        let mut j = i;
        while j < bytes.len() && chars.len() < length {
            let b = bytes[j];
            if b.is_ascii_digit() || b.is_ascii_uppercase() {
                chars.push(b);
                j += 1;
            } else if b == b' '
                && chars.len() % 4 == 0
                && j + 1 < bytes.len()
                && bytes[j + 1].is_ascii_alphanumeric()
            {
                j += 1;
            } else {
                break;
            }
        }
        let ends = j == bytes.len() || !is_word_byte(bytes[j]);
        if chars.len() == length && ends && mod97(&chars) {
            out.push((i, j));
            i = j;
        } else {
            i += 1;
        }
    }
}

// ---- secrets ----

fn secrets(text: &str, out: &mut Vec<(usize, usize)>) {
    let bytes = text.as_bytes();
    let token_byte = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
    // A token made of `token_byte`s starting at `at`: where it ends.
    let token_end = |at: usize| {
        let mut e = at;
        while e < bytes.len() && token_byte(bytes[e]) {
            e += 1;
        }
        e
    };
    let mut i = 0;
    while i < bytes.len() {
        if i > 0 && token_byte(bytes[i - 1]) || !bytes[i].is_ascii_alphabetic() {
            i += 1;
            continue;
        }
        let end = token_end(i);
        let token = &text[i..end];
        if is_key_token(token) {
            out.push((i, end));
        }
        i = end.max(i + 1);
    }
    // Bearer tokens: the word (any case), one space, then at least 20 token characters. Found without
    // a lowercased copy of every text: this runs on each row of a dataset.
    const BEARER: &[u8] = b"bearer ";
    let mut search = 0;
    while let Some(pos) = memchr::memchr2_iter(b'b', b'B', bytes.get(search..).unwrap_or(&[]))
        .map(|p| p + search)
        .find(|&p| {
            bytes
                .get(p..p + BEARER.len())
                .is_some_and(|w| w.eq_ignore_ascii_case(BEARER))
        })
    {
        search = pos + BEARER.len();
        if pos > 0 && is_word_byte(bytes[pos - 1]) {
            continue;
        }
        let start = pos + 7;
        let mut end = start;
        while end < bytes.len() && (token_byte(bytes[end]) || b"._~+/=".contains(&bytes[end])) {
            end += 1;
        }
        if end - start >= 20 && bytes[start..end].iter().any(u8::is_ascii_digit) {
            out.push((pos, end));
            search = end;
        }
    }
    // Private keys: their PEM header, up to its closing dashes.
    let mut search = 0;
    while let Some(pos) = text[search..].find("-----BEGIN ").map(|p| p + search) {
        search = pos + 11;
        let Some(close) = text[search..].find("-----").map(|p| p + search) else {
            break;
        };
        let label = &text[search..close];
        if label.ends_with("PRIVATE KEY") && label.len() <= 40 {
            out.push((pos, close + 5));
            search = close + 5;
        }
    }
}

/// The shortest key [`is_key_token`] accepts (a Slack token: `xoxb-` and 10 more).
const SHORTEST_KEY: usize = 15;

/// Whether a token is an access key or API key by its known prefix and shape.
fn is_key_token(token: &str) -> bool {
    if token.len() < SHORTEST_KEY {
        return false;
    }
    let alnum = |s: &str| s.bytes().all(|b| b.is_ascii_alphanumeric());
    let upper_alnum = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    };
    const AWS: [&str; 8] = [
        "AKIA", "ASIA", "AGPA", "AIDA", "AROA", "ANPA", "ANVA", "AIPA",
    ];
    if token.len() == 20 && AWS.iter().any(|p| token.starts_with(p)) && upper_alnum(token) {
        return true;
    }
    const GITHUB: [&str; 5] = ["ghp_", "gho_", "ghu_", "ghs_", "ghr_"];
    if let Some(p) = GITHUB.iter().find(|p| token.starts_with(**p)) {
        return token.len() == p.len() + 36 && alnum(&token[p.len()..]);
    }
    if let Some(rest) = token.strip_prefix("github_pat_") {
        return rest.len() >= 22;
    }
    if let Some(rest) = token.strip_prefix("glpat-") {
        return rest.len() >= 20;
    }
    for p in ["xoxb-", "xoxp-", "xoxa-", "xoxr-", "xoxs-"] {
        if let Some(rest) = token.strip_prefix(p) {
            return rest.len() >= 10 && rest.bytes().any(|b| b.is_ascii_digit());
        }
    }
    for p in ["sk_live_", "rk_live_", "sk_test_", "pk_live_"] {
        if let Some(rest) = token.strip_prefix(p) {
            return rest.len() >= 16 && alnum(rest);
        }
    }
    if let Some(rest) = token.strip_prefix("AIza") {
        return rest.len() == 35;
    }
    if let Some(rest) = token.strip_prefix("sk-") {
        // OpenAI (sk-…, sk-proj-…) and Anthropic (sk-ant-…) keys.
        return rest.len() >= 32 && rest.bytes().any(|b| b.is_ascii_digit());
    }
    if let Some(rest) = token.strip_prefix("npm_") {
        return rest.len() == 36 && alnum(rest);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<(PiiKind, &str)> {
        find(text)
            .into_iter()
            .map(|f| (f.kind, &text[f.start..f.end]))
            .collect()
    }

    #[test]
    fn each_kind_is_found_in_the_ways_people_write_it() {
        use PiiKind::*;
        let cases: [(&str, Vec<(PiiKind, &str)>); 16] = [
            (
                "mail jane.doe+x@mail.example.com now",
                vec![(Email, "jane.doe+x@mail.example.com")],
            ),
            (
                "call (415) 555-0132 or +44 20 7946 0958",
                vec![(Phone, "(415) 555-0132"), (Phone, "+44 20 7946 0958")],
            ),
            (
                "tel 415.555.0199, cell 1-650-253-0000",
                vec![(Phone, "415.555.0199"), (Phone, "1-650-253-0000")],
            ),
            (
                "card 4111 1111 1111 1111 exp",
                vec![(CreditCard, "4111 1111 1111 1111")],
            ),
            (
                "amex 378282246310005.",
                vec![(CreditCard, "378282246310005")],
            ),
            ("ssn 123-45-6789", vec![(Ssn, "123-45-6789")]),
            (
                "from 192.168.1.20 and 2001:db8::8a2e:370:7334",
                vec![
                    (IpAddress, "192.168.1.20"),
                    (IpAddress, "2001:db8::8a2e:370:7334"),
                ],
            ),
            (
                "pay DE89 3704 0044 0532 0130 00 today",
                vec![(Iban, "DE89 3704 0044 0532 0130 00")],
            ),
            (
                "iban GB82WEST12345698765432",
                vec![(Iban, "GB82WEST12345698765432")],
            ),
            (
                "key AKIAIOSFODNN7EXAMPLE here",
                vec![(Secret, "AKIAIOSFODNN7EXAMPLE")],
            ),
            (
                "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.abc123",
                vec![(Secret, "Bearer eyJhbGciOiJIUzI1NiJ9.e30.abc123")],
            ),
            (
                "-----BEGIN RSA PRIVATE KEY-----\nMIIE",
                vec![(Secret, "-----BEGIN RSA PRIVATE KEY-----")],
            ),
            (
                "token ghp_abcdefghijklmnopqrstuvwxyz0123456789",
                vec![(Secret, "ghp_abcdefghijklmnopqrstuvwxyz0123456789")],
            ),
            (
                "stripe sk_live_4eC39HqLyjWDarjtT1zdp7dc",
                vec![(Secret, "sk_live_4eC39HqLyjWDarjtT1zdp7dc")],
            ),
            (
                "google AIzaSyD-abcdefghijklmnopqrstuvwxyz01234",
                vec![(Secret, "AIzaSyD-abcdefghijklmnopqrstuvwxyz01234")],
            ),
            (
                "slack xoxb-123456789012-abcdef",
                vec![(Secret, "xoxb-123456789012-abcdef")],
            ),
        ];
        for (text, want) in cases {
            assert_eq!(kinds(text), want, "in {text:?}");
        }
    }

    #[test]
    fn near_misses_are_not_personal_data() {
        let misses = [
            "card 4111 1111 1111 1112 fails its checksum",
            "released on 2024-01-15 at 12:30:45",
            "upgrade to version 1.2.3.4 or v10.0.0.1",
            "order 415-555-0132 shipped",
            "invoice #650-253-0000",
            "tracking number 1Z999AA10123456784",
            "iban DE89 3704 0044 0532 0130 01 has a bad check",
            "pi is 3.14159265358979 and e is 2.718281828",
            "isbn 978-3-16-148410-0",
            "000-12-3456 and 666-12-3456 are not issued",
            "the ratio was 1.2.3 in 10.0.0",
            "call me at 12345",
            "AKIA is a prefix, AKIAshort is not a key",
            "user@localhost is not a routable address",
            "a 1234567890123456 sixteen digit id",
            "time 12:30 and 10:45:00",
        ];
        for text in misses {
            assert_eq!(kinds(text), vec![], "in {text:?}");
        }
    }

    #[test]
    fn redaction_and_excerpts_hide_what_was_found() {
        let text = "write to jane@example.com or call 415-555-0132 today";
        assert_eq!(
            redact(text, &[PiiKind::Email]),
            "write to [EMAIL] or call 415-555-0132 today"
        );
        assert_eq!(
            redact(text, &PiiKind::ALL),
            "write to [EMAIL] or call [PHONE] today"
        );
        let found = find(text);
        let excerpt = masked_excerpt(text, &found, &found[1]);
        assert!(excerpt.contains("•••-•••-••32"), "{excerpt}");
        assert!(excerpt.contains("j•••@•••••••.com"), "{excerpt}");
        assert!(!excerpt.contains("jane"), "{excerpt}");
    }
}
