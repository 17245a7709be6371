//! Timestamps in responses, written as chrono's serde writes them (RFC 3339 in UTC,
//! `Z`, with 0, 3, 6 or 9 digits of fraction as needed) without going through
//! `Display`: chrono's formatter took ~2,700 instructions per timestamp, a tenth of the
//! list route's server time with two timestamps per agent (`bench/profile.sh`).

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::{Serialize, Serializer};

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

    proptest! {
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
