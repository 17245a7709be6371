//! JSON response bodies, written by a serde serializer of our own.
//!
//! The profile of the list route (`bench/profile.sh`) had serde_json's string escaping,
//! which looks at every byte on its own, as a quarter of the server's instructions: a
//! page of agents is ~20 KB of text. This writer makes the same bytes as
//! `serde_json::to_vec` (the tests compare them on arbitrary values) but skips runs of
//! plain text eight bytes at a time, and writes into a buffer sized for a page rather
//! than one that grows from 128 bytes.

use std::fmt::{self, Display};

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::ser::{self, Impossible};

use crate::http::error::ApiError;

/// A response body of `T` as `application/json`, like axum's `Json`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

/// Most bodies fit; a list page of 20 agents is ~20 KB and grows once.
const INITIAL_CAPACITY: usize = 16 * 1024;

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        let mut body = Vec::with_capacity(INITIAL_CAPACITY);
        match write(&mut body, &self.0) {
            Ok(()) => (
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                body,
            )
                .into_response(),
            Err(error) => {
                ApiError::internal(anyhow::Error::new(error).context("writing a response"))
                    .into_response()
            }
        }
    }
}

/// Appends `value` as compact JSON to `out`, byte for byte as serde_json writes it.
pub fn write<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) -> Result<(), Error> {
    value.serialize(&mut Writer { out })
}

/// `value` as compact JSON in a new buffer.
#[cfg(test)]
fn to_vec<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    write(&mut out, value)?;
    Ok(out)
}

/// What a value's `Serialize` reported, or a map key that JSON cannot have.
#[derive(Debug)]
pub struct Error(String);

impl Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl ser::Error for Error {
    fn custom<M: Display>(message: M) -> Error {
        Error(message.to_string())
    }
}

struct Writer<'a> {
    out: &'a mut Vec<u8>,
}

impl Writer<'_> {
    fn integer<I: itoa::Integer>(&mut self, value: I) {
        self.out
            .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
    }

    fn float<F: zmij::Float>(&mut self, value: F, finite: bool) {
        if finite {
            self.out
                .extend_from_slice(zmij::Buffer::new().format_finite(value).as_bytes());
        } else {
            self.out.extend_from_slice(b"null");
        }
    }

    /// `{"variant":` — the opening of an externally tagged enum variant with data.
    fn variant_key(&mut self, variant: &str) {
        self.out.push(b'{');
        write_escaped(self.out, variant);
        self.out.push(b':');
    }
}

// --- strings -------------------------------------------------------------------------

/// For each byte: 0 when it is written as is, else the letter of its escape (`u` for
/// `\u00XX`).
const ESCAPE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = b'u';
        b += 1;
    }
    table[0x08] = b'b';
    table[0x09] = b't';
    table[0x0a] = b'n';
    table[0x0c] = b'f';
    table[0x0d] = b'r';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

#[cfg(any(test, not(target_arch = "x86_64")))]
const ONES: u64 = 0x0101_0101_0101_0101;
#[cfg(any(test, not(target_arch = "x86_64")))]
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Whether any of the eight bytes of `word` is a control character, `"` or `\`. Exact
/// for "any" (the classic has-less-than and has-zero-byte tests); which byte it is, the
/// caller finds one byte at a time.
#[cfg(any(test, not(target_arch = "x86_64")))]
fn needs_escape(word: u64) -> bool {
    let control = word.wrapping_sub(ONES * 0x20) & !word;
    let quote =
        (word ^ (ONES * u64::from(b'"'))).wrapping_sub(ONES) & !(word ^ (ONES * u64::from(b'"')));
    let backslash =
        (word ^ (ONES * u64::from(b'\\'))).wrapping_sub(ONES) & !(word ^ (ONES * u64::from(b'\\')));
    (control | quote | backslash) & HIGHS != 0
}

/// `text` as a JSON string, quotes included.
fn write_escaped(out: &mut Vec<u8>, text: &str) {
    out.reserve(text.len() + 2);
    out.push(b'"');
    escape_into(out, text);
    out.push(b'"');
}

/// `text` escaped as inside a JSON string.
fn escape_into(out: &mut Vec<u8>, text: &str) {
    let bytes = text.as_bytes();
    let mut run = 0;
    let mut from = 0;
    while let Some(at) = next_escape(bytes, from) {
        let byte = bytes[at];
        out.extend_from_slice(&bytes[run..at]);
        match ESCAPE[usize::from(byte)] {
            b'u' => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(byte >> 4)]);
                out.push(HEX[usize::from(byte & 0xf)]);
            }
            letter => {
                out.push(b'\\');
                out.push(letter);
            }
        }
        run = at + 1;
        from = at + 1;
    }
    out.extend_from_slice(&bytes[run..]);
}

/// Where the first byte at or after `from` that needs escaping is: blocks of sixteen bytes
/// are tested at once, the rest one byte at a time.
fn next_escape(bytes: &[u8], from: usize) -> Option<usize> {
    let rest = bytes.get(from..)?;
    let mut blocks = rest.chunks_exact(16);
    let mut offset = 0;
    for block in blocks.by_ref() {
        if let Some(at) = block_escape(block) {
            return Some(from + offset + at);
        }
        offset += 16;
    }
    blocks
        .remainder()
        .iter()
        .position(|&b| ESCAPE[usize::from(b)] != 0)
        .map(|at| from + offset + at)
}

/// The first byte of a 16-byte `block` that needs escaping, with SSE2 (part of every
/// x86-64): a third of the instructions of two 8-byte words, and the list route writes
/// tens of kilobytes of text per response.
#[cfg(target_arch = "x86_64")]
fn block_escape(block: &[u8]) -> Option<usize> {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_min_epu8, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8,
    };
    debug_assert_eq!(block.len(), 16);
    if block.len() < 16 {
        return block.iter().position(|&b| ESCAPE[usize::from(b)] != 0);
    }
    // SAFETY: the unaligned load reads the 16 bytes of `block`, checked above; SSE2 is
    // enabled on every x86-64 target.
    let mask = unsafe {
        let v = _mm_loadu_si128(block.as_ptr().cast::<__m128i>());
        let quote = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
        let backslash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
        // Below 0x20 exactly when the unsigned minimum with 0x1f is the byte itself.
        let control = _mm_cmpeq_epi8(_mm_min_epu8(v, _mm_set1_epi8(0x1f)), v);
        _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(quote, backslash), control))
    };
    (mask != 0).then(|| mask.trailing_zeros() as usize)
}

#[cfg(not(target_arch = "x86_64"))]
use portable_block_escape as block_escape;

/// `block_escape` elsewhere (and the reference the SSE2 one is tested against): two words
/// of eight bytes, then the byte.
#[cfg(any(test, not(target_arch = "x86_64")))]
fn portable_block_escape(block: &[u8]) -> Option<usize> {
    let word = |at: usize| {
        let mut eight = [0u8; 8];
        eight.copy_from_slice(&block[at..at + 8]);
        u64::from_le_bytes(eight)
    };
    if block.len() == 16 && !needs_escape(word(0)) && !needs_escape(word(8)) {
        return None;
    }
    block.iter().position(|&b| ESCAPE[usize::from(b)] != 0)
}

/// `value`'s `Display` output as a JSON string, escaped as it is written.
fn write_display<T: Display + ?Sized>(out: &mut Vec<u8>, value: &T) -> Result<(), Error> {
    use fmt::Write as _;
    out.push(b'"');
    write!(Escaping(out), "{value}")
        .map_err(|_| Error("a value failed to format itself".into()))?;
    out.push(b'"');
    Ok(())
}

/// `Display` output, escaped as it is written (timestamps, decimals).
struct Escaping<'a>(&'a mut Vec<u8>);

impl fmt::Write for Escaping<'_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        escape_into(self.0, text);
        Ok(())
    }
}

// --- the serializer ------------------------------------------------------------------

impl<'a, 'w> ser::Serializer for &'a mut Writer<'w> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Compound<'a, 'w>;
    type SerializeTuple = Compound<'a, 'w>;
    type SerializeTupleStruct = Compound<'a, 'w>;
    type SerializeTupleVariant = Compound<'a, 'w>;
    type SerializeMap = Compound<'a, 'w>;
    type SerializeStruct = Compound<'a, 'w>;
    type SerializeStructVariant = Compound<'a, 'w>;

    fn serialize_bool(self, value: bool) -> Result<(), Error> {
        self.out
            .extend_from_slice(if value { b"true" } else { b"false" });
        Ok(())
    }

    fn serialize_i8(self, value: i8) -> Result<(), Error> {
        self.integer(value);
        Ok(())
    }

    fn serialize_i16(self, value: i16) -> Result<(), Error> {
        self.integer(value);
        Ok(())
    }

    fn serialize_i32(self, value: i32) -> Result<(), Error> {
        self.integer(value);
        Ok(())
    }

    fn serialize_i64(self, value: i64) -> Result<(), Error> {
        self.integer(value);
        Ok(())
    }

    fn serialize_i128(self, value: i128) -> Result<(), Error> {
        self.integer(value);
        Ok(())
    }

    fn serialize_u8(self, value: u8) -> Result<(), Error> {
        self.integer(value);
        Ok(())
    }

    fn serialize_u16(self, value: u16) -> Result<(), Error> {
        self.integer(value);
        Ok(())
    }

    fn serialize_u32(self, value: u32) -> Result<(), Error> {
        self.integer(value);
        Ok(())
    }

    fn serialize_u64(self, value: u64) -> Result<(), Error> {
        self.integer(value);
        Ok(())
    }

    fn serialize_u128(self, value: u128) -> Result<(), Error> {
        self.integer(value);
        Ok(())
    }

    fn serialize_f32(self, value: f32) -> Result<(), Error> {
        self.float(value, value.is_finite());
        Ok(())
    }

    fn serialize_f64(self, value: f64) -> Result<(), Error> {
        self.float(value, value.is_finite());
        Ok(())
    }

    fn serialize_char(self, value: char) -> Result<(), Error> {
        write_escaped(self.out, value.encode_utf8(&mut [0; 4]));
        Ok(())
    }

    fn serialize_str(self, value: &str) -> Result<(), Error> {
        write_escaped(self.out, value);
        Ok(())
    }

    fn serialize_bytes(self, value: &[u8]) -> Result<(), Error> {
        use ser::SerializeSeq as _;
        let mut seq = self.serialize_seq(Some(value.len()))?;
        for byte in value {
            seq.serialize_element(byte)?;
        }
        seq.end()
    }

    fn serialize_none(self) -> Result<(), Error> {
        self.serialize_unit()
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Error> {
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result<(), Error> {
        self.out.extend_from_slice(b"null");
        Ok(())
    }

    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), Error> {
        self.serialize_unit()
    }

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), Error> {
        self.serialize_str(variant)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.variant_key(variant);
        value.serialize(&mut *self)?;
        self.out.push(b'}');
        Ok(())
    }

    fn serialize_seq(self, _len: Option<usize>) -> Result<Compound<'a, 'w>, Error> {
        self.out.push(b'[');
        Ok(Compound::new(self, Close::Array))
    }

    fn serialize_tuple(self, len: usize) -> Result<Compound<'a, 'w>, Error> {
        self.serialize_seq(Some(len))
    }

    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> Result<Compound<'a, 'w>, Error> {
        self.serialize_seq(Some(len))
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Compound<'a, 'w>, Error> {
        self.variant_key(variant);
        self.out.push(b'[');
        Ok(Compound::new(self, Close::VariantArray))
    }

    fn serialize_map(self, _len: Option<usize>) -> Result<Compound<'a, 'w>, Error> {
        self.out.push(b'{');
        Ok(Compound::new(self, Close::Object))
    }

    fn serialize_struct(self, name: &'static str, len: usize) -> Result<Compound<'a, 'w>, Error> {
        if name == RAW_VALUE {
            return Ok(Compound::new(self, Close::Raw));
        }
        self.serialize_map(Some(len))
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Compound<'a, 'w>, Error> {
        self.variant_key(variant);
        self.out.push(b'{');
        Ok(Compound::new(self, Close::VariantObject))
    }

    fn collect_str<T: Display + ?Sized>(self, value: &T) -> Result<(), Error> {
        write_display(self.out, value)
    }
}

/// The struct name by which `serde_json::value::RawValue` asks a serializer for its text
/// to be written as it is (serde_json's own serializer knows it by the same name).
const RAW_VALUE: &str = "$serde_json::private::RawValue";

/// What closes a compound value.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Close {
    /// A `RawValue`: its one field is JSON text, written as it is, and nothing closes it.
    Raw,
    Array,
    Object,
    VariantArray,
    VariantObject,
}

pub struct Compound<'a, 'w> {
    writer: &'a mut Writer<'w>,
    close: Close,
    first: bool,
}

impl<'a, 'w> Compound<'a, 'w> {
    fn new(writer: &'a mut Writer<'w>, close: Close) -> Compound<'a, 'w> {
        Compound {
            writer,
            close,
            first: true,
        }
    }

    fn comma(&mut self) {
        if !std::mem::take(&mut self.first) {
            self.writer.out.push(b',');
        }
    }

    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.comma();
        value.serialize(&mut *self.writer)
    }

    fn field<T: Serialize + ?Sized>(&mut self, key: &str, value: &T) -> Result<(), Error> {
        self.comma();
        write_escaped(self.writer.out, key);
        self.writer.out.push(b':');
        value.serialize(&mut *self.writer)
    }

    fn finish(self) -> Result<(), Error> {
        let out = &mut self.writer.out;
        match self.close {
            Close::Raw => {}
            Close::Array => out.push(b']'),
            Close::Object => out.push(b'}'),
            Close::VariantArray => out.extend_from_slice(b"]}"),
            Close::VariantObject => out.extend_from_slice(b"}}"),
        }
        Ok(())
    }
}

impl ser::SerializeSeq for Compound<'_, '_> {
    type Ok = ();
    type Error = Error;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.element(value)
    }

    fn end(self) -> Result<(), Error> {
        self.finish()
    }
}

impl ser::SerializeTuple for Compound<'_, '_> {
    type Ok = ();
    type Error = Error;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.element(value)
    }

    fn end(self) -> Result<(), Error> {
        self.finish()
    }
}

impl ser::SerializeTupleStruct for Compound<'_, '_> {
    type Ok = ();
    type Error = Error;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.element(value)
    }

    fn end(self) -> Result<(), Error> {
        self.finish()
    }
}

impl ser::SerializeTupleVariant for Compound<'_, '_> {
    type Ok = ();
    type Error = Error;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.element(value)
    }

    fn end(self) -> Result<(), Error> {
        self.finish()
    }
}

impl ser::SerializeMap for Compound<'_, '_> {
    type Ok = ();
    type Error = Error;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Error> {
        self.comma();
        key.serialize(MapKey {
            out: self.writer.out,
            raw: false,
        })?;
        self.writer.out.push(b':');
        Ok(())
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        value.serialize(&mut *self.writer)
    }

    fn end(self) -> Result<(), Error> {
        self.finish()
    }
}

impl ser::SerializeStruct for Compound<'_, '_> {
    type Ok = ();
    type Error = Error;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        if self.close == Close::Raw {
            return value.serialize(MapKey {
                out: self.writer.out,
                raw: true,
            });
        }
        self.field(key, value)
    }

    fn end(self) -> Result<(), Error> {
        self.finish()
    }
}

impl ser::SerializeStructVariant for Compound<'_, '_> {
    type Ok = ();
    type Error = Error;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.field(key, value)
    }

    fn end(self) -> Result<(), Error> {
        self.finish()
    }
}

// --- map keys ------------------------------------------------------------------------

/// A map key: JSON keys are strings, so numbers and booleans are quoted (as serde_json
/// does) and anything else is an error. `raw`: a `RawValue`'s text, which it gives as a
/// string, written as it is.
struct MapKey<'a> {
    out: &'a mut Vec<u8>,
    raw: bool,
}

impl MapKey<'_> {
    fn integer<I: itoa::Integer>(self, value: I) -> Result<(), Error> {
        self.quoted(itoa::Buffer::new().format(value).as_bytes())
    }

    fn quoted(self, text: &[u8]) -> Result<(), Error> {
        self.out.push(b'"');
        self.out.extend_from_slice(text);
        self.out.push(b'"');
        Ok(())
    }
}

fn key_must_be_a_string() -> Error {
    Error("key must be a string".into())
}

impl ser::Serializer for MapKey<'_> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Impossible<(), Error>;
    type SerializeTuple = Impossible<(), Error>;
    type SerializeTupleStruct = Impossible<(), Error>;
    type SerializeTupleVariant = Impossible<(), Error>;
    type SerializeMap = Impossible<(), Error>;
    type SerializeStruct = Impossible<(), Error>;
    type SerializeStructVariant = Impossible<(), Error>;

    fn serialize_str(self, value: &str) -> Result<(), Error> {
        if self.raw {
            self.out.extend_from_slice(value.as_bytes());
        } else {
            write_escaped(self.out, value);
        }
        Ok(())
    }

    fn serialize_char(self, value: char) -> Result<(), Error> {
        write_escaped(self.out, value.encode_utf8(&mut [0; 4]));
        Ok(())
    }

    fn serialize_bool(self, value: bool) -> Result<(), Error> {
        self.quoted(if value { b"true" } else { b"false" })
    }

    fn serialize_i8(self, value: i8) -> Result<(), Error> {
        self.integer(value)
    }

    fn serialize_i16(self, value: i16) -> Result<(), Error> {
        self.integer(value)
    }

    fn serialize_i32(self, value: i32) -> Result<(), Error> {
        self.integer(value)
    }

    fn serialize_i64(self, value: i64) -> Result<(), Error> {
        self.integer(value)
    }

    fn serialize_i128(self, value: i128) -> Result<(), Error> {
        self.integer(value)
    }

    fn serialize_u8(self, value: u8) -> Result<(), Error> {
        self.integer(value)
    }

    fn serialize_u16(self, value: u16) -> Result<(), Error> {
        self.integer(value)
    }

    fn serialize_u32(self, value: u32) -> Result<(), Error> {
        self.integer(value)
    }

    fn serialize_u64(self, value: u64) -> Result<(), Error> {
        self.integer(value)
    }

    fn serialize_u128(self, value: u128) -> Result<(), Error> {
        self.integer(value)
    }

    fn serialize_f32(self, value: f32) -> Result<(), Error> {
        if !value.is_finite() {
            return Err(Error("a map key is not a finite number".into()));
        }
        self.quoted(zmij::Buffer::new().format_finite(value).as_bytes())
    }

    fn serialize_f64(self, value: f64) -> Result<(), Error> {
        if !value.is_finite() {
            return Err(Error("a map key is not a finite number".into()));
        }
        self.quoted(zmij::Buffer::new().format_finite(value).as_bytes())
    }

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), Error> {
        self.serialize_str(variant)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        value.serialize(self)
    }

    fn collect_str<T: Display + ?Sized>(self, value: &T) -> Result<(), Error> {
        write_display(self.out, value)
    }

    fn serialize_bytes(self, _value: &[u8]) -> Result<(), Error> {
        Err(key_must_be_a_string())
    }

    fn serialize_none(self) -> Result<(), Error> {
        Err(key_must_be_a_string())
    }

    fn serialize_some<T: Serialize + ?Sized>(self, _value: &T) -> Result<(), Error> {
        Err(key_must_be_a_string())
    }

    fn serialize_unit(self) -> Result<(), Error> {
        Err(key_must_be_a_string())
    }

    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), Error> {
        Err(key_must_be_a_string())
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _value: &T,
    ) -> Result<(), Error> {
        Err(key_must_be_a_string())
    }

    fn serialize_seq(self, _len: Option<usize>) -> Result<Self::SerializeSeq, Error> {
        Err(key_must_be_a_string())
    }

    fn serialize_tuple(self, _len: usize) -> Result<Self::SerializeTuple, Error> {
        Err(key_must_be_a_string())
    }

    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleStruct, Error> {
        Err(key_must_be_a_string())
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant, Error> {
        Err(key_must_be_a_string())
    }

    fn serialize_map(self, _len: Option<usize>) -> Result<Self::SerializeMap, Error> {
        Err(key_must_be_a_string())
    }

    fn serialize_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStruct, Error> {
        Err(key_must_be_a_string())
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStructVariant, Error> {
        Err(key_must_be_a_string())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;

    fn same_as_serde_json<T: Serialize + ?Sized>(value: &T) {
        let ours = to_vec(value).map_err(|e| e.to_string());
        let theirs = serde_json::to_vec(value).map_err(|e| e.to_string());
        match (&ours, &theirs) {
            (Ok(a), Ok(b)) => assert_eq!(
                String::from_utf8_lossy(a),
                String::from_utf8_lossy(b),
                "bytes differ"
            ),
            (Err(_), Err(_)) => {}
            _ => panic!("ours {ours:?}, serde_json {theirs:?}"),
        }
    }

    #[derive(Serialize)]
    enum Shape {
        Unit,
        Newtype(u8),
        Tuple(i32, String),
        Struct { name: String, ratio: f64 },
    }

    #[derive(Serialize)]
    struct Everything {
        unit: (),
        none: Option<u8>,
        some: Option<i64>,
        chars: Vec<char>,
        shapes: Vec<Shape>,
        by_number: BTreeMap<u32, bool>,
        by_signed: BTreeMap<i64, String>,
        by_flag: BTreeMap<bool, u8>,
        bytes: serde_bytes_like::Bytes,
        floats: Vec<f64>,
        small: f32,
        big: u128,
        negative: i128,
        when: chrono::DateTime<chrono::Utc>,
        id: uuid::Uuid,
        nested: Value,
    }

    /// `&[u8]` serialized as bytes (serde's `serialize_bytes`), without a crate for it.
    mod serde_bytes_like {
        pub struct Bytes(pub Vec<u8>);
        impl serde::Serialize for Bytes {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(&self.0)
            }
        }
    }

    #[test]
    fn every_kind_of_value_is_written_as_serde_json_writes_it() {
        let everything = Everything {
            unit: (),
            none: None,
            some: Some(-7),
            chars: vec!['a', '"', '\n', 'é', '\u{1}'],
            shapes: vec![
                Shape::Unit,
                Shape::Newtype(3),
                Shape::Tuple(-1, "x\ty".into()),
                Shape::Struct {
                    name: "\\path\\".into(),
                    ratio: 0.1,
                },
            ],
            by_number: BTreeMap::from([(1, true), (20, false)]),
            by_signed: BTreeMap::from([(-5, "minus".into())]),
            by_flag: BTreeMap::from([(false, 0), (true, 1)]),
            bytes: serde_bytes_like::Bytes(vec![0, 127, 255]),
            floats: vec![
                0.0,
                -0.0,
                1.0,
                1e20,
                1.5e-7,
                f64::NAN,
                f64::INFINITY,
                123.456,
            ],
            small: 1.1,
            big: u128::MAX,
            negative: i128::MIN,
            when: chrono::DateTime::from_timestamp(1_765_000_000, 123_456_000).unwrap_or_default(),
            id: uuid::Uuid::from_u128(0x0196_f0c4_7a4e_7b51_9c1e_1b2c_3d4e_5f60),
            nested: json!({"a": [1, 2.5, null, {"b": "c\u{7f}\u{2028}"}], "": {}, "e": []}),
        };
        same_as_serde_json(&everything);
    }

    #[test]
    fn keys_json_cannot_have_are_errors() {
        let by_list: BTreeMap<Vec<u8>, u8> = BTreeMap::from([(vec![1], 1)]);
        assert!(to_vec(&by_list).is_err());
        same_as_serde_json(&by_list);
    }

    #[test]
    fn every_escape_and_run_boundary() {
        // Each byte that needs escaping at each offset of an eight-byte word, between
        // plain runs of every length up to two words.
        for special in (0u8..0x20).chain([b'"', b'\\', 0x7f]) {
            for before in 0..17 {
                for after in [0, 1, 7, 8, 9] {
                    let mut text = "x".repeat(before);
                    text.push(char::from(special));
                    text.push_str(&"é".repeat(after));
                    same_as_serde_json(&text);
                }
            }
        }
    }

    fn any_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            any::<String>().prop_map(Value::String),
            "[\\x00-\\x7f]{0,40}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                prop::collection::btree_map(any::<String>(), inner, 0..8)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    #[test]
    fn raw_values_are_written_as_they_are() {
        #[derive(Serialize)]
        struct WithRaw<'a> {
            borrowed: &'a serde_json::value::RawValue,
            boxed: Box<serde_json::value::RawValue>,
            none: Option<Box<serde_json::value::RawValue>>,
            after: u8,
        }
        let text = r#"{"b": [1, "x"], "a": null}"#;
        let value = WithRaw {
            borrowed: serde_json::from_str(text).unwrap(),
            boxed: serde_json::value::RawValue::from_string("[\"é\"]".into()).unwrap(),
            none: None,
            after: 1,
        };
        same_as_serde_json(&value);
        assert_eq!(
            String::from_utf8(to_vec(&value).unwrap()).unwrap(),
            r#"{"borrowed":{"b": [1, "x"], "a": null},"boxed":["é"],"none":null,"after":1}"#
        );
    }

    proptest! {
        #[test]
        fn any_value_is_written_as_serde_json_writes_it(value in any_value()) {
            same_as_serde_json(&value);
        }

        #[test]
        fn any_text_is_escaped_as_serde_json_escapes_it(text in any::<String>()) {
            same_as_serde_json(&text);
        }

        /// Bytes drawn mostly near the edges: controls, 0x1f/0x20, the quote and the
        /// backslash, and high bytes (which a signed comparison would take for controls).
        #[test]
        fn a_block_finds_the_first_byte_to_escape(
            block in prop::collection::vec(
                prop_oneof![
                    Just(0x00u8), Just(0x1f), Just(0x20), Just(b'"'), Just(b'\\'),
                    Just(0x7f), Just(0x80), Just(0x9f), Just(0xff), any::<u8>(),
                    b'a'..=b'z', b'a'..=b'z', b'a'..=b'z', b'a'..=b'z',
                ],
                16,
            )
        ) {
            let expected = block.iter().position(|&b| ESCAPE[usize::from(b)] != 0);
            prop_assert_eq!(block_escape(&block), expected);
            prop_assert_eq!(portable_block_escape(&block), expected);
        }
    }
}
