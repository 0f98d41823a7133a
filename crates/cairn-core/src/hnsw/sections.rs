//! Reading a persisted index file front to back, each section straight into the array that
//! keeps it (no whole-file buffer, no second copy), while one streaming xxh3 pass covers every
//! byte read. The file's trailing checksum is compared once the last section is in; a
//! structural problem found before that is reported as a checksum mismatch when the rest of the
//! file does not verify (a flipped bit is damage, not a strange but valid file).

use std::path::Path;

use crate::checksum::blocks::Xxh3Blocks;
use crate::error::{Error, Result};
use crate::storage::StorageFile;

/// Size of the trailing checksum.
pub(super) const CHECKSUM_LEN: usize = 8;
/// Bytes hashed at a time when the rest of a file is only checked (the failure path).
const SKIP_CHUNK: usize = 1 << 20;

/// Where the bytes come from: a buffer already in memory, or a file read positionally.
pub(super) enum Source<'a> {
    Bytes(&'a [u8]),
    File(&'a dyn StorageFile),
}

impl Source<'_> {
    pub(super) fn read(&self, at: usize, dst: &mut [u8]) -> std::io::Result<()> {
        match self {
            Source::Bytes(bytes) => match bytes.get(at..at + dst.len()) {
                Some(src) => {
                    dst.copy_from_slice(src);
                    Ok(())
                }
                None => Err(std::io::ErrorKind::UnexpectedEof.into()),
            },
            Source::File(file) => file.read_at(at as u64, dst),
        }
    }
}

/// Types whose every bit pattern is a valid value, so file bytes can be read into them as they are.
///
/// # Safety
/// Implementors must have no padding and accept any bytes.
pub(super) unsafe trait PlainWords {}
// SAFETY: each is an integer or f32 in a transparent wrapper: no padding, any bits are a value.
unsafe impl PlainWords for std::sync::atomic::AtomicU8 {}
// SAFETY: as above.
unsafe impl PlainWords for std::sync::atomic::AtomicU32 {}
// SAFETY: as above.
unsafe impl PlainWords for std::sync::atomic::AtomicU64 {}
// SAFETY: as above.
unsafe impl PlainWords for f32 {}
// SAFETY: as above.
unsafe impl PlainWords for u8 {}

/// The bytes of `words`, to be overwritten with file bytes.
pub(super) fn bytes_of<T: PlainWords>(words: &mut [T]) -> &mut [u8] {
    // SAFETY: `T` has no padding and any bytes are a valid `T` (PlainWords); the slice is
    // borrowed mutably for the result's lifetime, so nothing else sees the bytes change.
    unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), std::mem::size_of_val(words)) }
}

/// Sequential, checksummed reads of the body (everything but the trailing checksum).
pub(super) struct SectionReader<'a> {
    source: Source<'a>,
    path: &'a Path,
    body_len: usize,
    offset: usize,
    hash: Xxh3Blocks,
}

impl<'a> SectionReader<'a> {
    /// `len` is the file's length, at least the trailing checksum's.
    pub(super) fn new(source: Source<'a>, len: usize, path: &'a Path) -> SectionReader<'a> {
        SectionReader { source, path, body_len: len - CHECKSUM_LEN, offset: 0, hash: Xxh3Blocks::default() }
    }

    pub(super) fn offset(&self) -> usize {
        self.offset
    }

    /// Body bytes not read yet.
    pub(super) fn remaining(&self) -> usize {
        self.body_len - self.offset
    }

    /// Fill `dst` with the next bytes of the body; returns the offset they start at. A section
    /// longer than what is left is reported as truncated (or as checksum damage, see `fail`).
    pub(super) fn fill(&mut self, dst: &mut [u8], what: &str) -> Result<usize> {
        let start = self.offset;
        if dst.len() > self.remaining() {
            let err = Error::corruption(self.path, start as u64, format!("{what} section is truncated"));
            return Err(self.fail(err));
        }
        self.source.read(start, dst).map_err(|e| self.io_error(start, e))?;
        self.hash.update(dst);
        self.offset += dst.len();
        Ok(start)
    }

    /// Read the trailing checksum and compare it with the body's; returns the xxh3 of the whole
    /// file (body and checksum), which the manifest records.
    pub(super) fn finish(self) -> Result<u64> {
        self.verify()
    }

    fn verify(&self) -> Result<u64> {
        let mut trailer = [0u8; CHECKSUM_LEN];
        self.source.read(self.body_len, &mut trailer).map_err(|e| self.io_error(self.body_len, e))?;
        let stored = u64::from_le_bytes(trailer);
        let computed = self.hash.digest();
        if stored != computed {
            return Err(Error::corruption(
                self.path,
                self.body_len as u64,
                format!("index checksum mismatch: stored {stored:#018x}, computed {computed:#018x}"),
            ));
        }
        let mut whole = self.hash.clone();
        whole.update(&trailer);
        Ok(whole.digest())
    }

    /// `err`, found before the whole body was read, unless the file fails its checksum: then
    /// the checksum mismatch, which says the bytes are damaged rather than oddly shaped.
    pub(super) fn fail(&mut self, err: Error) -> Error {
        let mut chunk = vec![0u8; SKIP_CHUNK.min(self.remaining())];
        while self.remaining() > 0 {
            let n = chunk.len().min(self.remaining());
            if self.source.read(self.offset, &mut chunk[..n]).is_err() {
                return err;
            }
            self.hash.update(&chunk[..n]);
            self.offset += n;
        }
        match self.verify() {
            Ok(_) => err,
            Err(mismatch) => mismatch,
        }
    }

    /// A read that came up short is a file that shrank under us: corruption, not a crash.
    fn io_error(&self, at: usize, e: std::io::Error) -> Error {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            return Error::corruption(self.path, at as u64, "index file ends before its sections do (truncated while being read?)");
        }
        Error::io(self.path, e)
    }
}
