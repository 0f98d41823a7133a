//! Reading an intact data file through a small buffer instead of whole: an open touches a
//! window of `STREAM_CHUNK` bytes rather than a fresh buffer the size of the file (58 MB at
//! 100k x 128, every page of it faulted in and zeroed by the kernel before the copy). The
//! checks are those of `visit_data_file`: each record's checksum and framing before it is
//! visited, then the footer's own checksum, its record count and the body checksum. Anything
//! else is not handled here: the caller discards what it built and reads the file whole with
//! `visit_data_file`, which locates, names and (where it can) skips the damage.
//!
//! `stream_data_file_parallel` does the same with each window's records checked and built on
//! rayon's threads (long vectors, where a record's checksum and copy outweigh the hand-off).

use super::format::{check_footer, check_header, DataFileHeader, DATAFILE_HEADER_LEN, FOOTER_LEN, R_LEN};
use super::reader::{parse_record, RecordRef};
use crate::checksum::Xxh3Stream;
use crate::storage::StorageFile;
use crate::wal::record::u32_at;

/// Bytes read at a time; a longer record grows the window to hold it (at most the file).
const STREAM_CHUNK: usize = 1 << 20;
/// Bytes read at a time by `stream_data_file_parallel`: a few thousand records at 784-d, so
/// that each parallel pass has enough to spread.
const PARALLEL_STREAM_CHUNK: usize = 8 << 20;

/// Visit every record of the `len`-byte data `file`, in order, each as soon as it verified.
/// `Some(header)` when the whole file verified; `None` at the first record, length, read or
/// footer that does not (records visited before it must be discarded by the caller).
pub fn stream_data_file(file: &dyn StorageFile, len: u64, mut visit: impl FnMut(RecordRef<'_>)) -> Option<DataFileHeader> {
    let (mut w, header) = Window::start(file, len, STREAM_CHUNK)?;
    let footer = w.footer;
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
    w.finish(header, count)
}

/// `stream_data_file`, with the records of each window verified and turned into a `T` by `make`
/// on rayon's threads; `visit` receives them in file order. The same checks and the same `None`.
pub fn stream_data_file_parallel<T: Send>(
    file: &dyn StorageFile,
    len: u64,
    make: impl Fn(RecordRef<'_>) -> T + Sync,
    visit: impl FnMut(T),
) -> Option<DataFileHeader> {
    stream_parallel_by(file, len, PARALLEL_STREAM_CHUNK, make, visit)
}

/// `stream_data_file_parallel` reading `chunk` bytes at a time.
fn stream_parallel_by<T: Send>(
    file: &dyn StorageFile,
    len: u64,
    chunk: usize,
    make: impl Fn(RecordRef<'_>) -> T + Sync,
    mut visit: impl FnMut(T),
) -> Option<DataFileHeader> {
    use rayon::prelude::*;
    let (mut w, header) = Window::start(file, len, chunk)?;
    let footer = w.footer;
    let fmt = header.record_format();
    let mut count = 0u64;
    let mut pos = DATAFILE_HEADER_LEN;
    // (start, length) of the window's whole records, relative to the window.
    let mut spans: Vec<(usize, usize)> = Vec::new();
    while pos < footer {
        if pos + fmt.fixed + 8 > footer {
            return None;
        }
        w.cover(pos, pos + fmt.fixed + 8)?;
        let first_len = u32_at(&w.buf, pos - w.base + R_LEN) as usize;
        if first_len < fmt.fixed + 8 || pos + first_len > footer {
            return None;
        }
        // A record longer than the window grows it to hold that record.
        w.cover(pos, pos + first_len)?;
        // Frame by the length fields every whole record the window holds; damage found here is
        // left for the record-by-record check below, or for the next window.
        spans.clear();
        let mut at = pos;
        while at < footer && at + fmt.fixed + 8 <= w.read_to {
            let rec_len = u32_at(&w.buf, at - w.base + R_LEN) as usize;
            if rec_len < fmt.fixed + 8 || at + rec_len > footer {
                if spans.is_empty() {
                    return None;
                }
                break;
            }
            if at + rec_len > w.read_to {
                break;
            }
            spans.push((at - w.base, rec_len));
            at += rec_len;
        }
        let buf = &w.buf;
        let built: Vec<Option<(T, usize)>> = spans
            .par_iter()
            .map(|&(start, rec_len)| parse_record(buf, start, start + rec_len, &fmt).ok().map(|(rec, parsed)| (make(rec), parsed)))
            .collect();
        for ((start, rec_len), item) in spans.iter().zip(built) {
            let (item, parsed) = item?;
            if parsed != *rec_len {
                return None;
            }
            debug_assert_eq!(*start + w.base, pos);
            visit(item);
            count += 1;
            pos += parsed;
        }
    }
    w.finish(header, count)
}

/// The bytes `[base, read_to)` of the file, read in order; the body checksum is taken as they
/// arrive.
struct Window<'f> {
    file: &'f dyn StorageFile,
    buf: Vec<u8>,
    /// Bytes read at a time (more when a record needs it).
    chunk: usize,
    base: usize,
    read_to: usize,
    len: usize,
    footer: usize,
    body: Xxh3Stream,
}

impl<'f> Window<'f> {
    /// A window over the `len`-byte data `file` reading `chunk` bytes at a time, holding its
    /// verified header; `None` if the file is too short or the header does not verify.
    fn start(file: &'f dyn StorageFile, len: u64, chunk: usize) -> Option<(Window<'f>, DataFileHeader)> {
        let len = usize::try_from(len).ok()?;
        if len < DATAFILE_HEADER_LEN + FOOTER_LEN {
            return None;
        }
        let footer = len - FOOTER_LEN;
        let mut w = Window { file, buf: Vec::with_capacity(chunk), chunk, base: 0, read_to: 0, len, footer, body: Xxh3Stream::default() };
        w.cover(0, DATAFILE_HEADER_LEN)?;
        let header = check_header(&w.buf[..DATAFILE_HEADER_LEN]).ok()?;
        Some((w, header))
    }

    /// The header back if the footer (read now) verifies, counts `count` records and matches
    /// the body checksum taken as the file was read.
    fn finish(&mut self, header: DataFileHeader, count: u64) -> Option<DataFileHeader> {
        self.cover(self.footer, self.len)?;
        let (expected_count, body_sum) = check_footer(&self.buf[self.footer - self.base..self.len - self.base])?;
        (expected_count == count && body_sum == self.body.digest()).then_some(header)
    }

    /// Hold at least `[from, to)` (`to <= len`), dropping what lies before `from`. `None` when
    /// the file cannot be read that far (it shrank, or a read failed).
    fn cover(&mut self, from: usize, to: usize) -> Option<()> {
        if to <= self.read_to {
            return Some(());
        }
        self.buf.drain(..from - self.base);
        self.base = from;
        let want = (to - self.read_to).max(self.chunk).min(self.len - self.read_to);
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

    /// What the sequential stream visits, after checking that the parallel one (in windows of
    /// STREAM_CHUNK, so that records cross windows and one is longer than a window) visits
    /// exactly the same or declines exactly as often.
    fn stream(bytes: &[u8], claimed_len: u64) -> Option<Vec<String>> {
        let path = Path::new("/d/x.seg");
        let fs = FaultStorage::holding(path, bytes);
        let file = fs.open_read(path).expect("open");
        let mut seen = Vec::new();
        let sequential = stream_data_file(file.as_ref(), claimed_len, |r| seen.push(describe(r))).map(|_| seen);
        let mut seen = Vec::new();
        let parallel = stream_parallel_by(file.as_ref(), claimed_len, STREAM_CHUNK, describe, |d| seen.push(d)).map(|_| seen);
        assert_eq!(parallel, sequential, "parallel and sequential streams disagree");
        sequential
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
