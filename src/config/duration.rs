//! Durations in the config: parsed from a number with a unit (`"2s"`, `"500ms"`, `"1.5s"`,
//! `"1h30m"`) and printed back in the same short form (`1.5s`, never `1s 500ms`).

use std::time::Duration;

/// The units a duration may be written in, with their length in nanoseconds.
const UNITS: [(&str, u128); 8] = [
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
    ("d", 86_400_000_000_000),
];

/// Parses `"2s"`, `"500ms"`, `"1.5s"`, `"1h30m"` (parts may be separated by spaces). The
/// error says what is wrong, for the caller to put in its message.
pub fn parse(text: &str) -> Result<Duration, &'static str> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err("it is empty");
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_len);
        if number.is_empty() {
            return Err("a number must come first");
        }
        let after = after.trim_start();
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.' || c == ' ')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        if unit.is_empty() {
            return Err("the number has no unit");
        }
        let scale = UNITS
            .iter()
            .find(|(name, _)| *name == unit)
            .map(|(_, scale)| *scale)
            .ok_or("the unit is not one of ms, s, m, h (or ns, us, d)")?;
        total = total
            .checked_add(scaled(number, scale)?)
            .ok_or("it is too long")?;
        rest = after.trim_start();
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| "it is too long")?;
    Ok(Duration::new(secs, (total % 1_000_000_000) as u32))
}

/// `number` (digits, at most one `.`) times `scale` nanoseconds.
fn scaled(number: &str, scale: u128) -> Result<u128, &'static str> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() || fraction.contains('.') {
        return Err("the number is malformed");
    }
    let whole: u128 = whole.parse().map_err(|_| "it is too long")?;
    let mut nanos = whole.checked_mul(scale).ok_or("it is too long")?;
    let mut unit = scale;
    for digit in fraction.bytes() {
        unit /= 10;
        nanos += u128::from(digit - b'0') * unit;
    }
    Ok(nanos)
}

/// The duration in the shortest exact form of one unit: `2h`, `90s`, `1.5s`, `500ms`.
pub fn show(d: Duration) -> String {
    let nanos = d.as_nanos();
    let exact = |unit: u128| nanos % unit == 0;
    if nanos == 0 {
        return "0s".to_owned();
    }
    for (name, unit) in [("h", 3_600_000_000_000), ("m", 60_000_000_000)] {
        if exact(unit) {
            return format!("{}{name}", nanos / unit);
        }
    }
    if nanos >= 1_000_000_000 {
        return decimal(nanos, 1_000_000_000, "s");
    }
    if nanos >= 1_000_000 {
        return decimal(nanos, 1_000_000, "ms");
    }
    if nanos >= 1_000 {
        return decimal(nanos, 1_000, "us");
    }
    format!("{nanos}ns")
}

/// `nanos / unit` with as many decimals as it needs.
fn decimal(nanos: u128, unit: u128, name: &str) -> String {
    let whole = nanos / unit;
    let fraction = nanos % unit;
    if fraction == 0 {
        return format!("{whole}{name}");
    }
    let digits = unit.ilog10() as usize;
    let text = format!("{fraction:0digits$}");
    format!("{whole}.{}{name}", text.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_shows_as_written() {
        for text in [
            "2s", "500ms", "1.5s", "90s", "2h", "30m", "250us", "0s", "1.25ms",
        ] {
            let d = parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(show(d), text);
        }
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("2s 500ms"), Ok(Duration::from_millis(2500)));
        assert_eq!(show(Duration::from_millis(2500)), "2.5s");
    }

    #[test]
    fn rejects_with_a_reason() {
        for (text, why) in [
            ("2", "the number has no unit"),
            ("5", "the number has no unit"),
            ("fast", "a number must come first"),
            (
                "2 parsecs",
                "the unit is not one of ms, s, m, h (or ns, us, d)",
            ),
            ("", "it is empty"),
            ("1..5s", "the number is malformed"),
            ("99999999999999999999999999999h", "it is too long"),
        ] {
            assert_eq!(parse(text), Err(why), "{text}");
        }
    }
}
