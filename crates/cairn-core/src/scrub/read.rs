//! Reading a file for a check: throttled chunks through `Storage`, each checked while it is
//! still in the CPU cache. Invariant: every byte read is admitted by the scan control first,
//! so the rate holds and a cancel stops the read at the next chunk.

use std::io;

use super::check::{hex, FileCheck};
use super::control::{ScanControl, CHUNK};
use crate::checksum::blocks::Xxh3Blocks;
use crate::storage::StorageFile;

/// A file read front to back from a position, through `Storage`.
pub(super) struct Source {
    file: Box<dyn StorageFile>,
    pos: u64,
}

impl Source {
    pub(super) fn new(file: Box<dyn StorageFile>) -> Source {
        Source { file, pos: 0 }
    }

    pub(super) fn len(&self) -> io::Result<u64> {
        self.file.len()
    }

    pub(super) fn rewind(&mut self) {
        self.pos = 0;
    }

    pub(super) fn seek(&mut self, pos: u64) {
        self.pos = pos;
    }

    /// Fill `buf` unless the file ends first; returns the bytes read.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_up_to(self.pos, buf)?;
        self.pos += n as u64;
        Ok(n)
    }

    fn read_append(&mut self, n: usize, buf: &mut Vec<u8>) -> io::Result<usize> {
        let got = self.file.read_append(self.pos, n, buf)?;
        self.pos += got as u64;
        Ok(got)
    }

    pub(super) fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file.read_at(offset, buf)
    }

    pub(super) fn identity(&self) -> io::Result<crate::storage::FileId> {
        self.file.identity()
    }
}

pub(super) enum Chunk {
    Eof,
    Bytes(usize),
    Cancelled,
}

/// Append up to one chunk of `f` to `buf`, throttled. Reads into the spare capacity, so the
/// buffer is never zero-filled first (that would be one more pass over every byte).
pub(super) fn read_chunk(f: &mut Source, buf: &mut Vec<u8>, ctl: &ScanControl) -> std::io::Result<Chunk> {
    let n = ctl.chunk();
    if !ctl.admit(n) {
        return Ok(Chunk::Cancelled);
    }
    let got = f.read_append(n, buf)?;
    ctl.record(got);
    Ok(if got == 0 { Chunk::Eof } else { Chunk::Bytes(got) })
}

pub(super) enum Next<'a> {
    Bytes(&'a [u8]),
    Eof,
    Cancelled,
}

/// Reads a file chunk by chunk into one buffer, throttled and cancellable; each chunk is checked
/// while it is still in the CPU cache.
pub(super) struct ChunkReader {
    buf: Vec<u8>,
}

impl ChunkReader {
    pub(super) fn new() -> ChunkReader {
        ChunkReader { buf: vec![0; CHUNK] }
    }

    /// The next chunk, at most `left` bytes.
    pub(super) fn next(&mut self, f: &mut Source, ctl: &ScanControl, left: u64) -> std::io::Result<Next<'_>> {
        let n = (ctl.chunk() as u64).min(left) as usize;
        if n == 0 {
            return Ok(Next::Eof);
        }
        if !ctl.admit(n) {
            return Ok(Next::Cancelled);
        }
        let got = f.read(&mut self.buf[..n])?;
        ctl.record(got);
        Ok(if got == 0 { Next::Eof } else { Next::Bytes(&self.buf[..got]) })
    }
}

/// Hash the rest of the file (`out.cancelled` when cancelled).
pub(super) fn hash_all(f: &mut Source, out: &mut FileCheck, ctl: &ScanControl) -> std::io::Result<()> {
    let mut h = Xxh3Blocks::default();
    let mut reader = ChunkReader::new();
    loop {
        match reader.next(f, ctl, u64::MAX)? {
            Next::Cancelled => {
                out.cancelled = true;
                return Ok(());
            }
            Next::Eof => break,
            Next::Bytes(b) => {
                h.update(b);
                out.read += b.len() as u64;
            }
        }
    }
    out.xxh3 = Some(hex(h.digest()));
    Ok(())
}

thread_local! {
    /// The whole-file buffer of this thread, kept between files: a fresh 32 MiB allocation per
    /// WAL segment costs more in page faults than scanning it does.
    static WHOLE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}
/// A larger buffer than this is released after use rather than kept for the next file.
const KEEP_BUFFER: usize = 256 << 20;

/// Read the whole file into this thread's buffer (WAL segments and manifests are bounded in
/// size) and run `f` on it; None when cancelled.
pub(super) fn with_whole_file<T>(
    f: &mut Source,
    out: &mut FileCheck,
    ctl: &ScanControl,
    then: impl FnOnce(&[u8], &mut FileCheck) -> T,
) -> std::io::Result<Option<T>> {
    WHOLE.with(|cell| {
        let mut buf = cell.take();
        buf.clear();
        let result = read_all_into(f, &mut buf, out, ctl).map(|done| done.then(|| then(&buf, out)));
        if buf.capacity() <= KEEP_BUFFER {
            cell.replace(buf);
        }
        result
    })
}

fn read_all_into(f: &mut Source, buf: &mut Vec<u8>, out: &mut FileCheck, ctl: &ScanControl) -> std::io::Result<bool> {
    let mut h = Xxh3Blocks::default();
    buf.reserve(out.bytes as usize + 1);
    loop {
        let before = buf.len();
        match read_chunk(f, buf, ctl)? {
            Chunk::Cancelled => {
                out.cancelled = true;
                return Ok(false);
            }
            Chunk::Eof => break,
            Chunk::Bytes(n) => h.update(&buf[before..before + n]),
        }
    }
    out.read = buf.len() as u64;
    out.xxh3 = Some(hex(h.digest()));
    Ok(true)
}
