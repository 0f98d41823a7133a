//! Checkpoint data files (docs/format.md, "Segment file"): immutable, one per collection per
//! checkpoint. A base file holds every row; a delta file holds the rows written and the ids
//! deleted since the previous checkpoint. Every record carries its own xxh3, so one bad
//! vector is detected and named without distrusting the rest. Version 2 adds a checksum of
//! each record's identity (framing, label, id), so a record whose vector or metadata is damaged
//! is still known by id: it can be repaired from the WAL or reported unreadable, never guessed.
//!
//! - `format.rs`: byte offsets, magic and versions; the header and footer, checked alone.
//! - `writer.rs`: `DataFileWriter`, which builds a whole file in memory.
//! - `reader.rs`: parsing and verifying records, and locating damaged ones by identity.
//! - `stream.rs`: verifying an intact file through a small buffer, as an open reads it.
//! - `lookup.rs`: finding ids by binary search, reading a few windows instead of the file.

mod format;
mod lookup;
mod reader;
mod stream;
mod writer;

pub use format::{
    check_footer, check_header, file_len, read_header, DataFileHeader, RecordFormat, DATAFILE_HEADER_LEN, DATAFILE_MAGIC, DATAFILE_VERSION,
    FOOTER_LEN, FOOTER_MAGIC, KIND_BASE, KIND_DELTA, REC_DELETE, REC_UPSERT, R_FIXED,
};
pub use lookup::IdLookup;
pub use reader::{
    check_record, read_data_file, record_id_hint, record_identity, record_ids, visit_data_file, BadRecord, DataFileContents, DataRecord,
    RecordIdentity, RecordRef,
};
pub use stream::{stream_data_file, stream_data_file_parallel};
pub use writer::DataFileWriter;

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::format::{DATAFILE_VERSION_V1, R_FIXED_V2, R_KIND};
    use super::*;
    use crate::distance::Metric;
    use crate::wal::record::u32_at;

    fn sample() -> Vec<u8> {
        sample_v(DATAFILE_VERSION)
    }

    fn sample_v(version: u32) -> Vec<u8> {
        let mut w =
            DataFileWriter::new(&DataFileHeader { version, dim: 3, collection_id: 1, covered_seq: 9, metric: Metric::L2, kind: KIND_BASE });
        w.upsert("a", 2, &[1.0, 2.0, 3.0], "{\"t\":1}");
        w.delete("b", 5);
        w.upsert("c", 7, &[0.5, 0.0, -1.0], "null");
        w.finish().0
    }

    /// The parallel stream hands back exactly the records the sequential visit sees, in order,
    /// for both versions; any flipped byte, the footer's included, makes it decline (`None`),
    /// which sends an open to the record-by-record path that names the damage.
    #[test]
    fn parallel_stream_agrees_with_visit_and_declines_any_damage() {
        let describe = |r: RecordRef<'_>| match r {
            RecordRef::Upsert { id, label, vector, metadata } => format!("+{id}/{label}/{vector:?}/{metadata}"),
            RecordRef::Delete { id, label } => format!("-{id}/{label}"),
        };
        let stream = |bytes: &[u8]| {
            let path = Path::new("/d/x.seg");
            let fs = crate::fault::FaultStorage::holding(path, bytes);
            let file = crate::storage::Storage::open_read(&fs, path).expect("open");
            let mut seen = Vec::new();
            stream_data_file_parallel(file.as_ref(), bytes.len() as u64, describe, |d| seen.push(d)).map(|_| seen)
        };
        for version in [DATAFILE_VERSION_V1, DATAFILE_VERSION] {
            let buf = sample_v(version);
            let mut visited = Vec::new();
            visit_data_file(&buf, Path::new("x.seg"), false, |r| visited.push(describe(r))).expect("valid");
            assert_eq!(stream(&buf).expect("no damage"), visited, "v{version}");
            for byte in DATAFILE_HEADER_LEN..buf.len() {
                let mut flipped = buf.clone();
                flipped[byte] ^= 0x04;
                assert!(stream(&flipped).is_none(), "v{version}: flip at {byte}");
            }
        }
    }

    /// A file handed out in pieces by `flush_into` (after every record, or never) is byte for
    /// byte the file built whole, and `record_len`/`file_len` give its length in advance.
    #[test]
    fn a_file_flushed_in_pieces_is_the_file_built_whole_and_its_length_is_known_before() {
        for version in [DATAFILE_VERSION_V1, DATAFILE_VERSION] {
            let header = DataFileHeader { version, dim: 3, collection_id: 1, covered_seq: 9, metric: Metric::L2, kind: KIND_BASE };
            let rows: Vec<(String, Option<String>)> =
                (0..50).map(|i| (format!("id-{i}"), (i % 5 != 0).then(|| format!("{{\"n\":\"{}\"}}", "z".repeat(i))))).collect();
            let fmt = header.record_format();
            let planned = file_len(
                rows.iter().map(|(id, meta)| fmt.record_len(meta.is_some(), id.len(), meta.as_ref().map_or(0, |m| m.len()))).sum(),
            );
            let build = |flush_every: Option<usize>| {
                let mut w = DataFileWriter::new(&header);
                let mut out = Vec::new();
                for (i, (id, meta)) in rows.iter().enumerate() {
                    match meta {
                        Some(m) => w.upsert(id, i as u64, &[i as f32, 0.5, -1.0], m),
                        None => w.delete(id, i as u64),
                    }
                    if flush_every.is_some_and(|n| i % n == 0) {
                        w.flush_into(|b| {
                            out.extend_from_slice(b);
                            Ok::<_, ()>(())
                        })
                        .expect("flush");
                    }
                }
                let (tail, count) = w.finish();
                out.extend_from_slice(&tail);
                (out, count)
            };
            let (whole, count) = build(None);
            assert_eq!(count, 50);
            assert_eq!(whole.len(), planned, "v{version}");
            for every in [1, 3, 7] {
                assert_eq!(build(Some(every)).0, whole, "v{version}, flushed every {every}");
            }
            read_data_file(&whole, Path::new("x.seg"), false).expect("valid");
        }
    }

    #[test]
    fn data_file_round_trips() {
        let buf = sample();
        let c = read_data_file(&buf, Path::new("x.seg"), false).expect("valid data file");
        assert_eq!(c.records.len(), 3);
        assert_eq!(c.header.covered_seq, 9);
        match &c.records[2] {
            DataRecord::Upsert { id, vector, .. } => {
                assert_eq!(*id, "c");
                assert_eq!(vector, &vec![0.5, 0.0, -1.0]);
            }
            _ => panic!("expected upsert"),
        }
    }

    #[test]
    fn any_bit_flip_is_detected_and_located() {
        let buf = sample();
        for byte in 0..buf.len() {
            let mut b = buf.clone();
            b[byte] ^= 0x01;
            assert!(read_data_file(&b, Path::new("x.seg"), false).is_err(), "flip at {byte} undetected");
        }
    }

    #[test]
    fn a_bad_record_is_skipped_when_tolerated() {
        let mut buf = sample();
        buf[DATAFILE_HEADER_LEN + R_FIXED + 1] ^= 0xff; // inside record "a"'s vector
        let c = read_data_file(&buf, Path::new("x.seg"), true).expect("tolerated");
        assert_eq!(c.records.len(), 2);
        assert_eq!(c.bad.len(), 1);
        assert_eq!(c.bad[0].offset, DATAFILE_HEADER_LEN as u64);
    }

    #[test]
    fn version_1_files_are_still_read_and_checked() {
        let buf = sample_v(DATAFILE_VERSION_V1);
        let c = read_data_file(&buf, Path::new("x.seg"), false).expect("valid v1 data file");
        assert_eq!((c.header.version, c.records.len()), (DATAFILE_VERSION_V1, 3));
        for byte in 0..buf.len() {
            let mut b = buf.clone();
            b[byte] ^= 0x10;
            assert!(read_data_file(&b, Path::new("x.seg"), false).is_err(), "flip at {byte} undetected");
        }
    }

    /// Whatever single byte is damaged inside the records, a tolerant read keeps every other
    /// record, and the damaged one's identity is either right or unknown, never wrong.
    #[test]
    fn damage_never_yields_a_wrong_identity_and_costs_one_record() {
        let buf = sample();
        let good = read_data_file(&buf, Path::new("x.seg"), false).expect("valid");
        let ids: Vec<(u8, u64, String)> = good
            .records
            .iter()
            .map(|r| match r {
                DataRecord::Upsert { id, label, .. } => (REC_UPSERT, *label, id.to_string()),
                DataRecord::Delete { id, label } => (REC_DELETE, *label, id.to_string()),
            })
            .collect();
        // Vector bytes of each upsert: damage there must leave the identity known.
        let mut vectors = Vec::new();
        let mut pos = DATAFILE_HEADER_LEN;
        while pos < buf.len() - FOOTER_LEN {
            if buf[pos + R_KIND] == REC_UPSERT {
                vectors.push(pos + R_FIXED_V2..pos + R_FIXED_V2 + 12);
            }
            pos += u32_at(&buf, pos) as usize;
        }
        let (mut known, mut unknown) = (0, 0);
        for byte in DATAFILE_HEADER_LEN..buf.len() - FOOTER_LEN {
            for bit in [0u8, 5] {
                let mut b = buf.clone();
                b[byte] ^= 1 << bit;
                let c = read_data_file(&b, Path::new("x.seg"), true).expect("tolerated");
                assert_eq!(c.bad.len(), 1, "flip at {byte}: one bad record");
                assert_eq!(c.records.len(), 2, "flip at {byte}: the other records survive");
                match &c.bad[0].identity {
                    Some(who) => {
                        known += 1;
                        assert!(ids.contains(&(who.kind, who.label, who.id.clone())), "flip at {byte}: wrong identity {who:?}");
                        let kept: Vec<&str> = c
                            .records
                            .iter()
                            .map(|r| match r {
                                DataRecord::Upsert { id, .. } | DataRecord::Delete { id, .. } => *id,
                            })
                            .collect();
                        assert!(!kept.contains(&who.id.as_str()), "flip at {byte}: damaged record also returned");
                    }
                    None => {
                        unknown += 1;
                        assert!(!vectors.iter().any(|v| v.contains(&byte)), "flip at {byte} in a vector lost the identity");
                    }
                }
            }
        }
        assert!(known > 0 && unknown > 0, "both outcomes exercised: {known} known, {unknown} unknown");
    }
}
