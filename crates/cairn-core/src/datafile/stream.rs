//! Reading an intact data file through a small buffer instead of whole: an open touches a
//! window of `STREAM_CHUNK` bytes rather than a fresh buffer the size of the file (58 MB at
//! 100k x 128, every page of it faulted in and zeroed by the kernel before the copy). The
//! checks are those of `visit_data_file`: each record's checksum and framing before it is
//! visited, then the footer's own checksum, its record count and the body checksum. Anything
//! else is not handled here: the caller discards what it built and reads the file whole with
//! `visit_data_file`, which locates, names and (where it can) skips the damage.

use super::format::{check_footer, check_header, DataFileHeader, DATAFILE_HEADER_LEN, FOOTER_LEN, R_LEN};
use super::reader::{parse_record, RecordRef};
use crate::checksum::Xxh3Stream;
use crate::storage::StorageFile;
use crate::wal::record::u32_at;

/// Bytes read at a time; a longer record grows the window to hold it (at most the file).
const STREAM_CHUNK: usize = 1 << 20;

/// Visit every record of the `len`-byte data `file`, in order, each as soon as it verified.
/// `Some(header)` when the whole file verified; `None` at the first record, length, read or
/// footer that does not (records visited before it must be discarded by the caller).
pub fn stream_data_file(file: &dyn StorageFile, len: u64, mut visit: impl FnMut(RecordRef<'_>)) -> Option<DataFileHeader> {
    let len = usize::try_from(len).ok()?;
    if len < DATAFILE_HEADER_LEN + FOOTER_LEN {
        return None;
    }
    let footer = len - FOOTER_LEN;
    let mut w = Window { file, buf: Vec::with_capacity(STREAM_CHUNK), base: 0, read_to: 0, len, footer, body: Xxh3Stream::default() };
    w.cover(0, DATAFILE_HEADER_LEN)?;
    let header = check_header(&w.buf[..DATAFILE_HEADER_LEN]).ok()?;
    let fmt = header.record_format();
    let mut count = 0u64;
    let mut pos = DATAFILE_HEADER_LEN;
    while pos < footer {
        if pos + fmt.fixed + 8 > footer {
            return None;
        }
        w.cover(pos, pos + fmt.fixed + 8)?;
        let rec_len = u32_at(&w.buf, pos - w.base + R_LEN) as usize;
        if rec_len < fmt.fixed + 8 || pos + rec_len > footer {
            return None;
        }
        w.cover(pos, pos + rec_len)?;
        let at = pos - w.base;
        let (rec, parsed) = parse_record(&w.buf, at, at + rec_len, &fmt).ok()?;
        visit(rec);
        count += 1;
        pos += parsed;
    }
    w.cover(footer, len)?;
    let (expected_count, body_sum) = check_footer(&w.buf[footer - w.base..len - w.base])?;
    (expected_count == count && body_sum == w.body.digest()).then_some(header)
}

/// The bytes `[base, read_to)` of the file, read in order; the body checksum is taken as they
/// arrive.
struct Window<'f> {
    file: &'f dyn StorageFile,
    buf: Vec<u8>,
    base: usize,
    read_to: usize,
    len: usize,
    footer: usize,
    body: Xxh3Stream,
}

impl Window<'_> {
    /// Hold at least `[from, to)` (`to <= len`), dropping what lies before `from`. `None` when
    /// the file cannot be read that far (it shrank, or a read failed).
    fn cover(&mut self, from: usize, to: usize) -> Option<()> {
        if to <= self.read_to {
            return Some(());
        }
        self.buf.drain(..from - self.base);
        self.base = from;
        let want = (to - self.read_to).max(STREAM_CHUNK).min(self.len - self.read_to);
        let start = self.buf.len();
        let got = self.file.read_append(self.read_to as u64, want, &mut self.buf).ok()?;
        if got != want {
            return None;
        }
        let body = self.footer.saturating_sub(self.read_to).min(got);
        self.body.update(&self.buf[start..start + body]);
        self.read_to += got;
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::datafile::format::DATAFILE_VERSION_V1;
    use crate::datafile::{visit_data_file, DataFileWriter, DATAFILE_VERSION, KIND_BASE};
    use crate::distance::Metric;
    use crate::fault::FaultStorage;
    use crate::storage::Storage;

    fn describe(r: RecordRef<'_>) -> String {
        match r {
            RecordRef::Upsert { id, label, vector, metadata } => format!("+{id}/{label}/{vector:?}/{}:{}", metadata.len(), &metadata[..8]),
            RecordRef::Delete { id, label } => format!("-{id}/{label}"),
        }
    }

    /// Records spanning several chunks, some across their boundaries, and one longer than a
    /// chunk.
    fn file_bytes(version: u32) -> Vec<u8> {
        let mut w = DataFileWriter::new(&DataFileHeader {
            version,
            dim: 5,
            collection_id: 3,
            covered_seq: 40,
            metric: Metric::L2,
            kind: KIND_BASE,
        });
        for i in 0..3000u64 {
            let meta = format!("{{\"i\":{i},\"pad\":\"{}\"}}", "x".repeat((i as usize * 37) % 1500));
            w.upsert(&format!("row-{i:05}"), i << 24, &[i as f32, 1.0, -2.5, 0.0, 3.25], &meta);
            if i % 7 == 0 {
                w.delete(&format!("gone-{i}"), (i << 24) | 1);
            }
            if i == 1500 {
                w.upsert("huge", 9, &[0.0; 5], &format!("{{\"big\":\"{}\"}}", "y".repeat(STREAM_CHUNK + STREAM_CHUNK / 2)));
            }
        }
        w.finish().0
    }

    fn stream(bytes: &[u8], claimed_len: u64) -> Option<Vec<String>> {
        let path = Path::new("/d/x.seg");
        let fs = FaultStorage::holding(path, bytes);
        let file = fs.open_read(path).expect("open");
        let mut seen = Vec::new();
        stream_data_file(file.as_ref(), claimed_len, |r| seen.push(describe(r))).map(|_| seen)
    }

    #[test]
    fn streaming_visits_exactly_what_the_whole_file_read_visits() {
        for version in [DATAFILE_VERSION_V1, DATAFILE_VERSION] {
            let bytes = file_bytes(version);
            assert!(bytes.len() > 3 * STREAM_CHUNK, "the file spans several chunks");
            let mut whole = Vec::new();
            visit_data_file(&bytes, Path::new("x.seg"), false, |r| whole.push(describe(r))).expect("valid");
            assert_eq!(stream(&bytes, bytes.len() as u64).expect("intact"), whole, "v{version}");
        }
    }

    #[test]
    fn streaming_declines_every_damage_the_whole_file_read_reports() {
        let bytes = file_bytes(DATAFILE_VERSION);
        let len = bytes.len();
        let huge = bytes.windows(4).position(|w| w == b"huge").expect("the long record");
        // Header, records at and across chunk boundaries, inside the long record, the footer.
        let spots = [
            0,
            9,
            60,
            100,
            STREAM_CHUNK - 3,
            STREAM_CHUNK,
            STREAM_CHUNK + 5,
            2 * STREAM_CHUNK + 1,
            huge,
            huge + STREAM_CHUNK,
            len - 40,
            len - 1,
        ];
        for at in spots {
            let mut flipped = bytes.clone();
            flipped[at] ^= 0x10;
            assert!(visit_data_file(&flipped, Path::new("x.seg"), false, |_| {}).is_err(), "flip at {at}");
            assert!(stream(&flipped, len as u64).is_none(), "flip at {at} streamed as intact");
        }
        // The file shorter than the length it was opened for (it shrank).
        assert!(stream(&bytes[..len - 100], len as u64).is_none());
        assert!(stream(&bytes[..10], len as u64).is_none());
        // Two whole records swapped: each verifies, the body checksum does not.
        let small = file_bytes(DATAFILE_VERSION_V1);
        let first = crate::datafile::format::DATAFILE_HEADER_LEN;
        let a = u32_at(&small, first + R_LEN) as usize;
        let b = u32_at(&small, first + a + R_LEN) as usize;
        let mut swapped = small.clone();
        swapped[first..first + b].copy_from_slice(&small[first + a..first + a + b]);
        swapped[first + b..first + a + b].copy_from_slice(&small[first..first + a]);
        assert!(visit_data_file(&swapped, Path::new("x.seg"), false, |_| {}).is_err());
        assert!(stream(&swapped, swapped.len() as u64).is_none());
    }
}
