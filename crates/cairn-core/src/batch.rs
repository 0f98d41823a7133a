//! The payload of a WAL batch record: a list of operations applied atomically
//! (docs/format.md, "Batch payload"). The TypeScript layer encodes it; the engine decodes and
//! validates every byte before the record is written.

use crate::shared_vector::SharedVector;
use std::sync::Arc;

use crate::distance::Metric;
use crate::error::{Error, Result};
use crate::wal::record::u32_at;

pub const OP_CREATE_COLLECTION: u8 = 1;
pub const OP_DROP_COLLECTION: u8 = 2;
pub const OP_UPSERT: u8 = 3;
pub const OP_DELETE: u8 = 4;

pub const MAX_NAME_BYTES: usize = 256;
/// The shortest encoded op (a drop: kind, name length, one name byte): a payload of `n` bytes
/// holds at most `n / MIN_OP_BYTES` ops, whatever its count field claims.
const MIN_OP_BYTES: usize = 4;
pub const MAX_DIM: u32 = 65_536;

#[derive(Clone, Debug, PartialEq)]
pub struct CollectionSpec {
    pub name: String,
    pub dim: u32,
    pub metric: Metric,
    pub m: u32,
    pub ef_construction: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    CreateCollection(CollectionSpec),
    DropCollection {
        name: String,
    },
    /// Vector and metadata are shared, not copied, by the row the upsert becomes (`state.rs`).
    Upsert {
        collection: String,
        id: String,
        vector: SharedVector,
        metadata: Arc<str>,
    },
    Delete {
        collection: String,
        id: String,
    },
}

/// A record's metadata text as rows hold it. Rows written without metadata (`{}`) share one
/// allocation: each would otherwise cost an allocation for two bytes.
pub fn metadata_text(text: &str) -> Arc<str> {
    static EMPTY: std::sync::OnceLock<Arc<str>> = std::sync::OnceLock::new();
    if text == "{}" {
        return EMPTY.get_or_init(|| Arc::from("{}")).clone();
    }
    Arc::from(text)
}

/// Names of collections and record ids: non-empty, at most 256 bytes, never path-like.
pub fn validate_name(what: &str, name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::InvalidArgument(format!("{what} must not be empty")));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(Error::InvalidArgument(format!("{what} is longer than {MAX_NAME_BYTES} bytes")));
    }
    if name == "." || name == ".." || name.contains(['/', '\\', '\0']) {
        return Err(Error::InvalidArgument(format!("{what} must not contain '/', '\\' or NUL, nor be '.' or '..'")));
    }
    Ok(())
}

pub fn encode(ops: &[Op]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(ops.len() as u32).to_le_bytes());
    for op in ops {
        match op {
            Op::CreateCollection(s) => {
                out.push(OP_CREATE_COLLECTION);
                put_str16(&mut out, &s.name);
                out.extend_from_slice(&s.dim.to_le_bytes());
                out.push(s.metric.code());
                out.push(0);
                out.extend_from_slice(&(s.m as u16).to_le_bytes());
                out.extend_from_slice(&s.ef_construction.to_le_bytes());
            }
            Op::DropCollection { name } => {
                out.push(OP_DROP_COLLECTION);
                put_str16(&mut out, name);
            }
            Op::Upsert { collection, id, vector, metadata } => {
                out.push(OP_UPSERT);
                put_str16(&mut out, collection);
                put_str16(&mut out, id);
                out.extend_from_slice(&(vector.len() as u32).to_le_bytes());
                for x in vector.iter() {
                    out.extend_from_slice(&x.to_le_bytes());
                }
                out.extend_from_slice(&(metadata.len() as u32).to_le_bytes());
                out.extend_from_slice(metadata.as_bytes());
            }
            Op::Delete { collection, id } => {
                out.push(OP_DELETE);
                put_str16(&mut out, collection);
                put_str16(&mut out, id);
            }
        }
    }
    out
}

fn put_str16(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u16).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.buf.len() - self.pos < n {
            return Err(Error::InvalidArgument(format!("batch payload truncated at byte {}", self.pos)));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32_at(self.take(4)?, 0))
    }
    fn str(&mut self, len: usize, what: &str) -> Result<String> {
        self.str_ref(len, what).map(str::to_owned)
    }
    fn str_ref(&mut self, len: usize, what: &str) -> Result<&'a str> {
        let b = self.take(len)?;
        std::str::from_utf8(b).map_err(|_| Error::InvalidArgument(format!("{what} is not valid UTF-8")))
    }
    fn name(&mut self, what: &str) -> Result<String> {
        let len = self.u16()? as usize;
        let s = self.str(len, what)?;
        validate_name(what, &s)?;
        Ok(s)
    }
}

/// Decode and validate a payload. Checks everything that does not depend on the store's state:
/// names, finite vector components, metadata that parses as a JSON object or null.
pub fn decode(payload: &[u8]) -> Result<Vec<Op>> {
    let mut c = Cursor { buf: payload, pos: 0 };
    let count = c.u32()? as usize;
    if count > crate::index::MAX_OPS_PER_BATCH {
        return Err(too_many_ops());
    }
    let mut ops = Vec::with_capacity(count.min(payload.len() / MIN_OP_BYTES));
    for i in 0..count {
        ops.push(decode_op(&mut c, i)?);
    }
    if c.pos != payload.len() {
        return Err(Error::InvalidArgument("trailing bytes after batch operations".into()));
    }
    Ok(ops)
}

/// Decode and validate, as `decode` does, operations written back to back without the count:
/// one chunk of a payload built in parts (`engine/staged.rs`), whose first operation is the
/// batch's `first`. Errors name records by their index in the whole batch.
pub fn decode_ops(bytes: &[u8], first: usize) -> Result<Vec<Op>> {
    let mut c = Cursor { buf: bytes, pos: 0 };
    let mut ops = Vec::new();
    while c.pos < bytes.len() {
        let i = first + ops.len();
        if i >= crate::index::MAX_OPS_PER_BATCH {
            return Err(too_many_ops());
        }
        ops.push(decode_op(&mut c, i)?);
    }
    Ok(ops)
}

fn too_many_ops() -> Error {
    Error::InvalidArgument(format!("a batch holds at most {} operations", crate::index::MAX_OPS_PER_BATCH))
}

/// The `i`th operation of a batch, at the cursor.
fn decode_op(c: &mut Cursor, i: usize) -> Result<Op> {
    let kind = c.u8()?;
    Ok(match kind {
        OP_CREATE_COLLECTION => {
            let name = c.name("collection name")?;
            let dim = c.u32()?;
            let metric =
                Metric::from_code(c.u8()?).ok_or_else(|| Error::InvalidArgument("metric must be 'cosine', 'l2' or 'ip'".into()))?;
            let _reserved = c.u8()?;
            let m = c.u16()? as u32;
            let ef_construction = c.u32()?;
            if dim == 0 || dim > MAX_DIM {
                return Err(Error::InvalidArgument(format!("dim must be an integer from 1 to {MAX_DIM}")));
            }
            if !(2..=256).contains(&m) {
                return Err(Error::InvalidArgument("m must be an integer from 2 to 256".into()));
            }
            if ef_construction == 0 {
                return Err(Error::InvalidArgument("efConstruction must be a positive integer".into()));
            }
            Op::CreateCollection(CollectionSpec { name, dim, metric, m, ef_construction })
        }
        OP_DROP_COLLECTION => Op::DropCollection { name: c.name("collection name")? },
        OP_UPSERT => {
            let collection = c.name("collection name")?;
            let id = c.name("id")?;
            let dim = c.u32()? as usize;
            let raw = c.take(dim.checked_mul(4).ok_or_else(|| Error::InvalidArgument("vector too long".into()))?)?;
            // Decode, then check, in two simple loops the compiler vectorises.
            // Decoded straight into the row's shared slot (no intermediate copy).
            let vector = SharedVector::from_le_bytes(raw);
            if !vector.iter().all(|x| x.is_finite()) {
                let j = vector.iter().position(|x| !x.is_finite()).unwrap_or(0);
                return Err(Error::InvalidArgument(format!("records[{i}].vector[{j}] of id '{id}' is not a finite number")));
            }
            let meta_len = c.u32()? as usize;
            let metadata = c.str_ref(meta_len, "metadata")?;
            if !is_flat_json_object(metadata.as_bytes())
                && !matches!(serde_json::from_str::<JsonCheck>(metadata), Ok(JsonCheck::Object | JsonCheck::Null))
            {
                return Err(Error::InvalidArgument(format!("records[{i}].metadata of id '{id}' must be a JSON object")));
            }
            Op::Upsert { collection, id, vector, metadata: metadata_text(metadata) }
        }
        OP_DELETE => Op::Delete { collection: c.name("collection name")?, id: c.name("id")? },
        other => return Err(Error::InvalidArgument(format!("unknown operation kind {other} in batch"))),
    })
}

/// Whether `text` is a JSON object of the flat form the TypeScript writer makes of plain
/// metadata (`encode.ts`, `writeFlatJson`): no whitespace; keys and string values of printable
/// ASCII without escapes; values that are such strings, integers of 1 to 15 digits, `true`,
/// `false` or `null`. Every text accepted here is a JSON object (`JsonCheck::Object`), checked in
/// one pass over its bytes; anything else is left to the full check.
fn is_flat_json_object(t: &[u8]) -> bool {
    if t.first() != Some(&b'{') {
        return false;
    }
    let mut i = 1;
    if t.get(i) == Some(&b'}') {
        return t.len() == 2;
    }
    loop {
        let Some(after_key) = plain_json_string(t, i) else { return false };
        if t.get(after_key) != Some(&b':') {
            return false;
        }
        let Some(after_value) = flat_json_value(t, after_key + 1) else { return false };
        match t.get(after_value) {
            Some(b',') => i = after_value + 1,
            Some(b'}') => return after_value + 1 == t.len(),
            _ => return false,
        }
    }
}

/// The end of a string at `i` without escapes or bytes outside printable ASCII.
fn plain_json_string(t: &[u8], i: usize) -> Option<usize> {
    if t.get(i) != Some(&b'"') {
        return None;
    }
    let body = t.get(i + 1..)?;
    let close = body.iter().position(|&b| b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b))?;
    (body[close] == b'"').then_some(i + 1 + close + 1)
}

/// The end of a flat value at `i` (see `is_flat_json_object`).
fn flat_json_value(t: &[u8], i: usize) -> Option<usize> {
    let rest = t.get(i..)?;
    match rest.first()? {
        b'"' => plain_json_string(t, i),
        b't' => rest.starts_with(b"true").then_some(i + 4),
        b'f' => rest.starts_with(b"false").then_some(i + 5),
        b'n' => rest.starts_with(b"null").then_some(i + 4),
        &first => {
            let start = usize::from(first == b'-');
            let digits = rest[start..].iter().take_while(|b| b.is_ascii_digit()).count();
            // No leading zero: "0" and "-0" are JSON, "01" is not.
            let ok = (1..=15).contains(&digits) && (digits == 1 || rest[start] != b'0');
            ok.then_some(i + start + digits)
        }
    }
}

/// The kind of a JSON value that parses exactly as `serde_json::Value` would (same syntax,
/// numbers in range, nesting limit), checked without building the value: no allocation.
#[derive(Debug, PartialEq, Eq)]
enum JsonCheck {
    Object,
    Null,
    Other,
}

impl<'de> serde::Deserialize<'de> for JsonCheck {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<JsonCheck, D::Error> {
        d.deserialize_any(JsonCheckVisitor)
    }
}

struct JsonCheckVisitor;

impl<'de> serde::de::Visitor<'de> for JsonCheckVisitor {
    type Value = JsonCheck;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any valid JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> std::result::Result<JsonCheck, E> {
        Ok(JsonCheck::Other)
    }
    fn visit_i64<E>(self, _: i64) -> std::result::Result<JsonCheck, E> {
        Ok(JsonCheck::Other)
    }
    fn visit_u64<E>(self, _: u64) -> std::result::Result<JsonCheck, E> {
        Ok(JsonCheck::Other)
    }
    fn visit_f64<E>(self, _: f64) -> std::result::Result<JsonCheck, E> {
        Ok(JsonCheck::Other)
    }
    fn visit_str<E>(self, _: &str) -> std::result::Result<JsonCheck, E> {
        Ok(JsonCheck::Other)
    }
    fn visit_unit<E>(self) -> std::result::Result<JsonCheck, E> {
        Ok(JsonCheck::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<JsonCheck, A::Error> {
        while seq.next_element::<JsonCheck>()?.is_some() {}
        Ok(JsonCheck::Other)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> std::result::Result<JsonCheck, A::Error> {
        while map.next_key::<JsonCheck>()?.is_some() {
            map.next_value::<JsonCheck>()?;
        }
        Ok(JsonCheck::Object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_round_trip() {
        let ops = vec![
            Op::CreateCollection(CollectionSpec { name: "c".into(), dim: 2, metric: Metric::L2, m: 16, ef_construction: 200 }),
            Op::Upsert { collection: "c".into(), id: "a".into(), vector: vec![1.0, -2.5].into(), metadata: "{\"t\":1}".into() },
            Op::Delete { collection: "c".into(), id: "a".into() },
            Op::DropCollection { name: "c".into() },
        ];
        assert_eq!(decode(&encode(&ops)).ok(), Some(ops));
    }

    #[test]
    fn upserts_without_metadata_share_one_allocation() {
        let up = |id: &str, metadata: &str| Op::Upsert {
            collection: "c".into(),
            id: id.into(),
            vector: vec![1.0].into(),
            metadata: metadata.into(),
        };
        let decoded = decode(&encode(&[up("a", "{}"), up("b", "{}"), up("c", "{\"t\":1}"), up("d", "{\"t\":1}")])).expect("valid");
        let texts: Vec<Arc<str>> = decoded
            .into_iter()
            .map(|op| match op {
                Op::Upsert { metadata, .. } => metadata,
                other => panic!("not an upsert: {other:?}"),
            })
            .collect();
        assert_eq!(texts.iter().map(|t| &**t).collect::<Vec<_>>(), ["{}", "{}", "{\"t\":1}", "{\"t\":1}"]);
        assert!(Arc::ptr_eq(&texts[0], &texts[1]), "empty metadata is shared");
        assert!(!Arc::ptr_eq(&texts[2], &texts[3]), "other metadata is each row's own");
    }

    #[test]
    fn path_like_names_are_rejected() {
        for bad in ["", ".", "..", "a/b", "a\\b", "a\0b", &"x".repeat(257)] {
            assert!(validate_name("id", bad).is_err(), "{bad:?} accepted");
        }
        assert!(validate_name("id", &"x".repeat(256)).is_ok());
    }

    #[test]
    fn metadata_check_agrees_with_serde_json_value() {
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let cases = [
            "{}",
            "null",
            " { \"a\" : [1, 2.5, -3e2, {\"b\": null}], \"c\": \"\\u00e9\\n\" } ",
            "[]",
            "1",
            "\"s\"",
            "true",
            "",
            " ",
            "{",
            "{\"a\":}",
            "{\"a\":1,}",
            "[1,]",
            "nul",
            "null x",
            "{} {}",
            "{\"a\":1e400}",
            "{\"a\":-1e400}",
            "{\"a\":18446744073709551616}",
            "{\"a\":01}",
            "{\"a\":\"\\x\"}",
            "{\"a\":\"\\ud800\"}",
            "{1:2}",
            "{\"a\":NaN}",
            "\t{\"k\":{\"k\":{\"k\":[true,false,null]}}}\r\n",
            &deep,
        ];
        for case in cases {
            let expected = match serde_json::from_str::<serde_json::Value>(case) {
                Ok(serde_json::Value::Object(_)) => Ok(JsonCheck::Object),
                Ok(serde_json::Value::Null) => Ok(JsonCheck::Null),
                Ok(_) => Ok(JsonCheck::Other),
                Err(_) => Err(()),
            };
            assert_eq!(serde_json::from_str::<JsonCheck>(case).map_err(|_| ()), expected, "{case:?}");
        }
    }

    /// The flat fast path accepts only JSON objects (checked against serde_json on random
    /// texts built from JSON-ish pieces), and accepts the metadata the TypeScript writer makes.
    #[test]
    fn flat_json_objects_are_json_objects() {
        for ok in [r#"{}"#, r#"{"source":"bench","n":12,"tag":"x"}"#, r#"{"a":-0,"b":true,"c":false,"d":null,"e":"","f":123456789012345}"#]
        {
            assert!(is_flat_json_object(ok.as_bytes()), "{ok}");
        }
        for not_flat in [
            r#"{"a":1.5}"#,
            r#"{"a":"\n"}"#,
            r#"{ "a":1}"#,
            r#"{"a":01}"#,
            r#"{"a":1234567890123456}"#,
            r#"{"é":1}"#,
            r#"{"a":1,}"#,
            r#"{"a":1}x"#,
            r#"{"a"}"#,
            "{",
            "",
        ] {
            assert!(!is_flat_json_object(not_flat.as_bytes()), "{not_flat}");
        }
        // Mostly well-formed pairs and commas, so that many texts are flat, with pieces that
        // break them in every way the scanner must notice.
        let pieces = [
            "\"k\":1",
            "\"v\":\"s\"",
            "\"t\":true",
            "\"z\":-0",
            "\"n\":null",
            "\"f\":false",
            "\"\":\"\"",
            ",",
            ",",
            ",",
            "\"",
            ":",
            "0",
            "-",
            "9",
            "fals",
            " ",
            "\\",
            "é",
            "[",
            "]",
            ".5",
            "e3",
            "}",
            "{",
            "\u{7f}",
            "\u{1}",
        ];
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let (mut flat, mut checked) = (0, 0);
        for _ in 0..200_000 {
            let mut text = String::from("{");
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            for k in 0..(x % 10) {
                text.push_str(pieces[((x >> (6 * k)) % pieces.len() as u64) as usize]);
            }
            if !x.is_multiple_of(3) {
                text.push('}');
            }
            if is_flat_json_object(text.as_bytes()) {
                flat += 1;
                assert!(matches!(serde_json::from_str::<serde_json::Value>(&text), Ok(serde_json::Value::Object(_))), "{text}");
            }
            checked += 1;
        }
        assert!(flat > 1_000, "the generator reaches the fast path: {flat} of {checked}");
    }

    #[test]
    fn nan_and_bad_metadata_are_rejected() {
        let nan = vec![Op::Upsert { collection: "c".into(), id: "a".into(), vector: vec![f32::NAN].into(), metadata: "null".into() }];
        assert!(decode(&encode(&nan)).is_err());
        let meta = vec![Op::Upsert { collection: "c".into(), id: "a".into(), vector: vec![1.0].into(), metadata: "[1".into() }];
        assert!(decode(&encode(&meta)).is_err());
    }
}
