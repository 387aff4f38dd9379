//! Human durations as written in the manifest and on the command line: `"500ms"`,
//! `"10s"`, `"5m"`, `"1h"`, and sums such as `"1m30s"`.

use std::time::Duration;

/// Parses a duration such as `"500ms"`, `"10s"`, `"1m30s"` or `"2h"`.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration; write it like \"500ms\", \"10s\" or \"5m\"".into());
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!(
                "invalid duration `{text}`: expected a number followed by a unit (ms, s, m, h, d)"
            ));
        }
        let value: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("invalid duration `{text}`: number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let part = match unit {
            "ms" => Duration::from_millis(value),
            "s" => Duration::from_secs(value),
            "m" => Duration::from_secs(value.saturating_mul(60)),
            "h" => Duration::from_secs(value.saturating_mul(3600)),
            "d" => Duration::from_secs(value.saturating_mul(24 * 3600)),
            "" => {
                return Err(format!(
                    "invalid duration `{text}`: missing unit after {value} (ms, s, m, h or d)"
                ));
            }
            other => {
                return Err(format!(
                    "invalid duration `{text}`: unknown unit `{other}` (use ms, s, m, h or d)"
                ));
            }
        };
        total = total.saturating_add(part);
    }
    Ok(total)
}

/// Formats a duration the way [`parse`] reads it back.
pub fn format(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        "0ms".into()
    } else if ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_sums() {
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("2h"), Ok(Duration::from_secs(7200)));
    }

    #[test]
    fn rejects_missing_or_unknown_units() {
        assert!(parse("10").unwrap_err().contains("missing unit"));
        assert!(parse("10 sec").unwrap_err().contains("unknown unit"));
        assert!(parse("s").unwrap_err().contains("expected a number"));
        assert!(parse("").is_err());
    }

    #[test]
    fn format_round_trips() {
        for text in ["500ms", "10s", "5m", "1h", "1500ms"] {
            assert_eq!(format(parse(text).unwrap()), text);
        }
    }
}
