//! Timestamps in responses, written as chrono's serde writes them (RFC 3339 in UTC,
//! `Z`, with 0, 3, 6 or 9 digits of fraction as needed) without going through
//! `Display`: chrono's formatter took ~2,700 instructions per timestamp, a tenth of the
//! list route's server time with two timestamps per agent (`bench/profile.sh`). And
//! `timestamptz` columns of text-format rows read without chrono's format-string parser
//! (`PgTimestamp`).

use chrono::{DateTime, Datelike, NaiveDate, TimeDelta, Timelike, Utc};
use serde::{Serialize, Serializer};
use sqlx::postgres::{PgTypeInfo, PgValueFormat, PgValueRef};
use sqlx::{Decode, Postgres, Type};

/// A `timestamptz` column, for `#[sqlx(try_from = "PgTimestamp")]` on a `DateTime<Utc>`
/// field of rows that come in the text format (a simple query's, as the agents list's):
/// sqlx reads those with chrono's format-string parser, ~5 % of the list route's server
/// time in `perf` for two timestamps per agent. PostgreSQL's ISO output
/// (`2026-12-07 18:48:09.990136+00`) is read directly; anything else (another
/// `DateStyle`, `infinity`, years past 9999 or BC) and the binary format go to sqlx's own
/// decoder.
pub struct PgTimestamp(DateTime<Utc>);

impl From<PgTimestamp> for DateTime<Utc> {
    fn from(at: PgTimestamp) -> DateTime<Utc> {
        at.0
    }
}

impl Type<Postgres> for PgTimestamp {
    fn type_info() -> PgTypeInfo {
        <DateTime<Utc> as Type<Postgres>>::type_info()
    }

    fn compatible(ty: &PgTypeInfo) -> bool {
        <DateTime<Utc> as Type<Postgres>>::compatible(ty)
    }
}

impl<'r> Decode<'r, Postgres> for PgTimestamp {
    fn decode(value: PgValueRef<'r>) -> Result<PgTimestamp, sqlx::error::BoxDynError> {
        if value.format() == PgValueFormat::Text
            && let Some(at) = parse_iso(value.as_bytes()?)
        {
            return Ok(PgTimestamp(at));
        }
        Ok(PgTimestamp(<DateTime<Utc> as Decode<Postgres>>::decode(
            value,
        )?))
    }
}

/// `YYYY-MM-DD HH:MM:SS[.fraction]±HH[:MM[:SS]]`, PostgreSQL's ISO `timestamptz` output.
fn parse_iso(text: &[u8]) -> Option<DateTime<Utc>> {
    let mut at = Cursor { text, at: 0 };
    let year = at.number(4)?;
    at.expect(b'-')?;
    let month = at.number(2)?;
    at.expect(b'-')?;
    let day = at.number(2)?;
    at.expect(b' ')?;
    let hour = at.number(2)?;
    at.expect(b':')?;
    let minute = at.number(2)?;
    at.expect(b':')?;
    let second = at.number(2)?;
    let mut nanos = 0;
    if at.expect(b'.').is_some() {
        let mut digits = 0;
        while let Some(digit) = at.digit() {
            if digits == 9 {
                return None;
            }
            nanos = nanos * 10 + digit;
            digits += 1;
        }
        if digits == 0 {
            return None;
        }
        nanos *= 10u32.pow(9 - digits);
    }
    let sign = match at.next()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let mut offset = i64::from(at.number(2)?) * 3600;
    for unit in [60, 1] {
        if at.expect(b':').is_none() {
            break;
        }
        offset += i64::from(at.number(2)?) * unit;
    }
    if at.at != text.len() {
        return None;
    }
    let local = NaiveDate::from_ymd_opt(i32::try_from(year).ok()?, month, day)?
        .and_hms_nano_opt(hour, minute, second, nanos)?;
    // The local time is `offset` ahead of UTC.
    local
        .checked_sub_signed(TimeDelta::seconds(sign * offset))
        .map(|utc| utc.and_utc())
}

struct Cursor<'a> {
    text: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn next(&mut self) -> Option<u8> {
        let byte = *self.text.get(self.at)?;
        self.at += 1;
        Some(byte)
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.text.get(self.at) == Some(&byte)).then(|| self.at += 1)
    }

    fn digit(&mut self) -> Option<u32> {
        let byte = *self.text.get(self.at)?;
        byte.is_ascii_digit().then(|| {
            self.at += 1;
            u32::from(byte - b'0')
        })
    }

    /// Exactly `width` digits.
    fn number(&mut self, width: usize) -> Option<u32> {
        let mut value = 0;
        for _ in 0..width {
            value = value * 10 + self.digit()?;
        }
        Some(value)
    }
}

/// `#[serde(serialize_with = "crate::domain::time::rfc3339")]`.
pub fn rfc3339<S: Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    let mut buffer = [0u8; 30];
    match write(at, &mut buffer) {
        Some(text) => serializer.serialize_str(text),
        // Years outside 0–9999 and leap seconds: rare enough for chrono's own way.
        None => at.serialize(serializer),
    }
}

fn write<'a>(at: &DateTime<Utc>, buffer: &'a mut [u8; 30]) -> Option<&'a str> {
    let year = u32::try_from(at.year()).ok().filter(|y| *y <= 9999)?;
    let nanos = at.timestamp_subsec_nanos();
    if nanos >= 1_000_000_000 {
        return None;
    }
    let mut out = Out { buffer, len: 0 };
    out.digits(year, 4);
    out.byte(b'-');
    out.digits(at.month(), 2);
    out.byte(b'-');
    out.digits(at.day(), 2);
    out.byte(b'T');
    out.digits(at.hour(), 2);
    out.byte(b':');
    out.digits(at.minute(), 2);
    out.byte(b':');
    out.digits(at.second(), 2);
    if nanos != 0 {
        out.byte(b'.');
        if nanos.is_multiple_of(1_000_000) {
            out.digits(nanos / 1_000_000, 3);
        } else if nanos.is_multiple_of(1_000) {
            out.digits(nanos / 1_000, 6);
        } else {
            out.digits(nanos, 9);
        }
    }
    out.byte(b'Z');
    let Out { buffer, len } = out;
    std::str::from_utf8(&buffer[..len]).ok()
}

/// At most 30 bytes are written: `9999-12-31T23:59:59.999999999Z`.
struct Out<'a> {
    buffer: &'a mut [u8; 30],
    len: usize,
}

impl Out<'_> {
    fn byte(&mut self, byte: u8) {
        if let Some(slot) = self.buffer.get_mut(self.len) {
            *slot = byte;
            self.len += 1;
        }
    }

    /// `value`'s last `width` decimal digits, zero-padded.
    fn digits(&mut self, value: u32, width: u32) {
        for place in (0..width).rev() {
            // A digit is below 10: the cast cannot truncate.
            self.byte(b'0' + (value / 10u32.pow(place) % 10) as u8);
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde::Serialize;

    use super::*;

    #[derive(Serialize)]
    struct Ours(#[serde(serialize_with = "rfc3339")] DateTime<Utc>);

    fn same_as_chrono(at: DateTime<Utc>) {
        let ours = serde_json::to_string(&Ours(at)).unwrap_or_default();
        let chrono = serde_json::to_string(&at).unwrap_or_default();
        assert_eq!(ours, chrono);
    }

    #[test]
    fn every_fraction_width_and_the_edges() {
        for nanos in [
            0,
            1,
            120_000_000,
            123_000,
            123_456_789,
            999_999_999,
            1_500_000_000,
        ] {
            for secs in [
                0,
                1_765_000_000,
                -62_167_219_200,
                253_402_300_799,
                -62_167_219_201,
            ] {
                if let Some(at) = DateTime::from_timestamp(secs, nanos) {
                    same_as_chrono(at);
                }
            }
        }
    }

    /// What sqlx's own text decoder makes of PostgreSQL's ISO output.
    fn chrono_reads(text: &str) -> Option<DateTime<Utc>> {
        DateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f%#z")
            .ok()
            .map(|at| at.with_timezone(&Utc))
    }

    #[test]
    fn postgres_iso_output_is_read_as_chrono_reads_it() {
        for text in [
            "2026-12-07 18:48:09.990136+00",
            "2026-12-07 18:48:09+00",
            "2026-12-07 18:48:09.5+03",
            "2026-12-07 01:48:09.000001-05:30",
            "1970-01-01 00:00:00+00",
            "0001-01-01 00:00:00+00",
            "9999-12-31 23:59:59.999999+00",
            "2024-02-29 12:00:00+14",
        ] {
            assert_eq!(parse_iso(text.as_bytes()), chrono_reads(text), "{text}");
            assert!(parse_iso(text.as_bytes()).is_some(), "{text}");
        }
        assert_eq!(
            parse_iso(b"1883-11-18 12:03:58+00:03:58"),
            NaiveDate::from_ymd_opt(1883, 11, 18)
                .and_then(|d| d.and_hms_opt(12, 0, 0))
                .map(|t| t.and_utc())
        );
        // Left to sqlx's decoder.
        for text in [
            "infinity",
            "-infinity",
            "0044-03-15 12:00:00+00 BC",
            "12026-12-07 18:48:09+00",
            "2026-12-07T18:48:09+00",
            "2026-12-07 18:48:09.+00",
            "2026-12-07 18:48:09.1234567890+00",
            "2026-02-30 18:48:09+00",
            "2026-12-07 18:48:09",
            "2026-12-07 18:48:09+0",
            "Mon Dec 07 18:48:09.990136 2026 UTC",
        ] {
            assert_eq!(parse_iso(text.as_bytes()), None, "{text}");
        }
    }

    proptest! {
        #[test]
        fn any_instant_postgres_prints_is_read_back(
            secs in -62_135_596_800i64..253_402_300_799,
            micros in prop_oneof![Just(0u32), 0u32..1_000_000],
            offset_minutes in -15 * 60i32..15 * 60,
        ) {
            let at = DateTime::from_timestamp(secs, micros * 1000).unwrap_or_default();
            let zone = chrono::FixedOffset::east_opt(offset_minutes * 60).unwrap_or(chrono::FixedOffset::east_opt(0).unwrap_or_else(|| unreachable!()));
            let local = at.with_timezone(&zone);
            let mut text = local.format("%Y-%m-%d %H:%M:%S").to_string();
            if micros != 0 {
                text.push_str(&format!(".{micros:06}"));
            }
            let (sign, abs) = if offset_minutes < 0 { ('-', -offset_minutes) } else { ('+', offset_minutes) };
            text.push_str(&format!("{sign}{:02}", abs / 60));
            if abs % 60 != 0 {
                text.push_str(&format!(":{:02}", abs % 60));
            }
            if local.year() <= 9999 && local.year() >= 1 {
                prop_assert_eq!(parse_iso(text.as_bytes()), Some(at), "{}", text);
            }
        }

        #[test]
        fn any_instant_is_written_as_chrono_writes_it(
            secs in -70_000_000_000i64..260_000_000_000,
            nanos in prop_oneof![0u32..2_000_000_000, (0u32..1000).prop_map(|n| n * 1_000_000)],
        ) {
            if let Some(at) = DateTime::from_timestamp(secs, nanos) {
                same_as_chrono(at);
            }
        }
    }
}
