//! How the API writes times: RFC 3339 in UTC, with milliseconds.

/// RFC 3339 UTC text of epoch milliseconds.
pub fn timestamp(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Epoch milliseconds of RFC 3339 text: `2026-11-27T10:00:00Z`, with optional fractional seconds and a
/// `Z` or `±HH:MM` offset (a date alone, `2026-11-27`, is its midnight UTC).
pub fn parse_timestamp(field: &str, raw: &str) -> Result<i64, super::FieldError> {
    let bad = || {
        super::FieldError::new(
            field,
            format!(
                "must be an RFC 3339 time such as 2026-11-27T10:00:00Z (got {})",
                super::abbreviate(raw, 40)
            ),
        )
    };
    let raw = raw.trim();
    if !raw.is_ascii() {
        return Err(bad());
    }
    let (date, rest) = raw.split_at(raw.len().min(10));
    let num = |s: &str| s.parse::<i64>().map_err(|_| bad());
    let parts: Vec<&str> = date.split('-').collect();
    if parts.len() != 3 || parts[0].len() != 4 || parts[1].len() != 2 || parts[2].len() != 2 {
        return Err(bad());
    }
    let (year, month, day) = (num(parts[0])?, num(parts[1])?, num(parts[2])?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return Err(bad());
    }
    let mut ms = days_from_civil(year, month, day) * 86_400_000;
    if rest.is_empty() {
        return Ok(ms);
    }
    let rest = rest.strip_prefix(['T', 't', ' ']).ok_or_else(bad)?;
    if rest.len() < 8 || &rest[2..3] != ":" || &rest[5..6] != ":" {
        return Err(bad());
    }
    let (h, m, sec) = (num(&rest[0..2])?, num(&rest[3..5])?, num(&rest[6..8])?);
    if h > 23 || m > 59 || sec > 60 {
        return Err(bad());
    }
    ms += (h * 3600 + m * 60 + sec) * 1000;
    let mut rest = &rest[8..];
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.chars().take_while(char::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let millis: String = fraction[..digits]
            .chars()
            .chain("000".chars())
            .take(3)
            .collect();
        ms += num(&millis)?;
        rest = &fraction[digits..];
    }
    match rest {
        "Z" | "z" => Ok(ms),
        offset if offset.len() == 6 && (offset.starts_with('+') || offset.starts_with('-')) => {
            let sign = if offset.starts_with('-') { -1 } else { 1 };
            if &offset[3..4] != ":" {
                return Err(bad());
            }
            let minutes = num(&offset[1..3])? * 60 + num(&offset[4..6])?;
            Ok(ms - sign * minutes * 60_000)
        }
        _ => Err(bad()),
    }
}

/// Days since 1970-01-01 of a civil date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_text_reads_back() {
        for ms in [0, 1_795_000_000_123, 951_782_400_000] {
            assert_eq!(
                super::parse_timestamp("since", &super::timestamp(ms)),
                Ok(ms)
            );
        }
        assert_eq!(
            super::parse_timestamp("since", "2026-11-18"),
            Ok(1_794_960_000_000)
        );
        assert_eq!(
            super::parse_timestamp("since", "2026-11-18T12:06:40.5+01:00"),
            Ok(1_795_000_000_500)
        );
        for bad in [
            "2026-11-18T10:00:00é",
            "yesterday",
            "2026-13-01",
            "2026-11-18T25:00:00Z",
            "2026-11-18T10:00:00",
            "",
        ] {
            assert_eq!(
                super::parse_timestamp("since", bad).unwrap_err().field,
                "since",
                "{bad}"
            );
        }
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(super::timestamp(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            super::timestamp(1_795_000_000_123),
            "2026-11-18T11:06:40.123Z"
        );
    }
}
