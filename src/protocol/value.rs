//! A protocol-neutral value: what hub method arguments and results are made of.
//!
//! Arguments are parsed into `Value` once and encoded once per wire protocol, so a publish can
//! reach JSON and (later) MessagePack clients alike. Binary has no JSON form and becomes base64,
//! as ASP.NET Core does.
//!
//! JSON numbers pass from JSON client to JSON client unchanged, as they do through ASP.NET
//! Core: every JSON number but a 64-bit integer keeps its text ([`JsonNumber`]; an exponent
//! keeps its digits and is written `e+N` or `e-N`), so an integer beyond 64 bits, or above
//! 2^53, or a decimal with more digits than a float keeps, arrives as it was sent.
//! MessagePack has no such number; its receivers get the nearest float64 (IEEE 754
//! round-to-nearest-even; beyond its range, an infinity).

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, SerializeStruct, Serializer};

/// An argument or result of a hub method, in a form both JSON and MessagePack map onto
/// without loss, so a message from a client of one protocol reaches clients of the other
/// unchanged.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// JSON `null`, MessagePack nil.
    Null,
    /// A boolean.
    Bool(bool),
    /// Every integer that fits an i64.
    Int(i64),
    /// Integers above `i64::MAX`.
    UInt(u64),
    /// A float (from MessagePack: JSON numbers that are not 64-bit integers keep their text).
    Float(f64),
    /// A JSON number other than a 64-bit integer, as its text.
    Number(JsonNumber),
    /// A string.
    Str(String),
    /// MessagePack binary; JSON receivers get it as base64, as ASP.NET sends `byte[]`.
    Bin(Vec<u8>),
    /// An array, items in order.
    Array(Vec<Value>),
    /// Key order is kept as received.
    Map(Vec<(String, Value)>),
    /// A MessagePack extension (type, data): carried unchanged between MessagePack clients;
    /// JSON receivers get a timestamp (type −1) as an RFC 3339 string, anything else as base64.
    Ext(i8, Vec<u8>),
}

impl Value {
    /// The string, if this is one: hub methods read names and texts from their arguments.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// A short type name for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Int(_) | Value::UInt(_) => "integer",
            Value::Float(_) | Value::Number(_) => "number",
            Value::Str(_) => "string",
            Value::Bin(_) => "binary",
            Value::Array(_) => "array",
            Value::Map(_) => "object",
            Value::Ext(..) => "extension",
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::Str(s.to_string())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::Str(s)
    }
}

impl From<i64> for Value {
    fn from(n: i64) -> Value {
        Value::Int(n)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Value {
        v.map_or(Value::Null, Into::into)
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(n) => s.serialize_i64(*n),
            Value::UInt(n) => s.serialize_u64(*n),
            Value::Float(f) if f.is_finite() => s.serialize_f64(*f),
            // JSON has no NaN or infinity; ASP.NET would fail, Herald sends null.
            Value::Null | Value::Float(_) => s.serialize_unit(),
            Value::Number(n) => n.serialize(s),
            Value::Str(v) => s.serialize_str(v),
            Value::Bin(b) => s.serialize_str(&STANDARD.encode(b)),
            Value::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Value::Map(entries) => {
                let mut map = s.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
            Value::Ext(-1, data) => match timestamp(data) {
                Some(text) => s.serialize_str(&text),
                None => s.serialize_str(&STANDARD.encode(data)),
            },
            Value::Ext(_, data) => s.serialize_str(&STANDARD.encode(data)),
        }
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any value")
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }
    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }
    fn visit_i64<E>(self, n: i64) -> Result<Value, E> {
        Ok(Value::Int(n))
    }
    fn visit_u64<E>(self, n: u64) -> Result<Value, E> {
        Ok(i64::try_from(n).map_or(Value::UInt(n), Value::Int))
    }
    fn visit_f64<E>(self, f: f64) -> Result<Value, E> {
        Ok(Value::Float(f))
    }
    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::Str(s.to_string()))
    }
    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        Ok(Value::Str(s))
    }
    fn visit_bytes<E>(self, b: &[u8]) -> Result<Value, E> {
        Ok(Value::Bin(b.to_vec()))
    }
    fn visit_byte_buf<E>(self, b: Vec<u8>) -> Result<Value, E> {
        Ok(Value::Bin(b))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0).min(64));
        while let Some(k) = map.next_key::<String>()? {
            // serde_json hands over the text of a number that is not a 64-bit integer as a
            // one-entry map under its private key (`arbitrary_precision`).
            if entries.is_empty() && k == NUMBER_TOKEN {
                let text: String = map.next_value()?;
                return JsonNumber::new(text).map(Value::Number).ok_or_else(|| {
                    serde::de::Error::custom("an object keyed like a number is not a number")
                });
            }
            entries.push((k, map.next_value()?));
        }
        Ok(Value::Map(entries))
    }
}

/// The key under which `serde_json` (with `arbitrary_precision`) passes a number's text, and
/// takes text to write as a number.
const NUMBER_TOKEN: &str = "$serde_json::private::Number";

/// A JSON number's text, always valid JSON: written back as it came.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonNumber(Box<str>);

impl JsonNumber {
    /// `text` if it is a JSON number (RFC 8259 §6). `serde_json` hands over only numbers it
    /// scanned, but a client can send an object that looks like its carrier, and its text
    /// would be written out raw.
    pub fn new(text: impl Into<Box<str>>) -> Option<JsonNumber> {
        let text = text.into();
        is_json_number(text.as_bytes()).then_some(JsonNumber(text))
    }

    /// The number's text, exactly as the client sent it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The nearest float64 (IEEE 754 round-to-nearest-even; beyond its range, an infinity),
    /// for receivers whose protocol has no arbitrary-precision number.
    pub fn to_f64(&self) -> f64 {
        self.0.parse().unwrap_or(f64::NAN)
    }
}

impl Serialize for JsonNumber {
    /// Raw, through `serde_json`'s number token; only JSON serializers meet a `Value`.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut number = s.serialize_struct(NUMBER_TOKEN, 1)?;
        number.serialize_field(NUMBER_TOKEN, &*self.0)?;
        number.end()
    }
}

/// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
fn is_json_number(t: &[u8]) -> bool {
    let digits = |t: &[u8], i: &mut usize| {
        let start = *i;
        while t.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i > start
    };
    let mut i = usize::from(t.first() == Some(&b'-'));
    match t.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => {
            digits(t, &mut i);
        }
        _ => return false,
    }
    if t.get(i) == Some(&b'.') {
        i += 1;
        if !digits(t, &mut i) {
            return false;
        }
    }
    if matches!(t.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(t.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if !digits(t, &mut i) {
            return false;
        }
    }
    i == t.len()
}

/// The MessagePack timestamp extension (32, 64 or 96 bits) as an RFC 3339 UTC string.
fn timestamp(data: &[u8]) -> Option<String> {
    let (secs, nanos): (i64, u32) = match data.len() {
        4 => (i64::from(u32::from_be_bytes(data.try_into().ok()?)), 0),
        8 => {
            let v = u64::from_be_bytes(data.try_into().ok()?);
            ((v & 0x3_ffff_ffff) as i64, (v >> 34) as u32)
        }
        12 => (
            i64::from_be_bytes(data[4..12].try_into().ok()?),
            u32::from_be_bytes(data[..4].try_into().ok()?),
        ),
        _ => return None,
    };
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, sec) = (rem / 3600, rem % 3600 / 60, rem % 60);
    Some(if nanos == 0 {
        format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{sec:02}Z")
    } else {
        format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{sec:02}.{nanos:09}Z")
    })
}

/// Deserializes a field that is present, even as `null`, into `Some`: a Completion's
/// `"result": null` is a result, while a missing `result` means a void completion.
pub(crate) fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_keeps_types_and_order() {
        let text = r#"[null,true,-5,18446744073709551615,1.5,"s",[1],{"b":1,"a":2}]"#;
        let v: Value = serde_json::from_str(text).unwrap();
        assert_eq!(serde_json::to_string(&v).unwrap(), text);
        let Value::Array(items) = &v else { panic!() };
        assert_eq!(items[2], Value::Int(-5));
        assert_eq!(items[3], Value::UInt(u64::MAX));
    }

    #[test]
    fn json_numbers_pass_through_unchanged() {
        for text in [
            "123456789012345678901234567890",
            "-123456789012345678901234567890",
            "18446744073709551616",
            "-9223372036854775809",
            "1e+2",
            "1.10",
            "-0",
            "0.30000000000000000001",
            "2.5e-400",
        ] {
            let v: Value = serde_json::from_str(text).unwrap();
            assert!(matches!(v, Value::Number(_)), "{text}: {v:?}");
            assert_eq!(v.kind(), "number");
            assert_eq!(serde_json::to_string(&v).unwrap(), text);
            // Nested, and as arguments of a hub message.
            let nested = format!(r#"{{"n":[{text}],"m":{text}}}"#);
            let v: Value = serde_json::from_str(&nested).unwrap();
            assert_eq!(serde_json::to_string(&v).unwrap(), nested);
        }
        // Exponents keep their digits and get an explicit sign.
        for (text, out) in [("1e2", "1e+2"), ("1E400", "1e+400"), ("5E-1", "5e-1")] {
            let v: Value = serde_json::from_str(text).unwrap();
            assert_eq!(serde_json::to_string(&v).unwrap(), out);
        }
        for text in ["1.5", "-0.25", "1e-7", "0.1"] {
            let v: Value = serde_json::from_str(text).unwrap();
            assert_eq!(serde_json::to_string(&v).unwrap(), text);
        }
        // An object that only looks like serde_json's number carrier is refused, not written
        // out raw.
        for fake in [
            "x",
            "1,\"y\":2",
            "01",
            "1.",
            ".5",
            "-",
            "1e",
            "1e+",
            "+1",
            " 1",
            "",
        ] {
            let json = format!(r#"{{"$serde_json::private::Number":"{fake}"}}"#);
            assert!(serde_json::from_str::<Value>(&json).is_err(), "{fake:?}");
        }
        assert!(JsonNumber::new("-0.5e+10").is_some());
    }

    #[test]
    fn numbers_reach_messagepack_as_the_nearest_float64() {
        let to_mp = |text: &str| {
            let v: Value = serde_json::from_str(text).unwrap();
            let mut out = Vec::new();
            crate::protocol::msgpack::write_value(&v, &mut out);
            crate::protocol::msgpack::read_value(&out).unwrap()
        };
        assert_eq!(
            to_mp("123456789012345678901234567890"),
            Value::Float(1.234_567_890_123_456_8e29)
        );
        assert_eq!(to_mp("1e2"), Value::Float(100.0));
        assert_eq!(to_mp("1.10"), Value::Float(1.1));
        assert_eq!(to_mp("-0"), Value::Float(-0.0));
        assert_eq!(to_mp("1E400"), Value::Float(f64::INFINITY));
        assert_eq!(to_mp("1.25"), Value::Float(1.25));
        // Integers that fit 64 bits stay integers.
        assert_eq!(to_mp("9007199254740993"), Value::Int(9_007_199_254_740_993));
    }

    #[test]
    fn timestamps_become_rfc3339() {
        let t = |data: &[u8]| serde_json::to_string(&Value::Ext(-1, data.to_vec())).unwrap();
        assert_eq!(t(&0u32.to_be_bytes()), "\"1970-01-01T00:00:00Z\"");
        assert_eq!(
            t(&1_700_000_000u32.to_be_bytes()),
            "\"2023-11-14T22:13:20Z\""
        );
        let (nanos, secs) = (5u64, 86_400u64);
        let v = (nanos << 34) | secs;
        assert_eq!(t(&v.to_be_bytes()), "\"1970-01-02T00:00:00.000000005Z\"");
        assert_eq!(
            serde_json::to_string(&Value::Ext(3, vec![1])).unwrap(),
            "\"AQ==\""
        );
    }

    #[test]
    fn binary_becomes_base64() {
        let v = Value::Bin(vec![0, 1, 2, 255]);
        assert_eq!(serde_json::to_string(&v).unwrap(), "\"AAEC/w==\"");
    }
}
