//! The manifest names the live checkpoint files and the sequence number they cover
//! (docs/format.md, "Manifest"). It is replaced atomically: temp file, fsync, rename,
//! directory fsync. A second copy, `MANIFEST.copy`, is written the same way right after it,
//! so that one damaged file does not make the whole store unopenable.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::checksum::xxh3;
use crate::distance::Metric;
use crate::durable::write_file_atomic;
use crate::error::{Error, Result};
use crate::layout::{MANIFEST_COPY_FILE, MANIFEST_FILE};
use crate::state::FileRef;
use crate::storage::Storage;
use crate::wal::record::{u32_at, u64_at};

pub const MANIFEST_MAGIC: &[u8; 8] = b"CAIRNMAN";
pub const MANIFEST_VERSION: u32 = 1;
const OFF_VERSION: usize = 8;
const OFF_BODY_LEN: usize = 16;
pub const MANIFEST_HEADER_LEN: usize = 24;

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    /// Every write with a sequence number at or below this is in the checkpoint files.
    pub checkpoint_seq: u64,
    pub checkpoint_time_ms: u64,
    /// Set by a clean close: the WAL must reach exactly this sequence number on the next open,
    /// so a lost tail after a clean close is reported as corruption, not taken for a torn write.
    pub clean_shutdown_seq: Option<u64>,
    pub collections: Vec<ManifestCollection>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ManifestCollection {
    pub id: u64,
    pub name: String,
    pub dim: u32,
    pub metric: Metric,
    pub m: u32,
    pub ef_construction: u32,
    /// Checkpoint data files, oldest first (named `segments` on disk, from before WAL files
    /// alone were called segments).
    #[serde(rename = "segments")]
    pub data_files: Vec<FileRef>,
    /// The persisted HNSW graph (`data/<id>-<seq>.hnsw`); absent until the first checkpoint.
    #[serde(default)]
    pub index: Option<FileRef>,
    /// Records whose stored bytes were found damaged and could not be repaired. They override
    /// every data file: reads of them fail until they are written or deleted again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unreadable: Vec<crate::state::UnreadableRecord>,
    /// Payload indexes of the collection (`createIndex`); rebuilt from the rows on open when
    /// `payload_file` is absent or does not verify.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub payload_indexes: Vec<crate::payload::PayloadIndexDef>,
    /// The persisted payload indexes (`data/<id>-<seq>.pidx`, docs/format.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_file: Option<FileRef>,
    /// Live rows at `checkpoint_seq`, unreadable ones included, so that a status reader counts
    /// rows without reading the data files. Absent in manifests written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
}

pub fn encode(m: &Manifest) -> Vec<u8> {
    encode_framed(MANIFEST_MAGIC, MANIFEST_VERSION, &serde_json::to_vec_pretty(m).unwrap_or_default())
}

/// The framing shared by the manifest and snapshot manifests: magic, version, length, JSON
/// body, xxh3 of everything before it.
pub fn encode_framed(magic: &[u8; 8], version: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(MANIFEST_HEADER_LEN + body.len() + 8);
    out.extend_from_slice(magic);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&[0u8; 4]);
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(body);
    let sum = xxh3(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    out
}

pub fn decode(buf: &[u8], path: &Path) -> Result<Manifest> {
    let body = decode_framed(MANIFEST_MAGIC, MANIFEST_VERSION, buf, path)?;
    serde_json::from_slice(body).map_err(|e| Error::corruption(path, MANIFEST_HEADER_LEN as u64, format!("manifest body: {e}")))
}

pub fn decode_framed<'a>(magic: &[u8; 8], expected_version: u32, buf: &'a [u8], path: &Path) -> Result<&'a [u8]> {
    if buf.len() < MANIFEST_HEADER_LEN + 8 || &buf[..8] != magic {
        return Err(Error::corruption(path, 0, "bad magic or length"));
    }
    let body_len = u64_at(buf, OFF_BODY_LEN) as usize;
    if MANIFEST_HEADER_LEN.checked_add(body_len).and_then(|n| n.checked_add(8)) != Some(buf.len()) {
        return Err(Error::corruption(path, OFF_BODY_LEN as u64, "length does not match the header"));
    }
    let end = MANIFEST_HEADER_LEN + body_len;
    if u64_at(buf, end) != xxh3(&buf[..end]) {
        return Err(Error::corruption(path, end as u64, "checksum mismatch"));
    }
    let version = u32_at(buf, OFF_VERSION);
    if version != expected_version {
        return Err(Error::corruption(path, OFF_VERSION as u64, format!("unsupported version {version}")));
    }
    Ok(&buf[MANIFEST_HEADER_LEN..end])
}

pub fn load(storage: &dyn Storage, dir: &Path) -> Result<Option<Manifest>> {
    let path = dir.join(MANIFEST_FILE);
    if !storage.exists(&path) {
        return Ok(None);
    }
    let buf = storage.read(&path).map_err(|e| Error::io(&path, e))?;
    decode(&buf, &path).map(Some)
}

/// Like `load`, but a damaged or missing `MANIFEST` is replaced by an intact `MANIFEST.copy`:
/// returns the manifest and, when the copy was used, the error the primary gave.
pub fn load_or_copy(storage: &dyn Storage, dir: &Path) -> Result<Option<(Manifest, Option<Error>)>> {
    let copy_path = dir.join(MANIFEST_COPY_FILE);
    let primary = match load(storage, dir) {
        Ok(Some(m)) => return Ok(Some((m, None))),
        Ok(None) if !storage.exists(&copy_path) => return Ok(None),
        Ok(None) => Error::corruption(dir.join(MANIFEST_FILE), 0, "MANIFEST is missing but MANIFEST.copy exists"),
        Err(e @ Error::Corruption { .. }) => e,
        Err(e) => return Err(e),
    };
    let from_copy = storage.read(&copy_path).ok().and_then(|buf| decode(&buf, &copy_path).ok());
    match from_copy {
        Some(m) => Ok(Some((m, Some(primary)))),
        None => Err(primary),
    }
}

/// Replace `MANIFEST`, then `MANIFEST.copy`, each atomically. A crash between the two leaves
/// the copy one checkpoint behind; it is only read when `MANIFEST` is damaged, and then the
/// WAL's continuity check refuses it rather than serve an older state.
pub fn store(storage: &dyn Storage, dir: &Path, m: &Manifest) -> Result<()> {
    let bytes = encode(m);
    for name in [MANIFEST_FILE, MANIFEST_COPY_FILE] {
        let path = dir.join(name);
        write_file_atomic(storage, &path, &bytes).map_err(|e| Error::io(&path, e))?;
    }
    Ok(())
}

/// Make `MANIFEST.copy` equal to an intact `MANIFEST` again (absent in stores written before it
/// existed, or one checkpoint behind after a crash between the two renames).
pub fn refresh_copy(storage: &dyn Storage, dir: &Path) -> Result<()> {
    let path = dir.join(MANIFEST_FILE);
    let copy_path = dir.join(MANIFEST_COPY_FILE);
    let primary = storage.read(&path).map_err(|e| Error::io(&path, e))?;
    if storage.read(&copy_path).ok().as_deref() != Some(primary.as_slice()) {
        write_file_atomic(storage, &copy_path, &primary).map_err(|e| Error::io(&copy_path, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::FileRef;

    /// The Rust field is `data_files`; the JSON key stays `segments`, so stores written before
    /// the rename open unchanged.
    #[test]
    fn manifest_json_names_data_files_segments() {
        let file = FileRef { file: "f.seg".into(), bytes: 1, xxh3: "00".into(), records: 1, covered_seq: 2 };
        let c = ManifestCollection {
            id: 1,
            name: "c".into(),
            dim: 2,
            metric: Metric::L2,
            m: 16,
            ef_construction: 64,
            data_files: vec![file],
            index: None,
            unreadable: Vec::new(),
            payload_indexes: Vec::new(),
            payload_file: None,
            rows: Some(1),
        };
        let m = Manifest { checkpoint_seq: 2, checkpoint_time_ms: 3, clean_shutdown_seq: None, collections: vec![c] };
        let json: serde_json::Value = serde_json::to_value(&m).expect("serialize");
        assert_eq!(json["collections"][0]["segments"][0]["file"], "f.seg");
        assert!(json["collections"][0].get("data_files").is_none());
        let back = decode(&encode(&m), Path::new("MANIFEST")).expect("decode");
        assert_eq!(back, m);
    }
}
