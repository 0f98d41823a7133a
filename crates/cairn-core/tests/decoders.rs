//! Every decoder of on-disk bytes survives random and mutated input: it returns a value or a
//! clean error, never panics, and never allocates more than a small multiple of its input, so a
//! length field claiming gigabytes is rejected before anything that size is allocated.
//!
//! Inputs are fully random bytes and valid encodings with random mutations (bit flips, byte
//! writes, truncation, appended bytes, and u32/u64 fields set to values near their maximum).
//! Mutated files are also "resealed" (their checksums recomputed) so that the structural checks
//! behind the checksums are reached, not only the checksum compare. Where an encoder exists,
//! encode then decode is the identity. Case counts are in `CASES` and each test's config.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::{Path, PathBuf};

use cairn_core::batch::{self, CollectionSpec, Op};
use cairn_core::checksum::xxh3;
use cairn_core::datafile::{self, DataFileHeader, DataFileWriter, DataRecord, DATAFILE_HEADER_LEN, FOOTER_LEN, KIND_BASE, KIND_DELTA};
use cairn_core::hnsw::{Hnsw, HnswParams};
use cairn_core::manifest::{self, decode_framed, encode_framed, Manifest, ManifestCollection};
use cairn_core::scrub::{verify_file, FileKind, ScanControl};
use cairn_core::snapshot::{SnapshotFile, SnapshotInfo, SNAPSHOT_MAGIC, SNAPSHOT_VERSION};
use cairn_core::state::{FileRef, UnreadableRecord};
use cairn_core::wal::reader::{scan_segment, ScanItem};
use cairn_core::wal::record::{
    decode_record, decode_segment_header, encode_record, encode_segment_header_with_flags, Decoded, RECORD_TYPE_BATCH, SEGMENT_HEADER_LEN,
};
use cairn_core::wal::stream_check::StreamCheck;
use cairn_core::{Error, Metric};
use proptest::prelude::*;
use proptest::sample::Index;

/// Cases per property. Each decoder gets several properties (random, mutated, resealed, round
/// trip), so thousands of inputs each.
const CASES: u32 = 5000;

fn config(cases: u32) -> ProptestConfig {
    // No regression files: a failure prints its minimal input, which goes into a unit test.
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

// ---------------------------------------------------------------------------------------------
// Allocation bound: the largest single allocation made on this thread while a decoder runs.
// ---------------------------------------------------------------------------------------------

struct Tracking;

thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    // try_with: allocations during thread teardown must not touch a destroyed slot.
    let _ = ARMED.try_with(|armed| {
        if armed.get() {
            let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
        }
    });
}

// SAFETY: forwards every call to the system allocator unchanged; only records sizes.
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOCATOR: Tracking = Tracking;

/// Run `f` and return its result with the largest allocation it made on this thread.
fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|l| l.set(0));
    ARMED.with(|a| a.set(true));
    let out = f();
    ARMED.with(|a| a.set(false));
    (out, LARGEST.with(Cell::get))
}

/// What a decoder may allocate for `len` input bytes: a constant plus a small multiple. A
/// length field that is believed before it is checked blows through this at once.
fn allocation_limit(len: usize) -> usize {
    (1 << 20) + 64 * len
}

fn bounded<T>(what: &str, input: &[u8], f: impl FnOnce() -> T) -> T {
    let (out, largest) = largest_allocation(f);
    assert!(largest <= allocation_limit(input.len()), "{what}: allocated {largest} bytes for {} input bytes", input.len());
    out
}

/// The decoders that return the crate's error must say corruption (or invalid input), never
/// something a caller would retry, like I/O.
fn clean_error(e: &Error) -> bool {
    matches!(e, Error::Corruption { .. } | Error::ChecksumMismatch { .. } | Error::InvalidArgument(_))
}

// ---------------------------------------------------------------------------------------------
// Mutations
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Mutation {
    FlipBit(Index, u8),
    SetByte(Index, u8),
    Truncate(Index),
    Append(Vec<u8>),
    /// Overwrite an aligned u32 (length fields are aligned in every format).
    U32(Index, u32),
    U64(Index, u64),
    Zero(Index, u16),
}

fn extreme_u32() -> impl Strategy<Value = u32> {
    prop_oneof![Just(u32::MAX), Just(u32::MAX - 7), Just(u32::MAX - 8), Just(1 << 31), Just((1 << 30) + 8), Just(0), Just(8), any::<u32>()]
}

fn extreme_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(u64::MAX),
        Just(u64::MAX - 7),
        Just(1 << 63),
        Just(u32::MAX as u64),
        Just(u32::MAX as u64 - 1),
        Just(1 << 40),
        Just(0),
        any::<u64>()
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (any::<Index>(), 0u8..8).prop_map(|(i, b)| Mutation::FlipBit(i, b)),
        2 => (any::<Index>(), any::<u8>()).prop_map(|(i, v)| Mutation::SetByte(i, v)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        1 => prop::collection::vec(any::<u8>(), 1..40).prop_map(Mutation::Append),
        2 => (any::<Index>(), extreme_u32()).prop_map(|(i, v)| Mutation::U32(i, v)),
        2 => (any::<Index>(), extreme_u64()).prop_map(|(i, v)| Mutation::U64(i, v)),
        1 => (any::<Index>(), any::<u16>()).prop_map(|(i, n)| Mutation::Zero(i, n % 64)),
    ]
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    prop::collection::vec(mutation(), 1..4)
}

fn mutate(buf: &mut Vec<u8>, muts: &[Mutation]) {
    for m in muts {
        if buf.is_empty() {
            if let Mutation::Append(b) = m {
                buf.extend_from_slice(b);
            }
            continue;
        }
        let len = buf.len();
        match m {
            Mutation::FlipBit(i, bit) => buf[i.index(len)] ^= 1 << bit,
            Mutation::SetByte(i, v) => buf[i.index(len)] = *v,
            Mutation::Truncate(i) => buf.truncate(i.index(len)),
            Mutation::Append(b) => buf.extend_from_slice(b),
            Mutation::U32(i, v) => {
                let at = i.index(len) & !3;
                if at + 4 <= len {
                    buf[at..at + 4].copy_from_slice(&v.to_le_bytes());
                }
            }
            Mutation::U64(i, v) => {
                let at = i.index(len) & !7;
                if at + 8 <= len {
                    buf[at..at + 8].copy_from_slice(&v.to_le_bytes());
                }
            }
            Mutation::Zero(i, n) => {
                let at = i.index(len);
                let end = (at + *n as usize).min(len);
                buf[at..end].fill(0);
            }
        }
    }
}

fn random_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..max)
}

// ---------------------------------------------------------------------------------------------
// Valid inputs
// ---------------------------------------------------------------------------------------------

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::collection::vec(prop::sample::select(&b"abcxyz019_-."[..]), 1..12)
            .prop_map(|b| String::from_utf8(b).unwrap_or_default())
            .prop_filter("a valid name", |s| batch::validate_name("name", s).is_ok()),
        1 => Just("é中🙂".to_string()),
        1 => Just("x".repeat(256)),
    ]
}

fn finite() -> impl Strategy<Value = f32> {
    prop_oneof![-1e6f32..1e6f32, Just(0.0f32), Just(-0.0f32), Just(f32::MAX), Just(f32::MIN_POSITIVE)]
}

fn metadata() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("null".to_string()),
        Just("{}".to_string()),
        (any::<i32>(), name()).prop_map(|(n, s)| serde_json::json!({ "n": n, "s": s, "a": [1, null, true] }).to_string()),
    ]
}

fn metric() -> impl Strategy<Value = Metric> {
    prop_oneof![Just(Metric::Cosine), Just(Metric::L2), Just(Metric::Ip)]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (name(), 1u32..64, metric(), 2u32..=256, 1u32..1000).prop_map(|(name, dim, metric, m, ef_construction)| Op::CreateCollection(
            CollectionSpec { name, dim, metric, m, ef_construction }
        )),
        name().prop_map(|name| Op::DropCollection { name }),
        (name(), name(), prop::collection::vec(finite(), 0..16), metadata()).prop_map(|(collection, id, vector, metadata)| Op::Upsert {
            collection,
            id,
            vector: vector.into(),
            metadata: metadata.into()
        }),
        (name(), name()).prop_map(|(collection, id)| Op::Delete { collection, id }),
    ]
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(op(), 0..6)
}

/// A WAL segment: header, records with consecutive sequence numbers, then some zeros.
fn wal_segment(first: u64, payloads: &[Vec<u8>], zeros: usize, flags: u32) -> Vec<u8> {
    let mut buf = encode_segment_header_with_flags(first, flags).to_vec();
    for (i, p) in payloads.iter().enumerate() {
        encode_record(&mut buf, RECORD_TYPE_BATCH, first + i as u64, 1_700_000_000_000 + i as u64, p);
    }
    buf.resize(buf.len() + zeros, 0);
    buf
}

fn wal_segment_strategy() -> impl Strategy<Value = (u64, Vec<u8>)> {
    (1u64..1_000_000, prop::collection::vec(random_bytes(200), 0..8), 0usize..128, 0u32..2)
        .prop_map(|(first, payloads, zeros, flags)| (first, wal_segment(first, &payloads, zeros, flags)))
}

#[derive(Clone, Debug)]
enum Row {
    Upsert(String, u64, Vec<f32>, String),
    Delete(String, u64),
}

fn rows(dim: usize) -> impl Strategy<Value = Vec<Row>> {
    let row = prop_oneof![
        3 => (name(), any::<u64>(), prop::collection::vec(finite(), dim), metadata()).prop_map(|(id, l, v, m)| Row::Upsert(id, l, v, m)),
        1 => (name(), any::<u64>()).prop_map(|(id, l)| Row::Delete(id, l)),
    ];
    prop::collection::vec(row, 0..10)
}

fn segment_file(version: u32, dim: u32, metric: Metric, kind: u8, rows: &[Row]) -> Vec<u8> {
    let mut w = DataFileWriter::new(&DataFileHeader { version, dim, collection_id: 7, covered_seq: 99, metric, kind });
    for r in rows {
        match r {
            Row::Upsert(id, label, v, m) => w.upsert(id, *label, v, m),
            Row::Delete(id, label) => w.delete(id, *label),
        }
    }
    w.finish().0
}

/// (version, dim, rows, file bytes)
fn segment_strategy() -> impl Strategy<Value = (u32, usize, Vec<Row>, Vec<u8>)> {
    (1u32..=2, 1usize..6, metric(), prop_oneof![Just(KIND_BASE), Just(KIND_DELTA)]).prop_flat_map(|(version, dim, metric, kind)| {
        rows(dim).prop_map(move |rows| {
            let bytes = segment_file(version, dim as u32, metric, kind, &rows);
            (version, dim, rows, bytes)
        })
    })
}

/// Recompute every checksum of a (possibly mutated) segment file that its framing still lets
/// us find: header, each record's identity and record checksums, and the footer.
fn reseal_segment(buf: &mut [u8]) {
    let len = buf.len();
    if len < DATAFILE_HEADER_LEN + FOOTER_LEN {
        return;
    }
    let sum = xxh3(&buf[..56]);
    buf[56..64].copy_from_slice(&sum.to_le_bytes());
    let version = u32::from_le_bytes([buf[8], buf[9], buf[10], buf[11]]);
    let dim = u32::from_le_bytes([buf[12], buf[13], buf[14], buf[15]]) as usize;
    let fixed = if version >= 2 { 32 } else { 24 };
    let footer = len - FOOTER_LEN;
    let mut pos = DATAFILE_HEADER_LEN;
    while pos + fixed + 8 <= footer {
        let rlen = u32::from_le_bytes([buf[pos], buf[pos + 1], buf[pos + 2], buf[pos + 3]]) as usize;
        if rlen < fixed + 8 || !rlen.is_multiple_of(8) || pos + rlen > footer {
            break;
        }
        let rec = &mut buf[pos..pos + rlen];
        if version >= 2 {
            let vec_bytes = if rec[4] == datafile::REC_UPSERT { dim.saturating_mul(4) } else { 0 };
            let id_len = u16::from_le_bytes([rec[16], rec[17]]) as usize;
            let id_start = fixed.saturating_add(vec_bytes);
            if let Some(id) = id_start.checked_add(id_len).and_then(|end| rec.get(id_start..end)) {
                let mut ident = rec[..24].to_vec();
                ident.extend_from_slice(id);
                let sum = xxh3(&ident);
                rec[24..32].copy_from_slice(&sum.to_le_bytes());
            }
        }
        let sum = xxh3(&rec[..rlen - 8]);
        rec[rlen - 8..].copy_from_slice(&sum.to_le_bytes());
        pos += rlen;
    }
    let body = xxh3(&buf[..footer]);
    buf[footer + 16..footer + 24].copy_from_slice(&body.to_le_bytes());
    let sum = xxh3(&buf[footer..footer + 24]);
    buf[footer + 24..].copy_from_slice(&sum.to_le_bytes());
}

/// Recompute a manifest-framed file's trailing checksum (at the end its length field names, or
/// at the file's end when that is out of range).
fn reseal_framed(buf: &mut [u8]) {
    if buf.len() < 32 {
        return;
    }
    let body_len = u64::from_le_bytes(buf[16..24].try_into().unwrap_or_default());
    let end = usize::try_from(body_len)
        .ok()
        .and_then(|b| b.checked_add(24))
        .filter(|&e| e.checked_add(8).is_some_and(|t| t <= buf.len()))
        .unwrap_or(buf.len() - 8);
    let sum = xxh3(&buf[..end]);
    buf[end..end + 8].copy_from_slice(&sum.to_le_bytes());
}

fn reseal_tail_checksum(buf: &mut [u8]) {
    if buf.len() >= 8 {
        let end = buf.len() - 8;
        let sum = xxh3(&buf[..end]);
        buf[end..].copy_from_slice(&sum.to_le_bytes());
    }
}

fn segment_ref() -> impl Strategy<Value = FileRef> {
    (name(), any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(file, bytes, x, records, covered_seq)| FileRef {
        file,
        bytes,
        xxh3: format!("{x:016x}"),
        records,
        covered_seq,
    })
}

fn manifest_strategy() -> impl Strategy<Value = Manifest> {
    let unreadable = (name(), any::<u64>(), name(), any::<u64>(), name()).prop_map(|(id, label, file, offset, reason)| UnreadableRecord {
        id,
        label,
        file,
        offset,
        reason,
    });
    let collection = (
        any::<u64>(),
        name(),
        1u32..100_000,
        metric(),
        2u32..512,
        1u32..1000,
        prop::collection::vec(segment_ref(), 0..4),
        prop::option::of(segment_ref()),
        prop::collection::vec(unreadable, 0..3),
    )
        .prop_map(|(id, name, dim, metric, m, ef_construction, segments, index, unreadable)| ManifestCollection {
            id,
            name,
            dim,
            metric,
            m,
            ef_construction,
            data_files: segments,
            index,
            unreadable,
            payload_indexes: Vec::new(),
            payload_file: None,
            rows: None,
        });
    (any::<u64>(), any::<u64>(), prop::option::of(any::<u64>()), prop::collection::vec(collection, 0..4)).prop_map(
        |(checkpoint_seq, checkpoint_time_ms, clean_shutdown_seq, collections)| Manifest {
            checkpoint_seq,
            checkpoint_time_ms,
            clean_shutdown_seq,
            collections,
        },
    )
}

fn snapshot_strategy() -> impl Strategy<Value = SnapshotInfo> {
    let file = (name(), any::<u64>(), any::<u64>()).prop_map(|(path, bytes, x)| SnapshotFile { path, bytes, xxh3: format!("{x:016x}") });
    (
        name(),
        any::<u64>(),
        any::<u64>(),
        prop::bool::ANY,
        prop::option::of(name()),
        any::<u64>(),
        any::<u64>(),
        prop::collection::vec(file, 0..6),
    )
        .prop_map(|(id, seq, time_ms, incremental, base, created_ns, bytes, files)| SnapshotInfo {
            id,
            seq,
            time_ms,
            kind: if incremental { "incremental" } else { "full" }.to_string(),
            base,
            created_ns,
            bytes,
            files,
        })
}

/// What `snapshot::read_info` does with the bytes of a `SNAPSHOT` file.
fn decode_snapshot(buf: &[u8]) -> cairn_core::Result<SnapshotInfo> {
    let path = Path::new("SNAPSHOT");
    let body = decode_framed(SNAPSHOT_MAGIC, SNAPSHOT_VERSION, buf, path)?;
    serde_json::from_slice(body).map_err(|e| Error::corruption(path, 0, format!("snapshot manifest body: {e}")))
}

fn encode_snapshot(info: &SnapshotInfo) -> Vec<u8> {
    encode_framed(SNAPSHOT_MAGIC, SNAPSHOT_VERSION, &serde_json::to_vec_pretty(info).unwrap_or_default())
}

/// An HNSW graph file of `n` random nodes (some deleted), built by the real index.
fn hnsw_file(dim: usize, metric: Metric, m: usize, vectors: &[Vec<f32>], deletes: &[usize], covered_seq: u64) -> Vec<u8> {
    let index = Hnsw::new(HnswParams { dim, metric, m, ef_construction: 16 }, vectors.len().max(1)).expect("params");
    for (i, v) in vectors.iter().enumerate() {
        index.insert(i as u64 * 5, v).expect("capacity");
    }
    for &d in deletes {
        index.mark_deleted(d as u64 * 5);
    }
    let mut out = Vec::new();
    index.write_to(&mut out, covered_seq).expect("write to a Vec");
    out
}

fn hnsw_strategy() -> impl Strategy<Value = Vec<u8>> {
    (1usize..5, metric(), 2usize..5, 0usize..24, any::<u64>()).prop_flat_map(|(dim, metric, m, n, seq)| {
        (prop::collection::vec(prop::collection::vec(-10f32..10f32, dim), n), prop::collection::vec(0..n.max(1), 0..3))
            .prop_map(move |(vectors, deletes)| hnsw_file(dim, metric, m, &vectors, &deletes, seq))
    })
}

fn read_hnsw(buf: &[u8]) -> cairn_core::Result<(Hnsw, u64)> {
    Hnsw::read_from(buf, Path::new("x.hnsw"))
}

// ---------------------------------------------------------------------------------------------
// WAL segment header and records
// ---------------------------------------------------------------------------------------------

/// Drive every WAL decoder over one buffer: the segment header, the record decoder at every
/// 8-aligned offset, the recovery scan, and the streaming check (which must agree with the
/// scan on whether the segment is clean).
fn check_wal_decoders(buf: &[u8], chunk: usize) {
    bounded("wal decoders", buf, || {
        let header = decode_segment_header(buf);
        for pos in (0..buf.len()).step_by(8) {
            if let Decoded::Record { header, payload, len } = decode_record(&buf[pos..]) {
                assert!(len <= buf.len() - pos && payload.len() == header.payload_len && len % 8 == 0);
            }
        }
        let first = header.clone().unwrap_or(1);
        let scan = scan_segment(buf, first);
        assert!(scan.end as usize <= buf.len().max(SEGMENT_HEADER_LEN));
        let mut clean = header.is_ok() && scan.invalid_tail.is_none();
        let mut last = first.saturating_sub(1);
        for item in &scan.items {
            match item {
                ScanItem::Record { offset, header, payload_start, len } => {
                    assert!(*offset as usize + len <= buf.len() && payload_start + header.payload_len <= buf.len());
                    assert!(header.seq > last || (last == 0 && header.seq == 0), "sequence numbers go forward");
                    last = header.seq;
                }
                ScanItem::Corrupt { offset, .. } => {
                    assert!((*offset as usize) < buf.len());
                    clean = false;
                }
            }
        }
        let mut stream = StreamCheck::new(header.as_ref().ok().copied());
        for piece in buf.chunks(chunk.max(1)) {
            if !stream.feed(piece) {
                break;
            }
        }
        let streamed = stream.finish();
        assert_eq!(streamed.is_some(), clean, "the streaming check and the recovery scan disagree on whether the segment is clean");
        if let Some(s) = streamed {
            assert_eq!((s.end, s.last_seq), (scan.end, scan.last_seq));
        }
    });
}

proptest! {
    #![proptest_config(config(CASES))]

    #[test]
    fn wal_decoders_survive_random_bytes(buf in random_bytes(600), chunk in 1usize..300) {
        check_wal_decoders(&buf, chunk);
    }

    #[test]
    fn wal_decoders_survive_random_bytes_after_a_valid_header(first in 1u64..1000, tail in random_bytes(600), chunk in 1usize..300) {
        let mut buf = encode_segment_header_with_flags(first, 0).to_vec();
        buf.extend_from_slice(&tail);
        check_wal_decoders(&buf, chunk);
    }

    #[test]
    fn wal_decoders_survive_mutated_segments((_, seg) in wal_segment_strategy(), muts in mutations(), chunk in 1usize..300) {
        let mut buf = seg;
        mutate(&mut buf, &muts);
        check_wal_decoders(&buf, chunk);
    }

    /// Mutations that keep every record checksum valid (the header's and each record's are
    /// recomputed) reach the sequence, type and padding checks.
    #[test]
    fn wal_decoders_survive_mutated_record_headers_with_valid_checksums(
        first in 1u64..1000,
        payloads in prop::collection::vec(random_bytes(64), 1..6),
        victim in any::<Index>(),
        field in 0usize..4,
        value in extreme_u64(),
        chunk in 1usize..300,
    ) {
        let mut buf = encode_segment_header_with_flags(first, 0).to_vec();
        let v = victim.index(payloads.len());
        for (i, p) in payloads.iter().enumerate() {
            let mut rec = Vec::new();
            encode_record(&mut rec, RECORD_TYPE_BATCH, first + i as u64, 5, p);
            if i == v {
                // seq, time, type/reserved, or length; then a checksum that matches the new header.
                match field {
                    0 => rec[8..16].copy_from_slice(&value.to_le_bytes()),
                    1 => rec[16..24].copy_from_slice(&value.to_le_bytes()),
                    2 => rec[4..8].copy_from_slice(&(value as u32).to_le_bytes()),
                    _ => rec[0..4].copy_from_slice(&(value as u32).to_le_bytes()),
                }
                let body_end = 24 + p.len();
                if field != 3 {
                    let sum = xxh3(&rec[..body_end]);
                    let at = rec.len() - 8;
                    rec[at..].copy_from_slice(&sum.to_le_bytes());
                }
            }
            buf.extend_from_slice(&rec);
        }
        check_wal_decoders(&buf, chunk);
    }

    #[test]
    fn wal_segments_round_trip(first in 1u64..u64::MAX / 2, payloads in prop::collection::vec(random_bytes(300), 0..8), zeros in 0usize..64, flags in 0u32..2) {
        let buf = wal_segment(first, &payloads, zeros, flags);
        prop_assert_eq!(decode_segment_header(&buf), Ok(first));
        prop_assert_eq!(cairn_core::wal::record::segment_flags(&buf), flags);
        let scan = scan_segment(&buf, first);
        prop_assert!(scan.invalid_tail.is_none());
        let got: Vec<(u64, Vec<u8>)> = scan.items.iter().map(|item| match item {
            ScanItem::Record { header, payload_start, .. } => (header.seq, buf[*payload_start..payload_start + header.payload_len].to_vec()),
            ScanItem::Corrupt { offset, reason } => panic!("corrupt at {offset}: {reason}"),
        }).collect();
        let want: Vec<(u64, Vec<u8>)> = payloads.iter().enumerate().map(|(i, p)| (first + i as u64, p.clone())).collect();
        prop_assert_eq!(got, want);
        prop_assert_eq!(scan.end as usize, buf.len() - zeros);
    }
}

/// Length fields near the top of their range are rejected without allocating their size.
#[test]
fn wal_huge_lengths_are_rejected_before_allocating() {
    for len in [u32::MAX, u32::MAX - 7, 1 << 30, (1 << 30) + 1, 1 << 31] {
        let mut buf = encode_segment_header_with_flags(1, 0).to_vec();
        encode_record(&mut buf, RECORD_TYPE_BATCH, 1, 5, b"payload");
        buf[SEGMENT_HEADER_LEN..SEGMENT_HEADER_LEN + 4].copy_from_slice(&len.to_le_bytes());
        assert!(!matches!(decode_record(&buf[SEGMENT_HEADER_LEN..]), Decoded::Record { .. }), "length {len}");
        check_wal_decoders(&buf, 7);
    }
}

// ---------------------------------------------------------------------------------------------
// Batch payload
// ---------------------------------------------------------------------------------------------

fn check_batch(buf: &[u8]) {
    match bounded("batch::decode", buf, || batch::decode(buf)) {
        Ok(ops) => assert_eq!(batch::decode(&batch::encode(&ops)).ok(), Some(ops), "what decodes re-encodes to the same ops"),
        Err(e) => assert!(matches!(e, Error::InvalidArgument(_)), "unexpected error kind: {e}"),
    }
}

proptest! {
    #![proptest_config(config(CASES))]

    #[test]
    fn batch_decode_survives_random_bytes(buf in random_bytes(400)) {
        check_batch(&buf);
    }

    #[test]
    fn batch_decode_survives_random_ops_bytes(count in 0u32..8, kinds in prop::collection::vec((1u8..=4, random_bytes(24)), 0..8)) {
        // A plausible count and kind bytes followed by junk reach every op's field decoder.
        let mut buf = count.to_le_bytes().to_vec();
        for (kind, rest) in kinds {
            buf.push(kind);
            buf.extend_from_slice(&rest);
        }
        check_batch(&buf);
    }

    #[test]
    fn batch_decode_survives_mutated_payloads(ops in ops(), muts in mutations()) {
        let mut buf = batch::encode(&ops);
        mutate(&mut buf, &muts);
        check_batch(&buf);
    }

    #[test]
    fn batch_round_trips(ops in ops()) {
        let buf = batch::encode(&ops);
        prop_assert_eq!(batch::decode(&buf).ok(), Some(ops));
    }
}

/// An op count or vector length near u32::MAX must fail on the bytes that are missing, not
/// reserve room for what the field claims.
#[test]
fn batch_huge_counts_are_rejected_before_allocating() {
    let one = batch::encode(&[Op::Upsert { collection: "c".into(), id: "a".into(), vector: vec![1.0; 4].into(), metadata: "null".into() }]);
    for count in [u32::MAX, 1 << 24, (1 << 24) - 1, 1 << 20] {
        let mut buf = one.clone();
        buf[..4].copy_from_slice(&count.to_le_bytes());
        check_batch(&buf);
        // The same with a payload long enough that a count-sized reservation would be large.
        buf.resize(4 << 20, 4);
        let (result, largest) = largest_allocation(|| batch::decode(&buf));
        assert!(result.is_err());
        assert!(largest <= allocation_limit(buf.len()), "count {count}: allocated {largest} bytes for a {} byte payload", buf.len());
    }
    let mut buf = one;
    // Vector length field: after the count (4), kind (1), collection (2 + 1) and id (2 + 1).
    for dim in [u32::MAX, u32::MAX / 4 + 1, 1 << 30] {
        buf[11..15].copy_from_slice(&dim.to_le_bytes());
        check_batch(&buf);
    }
}

// ---------------------------------------------------------------------------------------------
// Checkpoint data files
// ---------------------------------------------------------------------------------------------

/// Drive every data-file decoder over one buffer: the whole-file reader in both modes, the
/// header and footer checks, and the per-record checks at every 8-aligned offset.
fn check_segment_decoders(buf: &[u8]) {
    let path = Path::new("x.seg");
    bounded("segment decoders", buf, || {
        for tolerate in [false, true] {
            match datafile::read_data_file(buf, path, tolerate) {
                Ok(c) => {
                    for b in &c.bad {
                        assert!((b.offset as usize) < buf.len());
                    }
                    for r in &c.records {
                        if let DataRecord::Upsert { vector, .. } = r {
                            assert_eq!(vector.len(), c.header.dim as usize);
                        }
                    }
                }
                Err(e) => assert!(clean_error(&e), "unexpected error kind: {e}"),
            }
        }
        let _ = datafile::read_header(buf, path);
        if buf.len() >= FOOTER_LEN {
            let _ = datafile::check_footer(&buf[buf.len() - FOOTER_LEN..]);
        }
        let _ = datafile::check_footer(buf);
        if let Ok(h) = datafile::check_header(buf) {
            let fmt = h.record_format();
            let end = buf.len().saturating_sub(FOOTER_LEN);
            for pos in (DATAFILE_HEADER_LEN..end).step_by(8) {
                if let Ok(len) = datafile::check_record(buf, pos, end, &fmt) {
                    assert!(pos + len <= end);
                }
                let _ = datafile::record_identity(buf, pos, end, &fmt);
                let _ = datafile::record_id_hint(&buf[pos..end], &fmt);
            }
        }
    });
}

proptest! {
    #![proptest_config(config(CASES))]

    #[test]
    fn segment_decoders_survive_random_bytes(buf in random_bytes(600)) {
        check_segment_decoders(&buf);
    }

    #[test]
    fn segment_decoders_survive_random_records_after_a_valid_header(version in 1u32..=2, dim in prop_oneof![1u32..8, Just(u32::MAX), Just(1 << 30)], body in random_bytes(600)) {
        // A valid header (any dim, even absurd) and a valid footer around random records.
        let mut buf = segment_file(version, dim, Metric::L2, KIND_BASE, &[]);
        buf.splice(DATAFILE_HEADER_LEN..DATAFILE_HEADER_LEN, body);
        reseal_segment(&mut buf);
        check_segment_decoders(&buf);
    }

    #[test]
    fn segment_decoders_survive_mutated_files((_, _, _, file) in segment_strategy(), muts in mutations(), reseal in prop::bool::ANY) {
        let mut buf = file;
        mutate(&mut buf, &muts);
        if reseal {
            reseal_segment(&mut buf);
        }
        check_segment_decoders(&buf);
    }

    #[test]
    fn segment_files_round_trip((version, dim, rows, file) in segment_strategy()) {
        let c = datafile::read_data_file(&file, Path::new("x.seg"), false).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!((c.header.version, c.header.dim as usize, c.header.collection_id, c.header.covered_seq), (version, dim, 7, 99));
        prop_assert_eq!(c.records.len(), rows.len());
        for (got, want) in c.records.iter().zip(&rows) {
            match (got, want) {
                (DataRecord::Upsert { id, label, vector, metadata }, Row::Upsert(i, l, v, m)) => {
                    prop_assert_eq!((*id, *label, vector, *metadata), (i.as_str(), *l, v, m.as_str()));
                }
                (DataRecord::Delete { id, label }, Row::Delete(i, l)) => prop_assert_eq!((*id, *label), (i.as_str(), *l)),
                _ => prop_assert!(false, "record kind differs"),
            }
        }
        // Version 2 records name themselves: every record's identity reads back.
        if version == 2 {
            let fmt = c.header.record_format();
            let end = file.len() - FOOTER_LEN;
            let mut pos = DATAFILE_HEADER_LEN;
            for want in &rows {
                let who = datafile::record_identity(&file, pos, end, &fmt).expect("identity of an intact record");
                let id = match want { Row::Upsert(i, ..) | Row::Delete(i, _) => i };
                prop_assert_eq!(&who.id, id);
                pos += datafile::check_record(&file, pos, end, &fmt).expect("intact record");
            }
        }
    }
}

#[test]
fn segment_huge_lengths_are_rejected_before_allocating() {
    let rows = vec![Row::Upsert("a".into(), 1, vec![1.0, 2.0], "{\"k\":1}".into()), Row::Delete("b".into(), 2)];
    for version in [1, 2] {
        let good = segment_file(version, 2, Metric::L2, KIND_BASE, &rows);
        // The first record's length (file offset 64), id length (u16 at 80) and metadata
        // length (84), and the header's dim (12); each resealed so only the structural checks stand.
        for (off, width, value) in [
            (64usize, 4usize, u32::MAX),
            (64, 4, u32::MAX - 7),
            (84, 4, u32::MAX),
            (84, 4, u32::MAX - 8),
            (80, 2, 0xFFFF),
            (12, 4, u32::MAX),
            (12, 4, 1 << 30),
        ] {
            let mut buf = good.clone();
            buf[off..off + width].copy_from_slice(&value.to_le_bytes()[..width]);
            reseal_segment(&mut buf);
            check_segment_decoders(&buf);
            assert!(datafile::read_data_file(&buf, Path::new("x.seg"), false).is_err(), "v{version}: field at {off} = {value} accepted");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Manifest and snapshot manifest
// ---------------------------------------------------------------------------------------------

fn check_manifest(buf: &[u8]) {
    match bounded("manifest::decode", buf, || manifest::decode(buf, Path::new("MANIFEST"))) {
        Ok(m) => assert_eq!(manifest::decode(&manifest::encode(&m), Path::new("MANIFEST")).ok(), Some(m)),
        Err(e) => assert!(clean_error(&e), "unexpected error kind: {e}"),
    }
}

fn check_snapshot(buf: &[u8]) {
    if let Err(e) = bounded("snapshot manifest", buf, || decode_snapshot(buf)) {
        assert!(clean_error(&e), "unexpected error kind: {e}");
    }
}

proptest! {
    #![proptest_config(config(CASES))]

    #[test]
    fn manifest_decode_survives_random_bytes(buf in random_bytes(300)) {
        check_manifest(&buf);
        check_snapshot(&buf);
    }

    #[test]
    fn manifest_decode_survives_random_bodies(body in random_bytes(300)) {
        // Valid framing around junk reaches the JSON decoder.
        check_manifest(&encode_framed(manifest::MANIFEST_MAGIC, manifest::MANIFEST_VERSION, &body));
        check_snapshot(&encode_framed(SNAPSHOT_MAGIC, SNAPSHOT_VERSION, &body));
    }

    #[test]
    fn manifest_decode_survives_mutated_manifests(m in manifest_strategy(), muts in mutations(), reseal in prop::bool::ANY) {
        let mut buf = manifest::encode(&m);
        mutate(&mut buf, &muts);
        if reseal {
            reseal_framed(&mut buf);
        }
        check_manifest(&buf);
    }

    #[test]
    fn snapshot_manifest_decode_survives_mutated_files(s in snapshot_strategy(), muts in mutations(), reseal in prop::bool::ANY) {
        let mut buf = encode_snapshot(&s);
        mutate(&mut buf, &muts);
        if reseal {
            reseal_framed(&mut buf);
        }
        check_snapshot(&buf);
    }

    #[test]
    fn manifests_round_trip(m in manifest_strategy()) {
        prop_assert_eq!(manifest::decode(&manifest::encode(&m), Path::new("MANIFEST")).ok(), Some(m));
    }

    #[test]
    fn snapshot_manifests_round_trip(s in snapshot_strategy()) {
        prop_assert_eq!(decode_snapshot(&encode_snapshot(&s)).ok(), Some(s));
    }
}

#[test]
fn manifest_huge_body_lengths_are_rejected_before_allocating() {
    let good = manifest::encode(&Manifest::default());
    for len in [u64::MAX, u64::MAX - 23, u64::MAX - 31, 1 << 63, u32::MAX as u64, (good.len() - 31) as u64] {
        let mut buf = good.clone();
        buf[16..24].copy_from_slice(&len.to_le_bytes());
        for reseal in [false, true] {
            if reseal {
                reseal_framed(&mut buf);
            }
            check_manifest(&buf);
            check_snapshot(&buf);
            assert!(manifest::decode(&buf, Path::new("MANIFEST")).is_err(), "body length {len} accepted");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// HNSW graph file
// ---------------------------------------------------------------------------------------------

fn check_hnsw(buf: &[u8]) {
    match bounded("Hnsw::read_from", buf, || read_hnsw(buf)) {
        Ok((index, _)) => {
            // What loads is a usable graph: it searches without panicking.
            let dim = index.params().dim;
            let _ = index.search(&vec![0.5; dim], 3, 8, None);
        }
        Err(e) => assert!(clean_error(&e), "unexpected error kind: {e}"),
    }
}

proptest! {
    #![proptest_config(config(CASES))]

    #[test]
    fn hnsw_read_survives_random_bytes(buf in random_bytes(600)) {
        check_hnsw(&buf);
    }

    #[test]
    fn hnsw_read_survives_random_bodies_with_valid_checksums(
        metric in 0u32..4,
        dim in 1u32..4,
        m in 1u32..5,
        entry in prop_oneof![0u32..20, Just(u32::MAX)],
        top in 0u32..3,
        nodes in prop_oneof![0u64..20, extreme_u64()],
        body in random_bytes(800),
    ) {
        // A plausible header, random sections and a matching checksum: only the structural
        // checks stand between these bytes and the graph.
        let mut buf = b"CAIRNHNW".to_vec();
        for v in [1, metric, dim, m, 16, entry, top, 0] {
            buf.extend_from_slice(&v.to_le_bytes());
        }
        for v in [9, nodes, 0] {
            buf.extend_from_slice(&v.to_le_bytes());
        }
        buf.extend_from_slice(&body);
        buf.extend_from_slice(&[0; 8]);
        reseal_tail_checksum(&mut buf);
        check_hnsw(&buf);
    }

    #[test]
    fn hnsw_read_survives_mutated_files(file in hnsw_strategy(), muts in mutations(), reseal in prop::bool::ANY) {
        let mut buf = file;
        mutate(&mut buf, &muts);
        if reseal {
            reseal_tail_checksum(&mut buf);
        }
        check_hnsw(&buf);
    }

    #[test]
    fn hnsw_files_round_trip(file in hnsw_strategy()) {
        let (index, covered) = read_hnsw(&file).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut again = Vec::new();
        index.write_to(&mut again, covered).expect("write to a Vec");
        prop_assert_eq!(again, file);
    }
}

#[test]
fn hnsw_huge_counts_are_rejected_before_allocating() {
    let vectors: Vec<Vec<f32>> = (0..6).map(|i| vec![i as f32, 1.0, -1.0]).collect();
    let good = hnsw_file(3, Metric::L2, 2, &vectors, &[1], 7);
    // dim (u32 at 16), M (20), node count (u64 at 48), and the level-draw counter (56).
    for (at, value) in [
        (16usize, u32::MAX as u64),
        (16, 1 << 30),
        (20, u32::MAX as u64),
        (48, u64::MAX),
        (48, u32::MAX as u64 - 1),
        (48, 1 << 40),
        (56, u64::MAX),
    ] {
        let mut buf = good.clone();
        let width = if at == 48 || at == 56 { 8 } else { 4 };
        buf[at..at + width].copy_from_slice(&value.to_le_bytes()[..width]);
        reseal_tail_checksum(&mut buf);
        check_hnsw(&buf);
    }
}

// ---------------------------------------------------------------------------------------------
// Scrub's streaming verifiers, over the same inputs as files
// ---------------------------------------------------------------------------------------------

fn scratch_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cairn-decoders-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Scrub reads a file in chunks with its own framing code; it must report, not panic.
fn check_scrub(buf: &[u8], kind: FileKind, name: &str) {
    let path = scratch_dir().join(format!("{:?}-{name}", std::thread::current().id()));
    std::fs::write(&path, buf).expect("write scratch file");
    let check = verify_file(&path, kind, None, &ScanControl::new(None));
    for f in &check.findings {
        assert!(f.offset <= buf.len() as u64 + 8, "{kind:?}: finding past the end of the file: {f:?}");
    }
    assert_eq!(check.bytes, buf.len() as u64);
    let _ = std::fs::remove_file(&path);
}

proptest! {
    #![proptest_config(config(CASES / 4))]

    #[test]
    fn scrub_verifiers_survive_mutated_files(
        (_, _, _, seg) in segment_strategy(),
        (_, wal) in wal_segment_strategy(),
        m in manifest_strategy(),
        s in snapshot_strategy(),
        muts in mutations(),
        reseal in prop::bool::ANY,
    ) {
        let mut seg = seg;
        mutate(&mut seg, &muts);
        if reseal {
            reseal_segment(&mut seg);
        }
        check_scrub(&seg, FileKind::SegmentDeep, "00000000000000000001-00000000000000000009.seg");
        let mut wal = wal;
        mutate(&mut wal, &muts);
        check_scrub(&wal, FileKind::Wal, "wal");
        check_scrub(&wal, FileKind::WalTail, "wal-tail");
        let mut man = manifest::encode(&m);
        mutate(&mut man, &muts);
        if reseal {
            reseal_framed(&mut man);
        }
        check_scrub(&man, FileKind::Manifest, "MANIFEST");
        let mut snap = encode_snapshot(&s);
        mutate(&mut snap, &muts);
        check_scrub(&snap, FileKind::SnapshotManifest, "SNAPSHOT");
    }

    #[test]
    fn scrub_verifiers_survive_random_bytes(buf in random_bytes(400)) {
        for kind in [FileKind::SegmentDeep, FileKind::Wal, FileKind::WalTail, FileKind::Manifest, FileKind::SnapshotManifest] {
            check_scrub(&buf, kind, "random");
        }
    }
}
