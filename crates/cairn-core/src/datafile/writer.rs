//! `DataFileWriter` encodes a data file record by record. The caller either takes the whole file
//! from `finish`, or writes it as it is built: `flush_into` hands over the bytes encoded so far
//! (the body checksum is taken as they leave), so a checkpoint holds about one chunk of a file
//! in memory rather than all of it. Records are written in the order given and never rewritten.

use super::format::{
    ident_sum, DataFileHeader, RecordFormat, DATAFILE_HEADER_LEN, DATAFILE_MAGIC, FOOTER_MAGIC, H_CHECKSUM, H_COLLECTION, H_COVERED_SEQ,
    H_DIM, H_KIND, H_METRIC, H_VERSION, REC_DELETE, REC_UPSERT, R_IDENT_SUM,
};
use crate::checksum::{xxh3, Xxh3Stream};
use crate::wal::record::align8;

pub struct DataFileWriter {
    /// Bytes encoded and not yet handed to `flush_into`.
    buf: Vec<u8>,
    format: RecordFormat,
    count: u64,
    /// The body checksum of the bytes already flushed.
    body: Xxh3Stream,
}

impl DataFileWriter {
    pub fn new(h: &DataFileHeader) -> DataFileWriter {
        let mut buf = vec![0u8; DATAFILE_HEADER_LEN];
        buf[..8].copy_from_slice(DATAFILE_MAGIC);
        buf[H_VERSION..H_VERSION + 4].copy_from_slice(&h.version.to_le_bytes());
        buf[H_DIM..H_DIM + 4].copy_from_slice(&h.dim.to_le_bytes());
        buf[H_COLLECTION..H_COLLECTION + 8].copy_from_slice(&h.collection_id.to_le_bytes());
        buf[H_COVERED_SEQ..H_COVERED_SEQ + 8].copy_from_slice(&h.covered_seq.to_le_bytes());
        buf[H_METRIC] = h.metric.code();
        buf[H_KIND] = h.kind;
        let sum = xxh3(&buf[..H_CHECKSUM]);
        buf[H_CHECKSUM..DATAFILE_HEADER_LEN].copy_from_slice(&sum.to_le_bytes());
        DataFileWriter { buf, format: h.record_format(), count: 0, body: Xxh3Stream::default() }
    }

    /// Bytes encoded since the last `flush_into`.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Hand the bytes encoded so far to `write` (the next ones follow them in the file), and
    /// drop them. `finish` then returns only what was encoded after the last flush.
    pub fn flush_into<E>(&mut self, write: impl FnOnce(&[u8]) -> Result<(), E>) -> Result<(), E> {
        self.body.update(&self.buf);
        write(&self.buf)?;
        self.buf.clear();
        Ok(())
    }

    pub fn upsert(&mut self, id: &str, label: u64, vector: &[f32], metadata: &str) {
        self.record(REC_UPSERT, id, label, Some(vector), metadata);
    }

    pub fn delete(&mut self, id: &str, label: u64) {
        self.record(REC_DELETE, id, label, None, "");
    }

    fn record(&mut self, kind: u8, id: &str, label: u64, vector: Option<&[f32]>, metadata: &str) {
        let start = self.buf.len();
        let fixed = self.format.fixed;
        let vec_bytes = vector.map_or(0, |v| v.len() * 4);
        let body = fixed + vec_bytes + id.len() + metadata.len();
        let total = align8(body) + 8;
        self.buf.extend_from_slice(&(total as u32).to_le_bytes());
        self.buf.push(kind);
        self.buf.extend_from_slice(&[0u8; 3]);
        self.buf.extend_from_slice(&label.to_le_bytes());
        self.buf.extend_from_slice(&(id.len() as u16).to_le_bytes());
        self.buf.extend_from_slice(&[0u8; 2]);
        self.buf.extend_from_slice(&(metadata.len() as u32).to_le_bytes());
        if self.format.ident {
            let sum = ident_sum(&self.buf[start..start + R_IDENT_SUM], id.as_bytes());
            self.buf.extend_from_slice(&sum.to_le_bytes());
        }
        if let Some(v) = vector {
            for x in v {
                self.buf.extend_from_slice(&x.to_le_bytes());
            }
        }
        self.buf.extend_from_slice(id.as_bytes());
        self.buf.extend_from_slice(metadata.as_bytes());
        self.buf.resize(start + align8(body), 0);
        let sum = xxh3(&self.buf[start..]);
        self.buf.extend_from_slice(&sum.to_le_bytes());
        self.count += 1;
        debug_assert_eq!(self.buf.len() - start, total);
    }

    /// The rest of the file (all of it when nothing was flushed), footer included, and the
    /// record count.
    pub fn finish(mut self) -> (Vec<u8>, u64) {
        self.body.update(&self.buf);
        let body_sum = self.body.digest();
        let start = self.buf.len();
        self.buf.extend_from_slice(FOOTER_MAGIC);
        self.buf.extend_from_slice(&self.count.to_le_bytes());
        self.buf.extend_from_slice(&body_sum.to_le_bytes());
        let sum = xxh3(&self.buf[start..]);
        self.buf.extend_from_slice(&sum.to_le_bytes());
        (self.buf, self.count)
    }
}
