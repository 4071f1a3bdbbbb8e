//! Calendar arithmetic and the one timestamp format the gateway writes (RFC 3339 UTC
//! with milliseconds), without a time-zone database: every time the gateway shows is
//! UTC.

use crate::clock::Micros;

/// Formats microseconds since the epoch as RFC 3339 UTC with milliseconds,
/// e.g. `2026-11-22T09:30:00.123Z`. Sub-millisecond digits are truncated.
pub fn format_rfc3339_millis(time_us: i64) -> String {
    let ms = time_us.div_euclid(1_000);
    let secs = ms.div_euclid(1_000);
    let milli = ms.rem_euclid(1_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{milli:03}Z",
        sod / 3_600,
        (sod % 3_600) / 60,
        sod % 60
    )
}

/// Howard Hinnant's civil-from-days: days since 1970-01-01 -> (year, month, day).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March-based
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    // Ranges above make these casts lossless.
    (y, m as u32, d as u32)
}

/// The first instant of the current calendar month (UTC).
pub fn month_start(now_us: Micros) -> Micros {
    let days = now_us.div_euclid(86_400_000_000);
    let (y, m, _) = civil_from_days(days);
    days_from_civil(y, m, 1) * 86_400_000_000
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_formatting() {
        assert_eq!(format_rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_rfc3339_millis(1_700_000_000_123_456),
            "2023-11-14T22:13:20.123Z"
        );
        // 2024-02-29T12:34:56.789Z = 1709210096 s
        assert_eq!(
            format_rfc3339_millis(1_709_210_096_789_999),
            "2024-02-29T12:34:56.789Z"
        );
        // 2024-03-01T00:00:00Z = 1709251200 s: day after the leap day.
        assert_eq!(
            format_rfc3339_millis(1_709_251_200_000_000),
            "2024-03-01T00:00:00.000Z"
        );
        // 2000-02-29 (400-year leap) = 951782400 s.
        assert_eq!(
            format_rfc3339_millis(951_782_400_000_000),
            "2000-02-29T00:00:00.000Z"
        );
        assert_eq!(format_rfc3339_millis(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(
            format_rfc3339_millis(1_795_339_800_123_000),
            "2026-11-22T09:30:00.123Z"
        );
    }

    #[test]
    fn month_start_is_first_of_month() {
        // 2026-11-22T09:00:00Z -> 2026-11-01T00:00:00Z
        let now = 1_795_338_000_000_000;
        assert_eq!(
            format_rfc3339_millis(month_start(now)),
            "2026-11-01T00:00:00.000Z"
        );
    }
}
