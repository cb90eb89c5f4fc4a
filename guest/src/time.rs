//! RFC 3339 timestamps as whole seconds since the Unix epoch, without a clock.
//!
//! The module reads no clock: `now` comes in the snapshot. Kubernetes writes times
//! with second precision (`2026-11-26T12:00:00Z`); hosts may add fractions or an
//! offset, which are accepted and dropped (fractions) or applied (offsets).

/// Parses an RFC 3339 date-time into seconds since the epoch.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let separators = [(4, b'-'), (7, b'-'), (13, b':'), (16, b':')];
    if b.len() < 20 || separators.iter().any(|&(i, c)| b[i] != c) || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let (year, month, day) = (digits(&b[0..4])?, digits(&b[5..7])?, digits(&b[8..10])?);
    let (hour, minute, second) = (digits(&b[11..13])?, digits(&b[14..16])?, digits(&b[17..19])?);
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut rest = &b[19..];
    if let Some((b'.', fraction)) = rest.split_first() {
        let n = fraction.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return None;
        }
        rest = &fraction[n..];
    }
    let offset = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let (hours, minutes) = (digits(&[*h1, *h2])?, digits(&[*m1, *m2])?);
            if hours > 23 || minutes > 59 {
                return None;
            }
            let offset = hours * 3600 + minutes * 60;
            if *sign == b'-' { -offset } else { offset }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    Some(days * 86_400 + hour * 3600 + minute * 60 + second.min(59) - offset)
}

/// Formats seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ`, as Kubernetes does.
pub fn format_rfc3339(seconds: i64) -> String {
    let (year, month, day) = civil_from_days(seconds.div_euclid(86_400));
    let secs = seconds.rem_euclid(86_400);
    let (hour, minute, second) = (secs / 3600, secs % 3600 / 60, secs % 60);
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}Z")
}

/// The number the ASCII digits `b` spell, if they all are digits.
fn digits(b: &[u8]) -> Option<i64> {
    b.iter().try_fold(0i64, |acc, c| c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0')))
}

fn days_in_month(year: i64, month: i64) -> i64 {
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// Howard Hinnant's `days_from_civil` / `civil_from_days` (proleptic Gregorian).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kubernetes_and_host_timestamps() {
        let cases = [
            ("1970-01-01T00:00:00Z", Some(0)),
            ("2026-11-26T12:00:00Z", Some(1_795_694_400)),
            ("2026-11-26T12:00:00.987654321Z", Some(1_795_694_400)),
            ("2026-11-26T13:30:00+01:30", Some(1_795_694_400)),
            ("2026-11-26T10:00:00-02:00", Some(1_795_694_400)),
            ("2024-02-29T00:00:00Z", Some(1_709_164_800)),
            ("2025-02-29T00:00:00Z", None),
            ("2026-11-26T12:00:00", None),
            ("2026-11-26 12:00:00Z", Some(1_795_694_400)),
            ("2026-13-01T00:00:00Z", None),
            ("2026-11-26T24:00:00Z", None),
            ("2026-11-26T12:00:00.Z", None),
            ("yesterday", None),
            ("", None),
            ("2026-11-26T12:00:00Zjunk", None),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_rfc3339(text), expected, "{text}");
        }
    }

    #[test]
    fn formats_whole_seconds_in_utc() {
        for text in
            ["1970-01-01T00:00:00Z", "2026-11-26T12:00:00Z", "2024-02-29T23:59:59Z", "1969-12-31T23:59:59Z"]
        {
            let seconds = parse_rfc3339(text).expect("parses");
            assert_eq!(format_rfc3339(seconds), text);
        }
        // Times spread over four years around 1970, against the formatting machinery.
        for seconds in (-86_400_i64 * 800..86_400 * 800).step_by(86_400 / 4 + 7).chain([253_402_300_799]) {
            let days = seconds.div_euclid(86_400);
            let secs = seconds.rem_euclid(86_400);
            let (y, m, d) = civil_from_days(days);
            let expected =
                format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs % 3600 / 60, secs % 60);
            assert_eq!(format_rfc3339(seconds), expected);
        }
        assert_eq!(format_rfc3339(253_402_300_800), "10000-01-01T00:00:00Z", "beyond four digits");
    }
}
