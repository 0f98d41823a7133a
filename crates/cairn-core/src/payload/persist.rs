//! The payload index file, `data/<coll:020>-<seq:020>.pidx` (docs/format.md, "Payload index
//! file"): the manifest framing (magic, version, body length, body, xxh3 of all before it)
//! around a little-endian body that lists, per index, each row's label and keys. Postings are
//! rebuilt from it on open; a file that does not verify is ignored and the indexes are
//! rebuilt from the rows instead.

use std::path::Path;

use super::{FieldIndex, IndexKind, Key, PayloadIndexes};
use crate::error::{Error, Result};
use crate::manifest::{decode_framed, encode_framed, MANIFEST_HEADER_LEN};

pub const PAYLOAD_MAGIC: &[u8; 8] = b"CAIRNPIX";
pub const PAYLOAD_FILE_VERSION: u32 = 1;

pub fn encode_payload_file(indexes: &PayloadIndexes, covered_seq: u64) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&covered_seq.to_le_bytes());
    b.extend_from_slice(&(indexes.fields.len() as u32).to_le_bytes());
    for f in indexes.fields.values() {
        b.extend_from_slice(&(f.field.len() as u32).to_le_bytes());
        b.extend_from_slice(f.field.as_bytes());
        b.push(f.kind.code());
        b.extend_from_slice(&(f.keys_of.len() as u64).to_le_bytes());
        let mut labels: Vec<(&u64, &Box<[Key]>)> = f.keys_of.iter().collect();
        labels.sort_by_key(|(l, _)| **l);
        for (label, keys) in labels {
            b.extend_from_slice(&label.to_le_bytes());
            b.extend_from_slice(&(keys.len() as u32).to_le_bytes());
            for k in keys.iter() {
                match k {
                    Key::Str(s) => {
                        b.extend_from_slice(&(s.len() as u32).to_le_bytes());
                        b.extend_from_slice(s.as_bytes());
                    }
                    Key::Num(n) => b.extend_from_slice(&n.to_le_bytes()),
                    Key::Bool(v) => b.push(u8::from(*v)),
                }
            }
        }
    }
    encode_framed(PAYLOAD_MAGIC, PAYLOAD_FILE_VERSION, &b)
}

struct Cursor<'a> {
    buf: &'a [u8],
    at: usize,
    path: &'a Path,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.buf.len());
        let Some(end) = end else {
            return Err(Error::corruption(self.path, (MANIFEST_HEADER_LEN + self.at) as u64, "payload index body is truncated"));
        };
        let s = &self.buf[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(a))
    }
    fn u64(&mut self) -> Result<u64> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
    fn str(&mut self) -> Result<String> {
        let n = self.u32()? as usize;
        let at = self.at;
        let bytes = self.take(n)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| Error::corruption(self.path, (MANIFEST_HEADER_LEN + at) as u64, "payload index string is not UTF-8"))
    }
    fn bad(&self, what: &str) -> Error {
        Error::corruption(self.path, (MANIFEST_HEADER_LEN + self.at) as u64, what.to_string())
    }
}

/// Decode and verify a payload index file; returns the indexes and the sequence number they cover.
pub fn decode_payload_file(buf: &[u8], path: &Path) -> Result<(PayloadIndexes, u64)> {
    let body = decode_framed(PAYLOAD_MAGIC, PAYLOAD_FILE_VERSION, buf, path)?;
    let mut c = Cursor { buf: body, at: 0, path };
    let covered_seq = c.u64()?;
    let count = c.u32()?;
    let mut out = PayloadIndexes::default();
    for _ in 0..count {
        let field = c.str()?;
        let path_segments = super::validate_field(&field).map_err(|_| c.bad("payload index field is not a valid path"))?;
        let kind = IndexKind::from_code(c.u8()?).ok_or_else(|| c.bad("unknown payload index kind"))?;
        let mut idx = FieldIndex::new(field.clone(), path_segments, kind);
        let rows = c.u64()?;
        for _ in 0..rows {
            let label = c.u64()?;
            let n = c.u32()? as usize;
            if n > c.buf.len() {
                return Err(c.bad("payload index key count exceeds the file"));
            }
            let mut keys = Vec::with_capacity(n);
            for _ in 0..n {
                keys.push(match kind {
                    IndexKind::Keyword => Key::Str(c.str()?.into_boxed_str()),
                    IndexKind::Number => Key::Num(f64::from_bits(c.u64()?)),
                    IndexKind::Bool => Key::Bool(c.u8()? != 0),
                });
            }
            if !keys.windows(2).all(|w| w[0] < w[1]) {
                return Err(c.bad("payload index keys are not sorted and distinct"));
            }
            idx.insert(label, keys);
        }
        out.fields.insert(field, idx);
    }
    if c.at != body.len() {
        return Err(c.bad("payload index body has trailing bytes"));
    }
    Ok((out, covered_seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> PayloadIndexes {
        let mut p = PayloadIndexes::default();
        p.fields.insert("lang".into(), FieldIndex::new("lang".into(), vec!["lang".into()], IndexKind::Keyword));
        p.fields.insert("m.y".into(), FieldIndex::new("m.y".into(), vec!["m".into(), "y".into()], IndexKind::Number));
        p.on_put(7, r#"{"lang": ["en", "de"], "m": {"y": 2020}}"#, None);
        p.on_put(9, r#"{"lang": "fr", "m": {"y": -0.0}}"#, None);
        p
    }

    #[test]
    fn payload_file_round_trips() {
        let p = sample();
        let bytes = encode_payload_file(&p, 42);
        let (q, seq) = decode_payload_file(&bytes, Path::new("x.pidx")).expect("decode");
        assert_eq!(seq, 42);
        assert_eq!(q.defs(), p.defs());
        for (name, f) in &p.fields {
            let g = &q.fields[name];
            assert_eq!(g.entries, f.entries);
            assert_eq!(g.postings.len(), f.postings.len());
            for (l, k) in &f.keys_of {
                assert_eq!(g.label_keys(*l), &k[..]);
            }
        }
        assert_eq!(q.fields["lang"].entries, 3);
    }

    #[test]
    fn every_flipped_bit_is_detected() {
        let bytes = encode_payload_file(&sample(), 1);
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            assert!(decode_payload_file(&b, Path::new("x.pidx")).is_err(), "flip at {i} accepted");
        }
        assert!(decode_payload_file(&bytes[..bytes.len() - 1], Path::new("x.pidx")).is_err());
    }
}
