//! Test fixtures shared by the scrub tests: a store on each storage (the real file system in a
//! temporary directory, and `FaultStorage`), and file bytes of each format with their damages.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::{verify_file_on, Damage, Expected, FileCheck, FileKind, ScanControl};
use crate::datafile::{DataFileHeader, DataFileWriter, KIND_BASE};
use crate::distance::Metric;
use crate::durable::write_synced;
use crate::fault::FaultStorage;
use crate::storage::{OsStorage, Storage};
use crate::wal::record::{encode_record, encode_segment_header, RECORD_TYPE_BATCH};

/// A directory on one storage; a real one is removed when this is dropped.
pub struct Dir {
    pub storage: Arc<dyn Storage>,
    pub path: PathBuf,
}

impl Dir {
    pub fn os(tag: &str) -> Dir {
        static N: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!("cairn-scrub-{tag}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
        let _ = OsStorage.remove_dir_all(&path);
        OsStorage.create_dir_all(&path).expect("temp dir");
        Dir { storage: Arc::new(OsStorage), path }
    }

    pub fn fault() -> Dir {
        let fs = FaultStorage::new();
        let path = PathBuf::from("/t");
        fs.create_dir_all(&path).expect("dir");
        Dir { storage: Arc::new(fs), path }
    }

    /// The same test on the real file system and on `FaultStorage`.
    pub fn both(tag: &str) -> [Dir; 2] {
        [Dir::os(tag), Dir::fault()]
    }

    pub fn join(&self, rel: &str) -> PathBuf {
        self.path.join(rel)
    }

    pub fn put(&self, path: &Path, bytes: &[u8]) {
        write_synced(self.storage.as_ref(), path, bytes).expect("write");
    }

    /// Write `bytes`, or remove the file for None.
    pub fn put_or_remove(&self, path: &Path, bytes: &Option<Vec<u8>>) {
        match bytes {
            Some(b) => self.put(path, b),
            None => self.storage.remove(path).expect("remove"),
        }
    }

    pub fn read(&self, path: &Path) -> Vec<u8> {
        self.storage.read(path).expect("read")
    }

    pub fn check(&self, path: &Path, kind: FileKind, exp: Option<Expected>) -> FileCheck {
        verify_file_on(self.storage.as_ref(), path, kind, exp, &ScanControl::new(None))
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        if self.path.is_absolute() && self.path.starts_with(std::env::temp_dir()) {
            let _ = self.storage.remove_dir_all(&self.path);
        }
    }
}

pub fn segment_bytes(rows: usize) -> Vec<u8> {
    let mut w = DataFileWriter::new(&DataFileHeader {
        version: crate::datafile::DATAFILE_VERSION,
        dim: 4,
        collection_id: 1,
        covered_seq: 9,
        metric: Metric::L2,
        kind: KIND_BASE,
    });
    for i in 0..rows {
        w.upsert(&format!("row-{i}"), i as u64, &[i as f32, 1.0, 2.0, 3.0], "{\"k\":1}");
    }
    w.finish().0
}

pub fn wal_bytes(first: u64, n: u64) -> Vec<u8> {
    let mut buf = encode_segment_header(first).to_vec();
    for s in first..first + n {
        encode_record(&mut buf, RECORD_TYPE_BATCH, s, s, &[s as u8; 21]);
    }
    buf
}

pub fn expected(bytes: &[u8]) -> Expected {
    Expected { bytes: bytes.len() as u64, xxh3: crate::checksum::xxh3(bytes) }
}

/// Damage the bytes of `good` every way the scrub matrix does and return (name, bytes, expected kind).
pub fn damages(good: &[u8]) -> Vec<(&'static str, Option<Vec<u8>>, Damage)> {
    let mut flip = good.to_vec();
    flip[good.len() / 2] ^= 0x10;
    let mut zero = good.to_vec();
    let z = good.len() / 3;
    for b in &mut zero[z..(z + 4096).min(good.len())] {
        *b = 0;
    }
    let mut appended = good.to_vec();
    appended.push(0xa5);
    vec![
        ("flip", Some(flip), Damage::Checksum),
        ("zero", Some(zero), Damage::Checksum),
        ("truncate", Some(good[..good.len() / 2 + 3].to_vec()), Damage::Truncated),
        ("append", Some(appended), Damage::Checksum),
        ("delete", None, Damage::Missing),
    ]
}
