//! The persisted index file. All integers and floats are little-endian.
//!
//! ```text
//! offset  size  field
//!      0     8  magic "CAIRNHNW"
//!      8     4  format version (1)
//!     12     4  metric code (Metric::code: 0 cosine, 1 l2, 2 ip)
//!     16     4  dim
//!     20     4  M (level 0 holds up to 2*M links)
//!     24     4  ef_construction
//!     28     4  entry node id, 0xFFFF_FFFF when the index is empty
//!     32     4  top level (level of the entry node), 0 when empty
//!     36     4  reserved, zero
//!     40     8  covered_seq: the engine's sequence number the index reflects
//!     48     8  node count N (live and tombstoned nodes, ids 0..N)
//!     56     8  level-draw counter (so a loaded index keeps drawing fresh levels)
//!     64        sections, in this order, no padding:
//!               vectors      N * dim * f32, node by node (unit-normalised for cosine)
//!               levels       N * u8
//!               level-0      N * (1 + 2M) * u32: count, then ids; slots past count are zero
//!               upper links  for each node in id order, for each level 1..=its level:
//!                            (1 + M) * u32, same shape as level 0
//!               labels       N * u64
//!               tombstones   ceil(N / 8) bytes, bit i % 8 of byte i / 8 set when node i is
//!                            tombstoned; unused high bits zero
//!      end-8     8  xxh3-64 of every byte before it
//! ```

use crate::shared_vector::SharedVector;
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use xxhash_rust::xxh3::xxh3_64;

use super::graph::{LoadView, MAX_LEVEL};
use super::sections::{bytes_of, SectionReader, Source, CHECKSUM_LEN};
use super::{Hnsw, HnswParams, LabelDirectory, MAX_CAPACITY};
#[cfg(test)]
use crate::checksum::xxh3;
use crate::checksum::Xxh3Stream;
use crate::distance::Metric;
use crate::error::{Error, Result};
use crate::storage::StorageFile;
use crate::sync::{read, write};

pub const INDEX_MAGIC: [u8; 8] = *b"CAIRNHNW";
pub const INDEX_FORMAT_VERSION: u32 = 1;
/// Entry-node value of an empty index.
const NO_NODE: u32 = u32::MAX;
/// Exponent bits of an f32; all set means infinity or NaN.
const F32_EXPONENT: u32 = 0x7F80_0000;

/// Byte offsets of the header fields.
mod header {
    pub const MAGIC: usize = 0;
    pub const VERSION: usize = 8;
    pub const METRIC: usize = 12;
    pub const DIM: usize = 16;
    pub const M: usize = 20;
    pub const EF_CONSTRUCTION: usize = 24;
    pub const ENTRY_NODE: usize = 28;
    pub const TOP_LEVEL: usize = 32;
    pub const RESERVED: usize = 36;
    pub const COVERED_SEQ: usize = 40;
    pub const NODE_COUNT: usize = 48;
    pub const LEVEL_DRAWS: usize = 56;
    pub const LEN: usize = 64;
}

/// Write buffer size: large enough that the `dyn Write` and hasher calls are amortised.
const CHUNK: usize = 1 << 16;

/// Buffers output and feeds the same bytes to the trailing checksum.
struct ChecksummedWriter<'a> {
    out: &'a mut dyn Write,
    hasher: Xxh3Stream,
    buffer: Vec<u8>,
}

impl ChecksummedWriter<'_> {
    fn put(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= CHUNK {
            self.drain()?;
        }
        Ok(())
    }

    fn drain(&mut self) -> std::io::Result<()> {
        self.hasher.update(&self.buffer);
        self.out.write_all(&self.buffer)?;
        self.buffer.clear();
        Ok(())
    }

    fn finish(mut self) -> std::io::Result<()> {
        self.drain()?;
        let digest = self.hasher.digest();
        self.out.write_all(&digest.to_le_bytes())?;
        self.out.flush()
    }
}

fn put_u32(header: &mut [u8; header::LEN], offset: usize, value: u32) {
    header[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
}

fn put_u64(header: &mut [u8; header::LEN], offset: usize, value: u64) {
    header[offset..offset + 8].copy_from_slice(&value.to_le_bytes());
}

impl Hnsw {
    /// Writes the whole index (format above). Blocks inserts and deletes for the duration so the
    /// file is a consistent graph; searches continue.
    pub fn write_to(&self, out: &mut dyn Write, covered_seq: u64) -> std::io::Result<()> {
        let _gate = write(&self.insert_gate);
        let directory = read(&self.directory);
        let nodes = directory.allocated;
        let graph = &self.graph;
        let (entry, top) = self.entry.get().map_or((NO_NODE, 0), |(node, level)| (node, level as u32));

        let mut header = [0u8; header::LEN];
        header[header::MAGIC..header::MAGIC + 8].copy_from_slice(&INDEX_MAGIC);
        put_u32(&mut header, header::VERSION, INDEX_FORMAT_VERSION);
        put_u32(&mut header, header::METRIC, self.params.metric.code() as u32);
        put_u32(&mut header, header::DIM, self.params.dim as u32);
        put_u32(&mut header, header::M, self.params.m as u32);
        put_u32(&mut header, header::EF_CONSTRUCTION, self.params.ef_construction as u32);
        put_u32(&mut header, header::ENTRY_NODE, entry);
        put_u32(&mut header, header::TOP_LEVEL, top);
        put_u32(&mut header, header::RESERVED, 0);
        put_u64(&mut header, header::COVERED_SEQ, covered_seq);
        put_u64(&mut header, header::NODE_COUNT, nodes as u64);
        put_u64(&mut header, header::LEVEL_DRAWS, self.level_draws.load(Ordering::Relaxed));

        let mut sink = ChecksummedWriter { out, hasher: Xxh3Stream::default(), buffer: Vec::with_capacity(2 * CHUNK) };
        sink.put(&header)?;
        for node in 0..nodes {
            // Unit vectors for cosine, divided exactly as `normalize` does (a node holds the row's
            // vector and its norm; one read from a file holds a unit vector and norm 1).
            let norm = graph.norm(node);
            for value in graph.vector(node) {
                sink.put(&(value / norm).to_le_bytes())?;
            }
        }
        for node in 0..nodes {
            sink.put(&[graph.level(node) as u8])?;
        }
        for node in 0..nodes {
            put_links(&mut sink, self, node, 0)?;
        }
        for node in 0..nodes {
            for layer in 1..=graph.level(node) {
                put_links(&mut sink, self, node, layer)?;
            }
        }
        for node in 0..nodes {
            sink.put(&graph.label(node).to_le_bytes())?;
        }
        for first in (0..nodes).step_by(8) {
            let byte =
                (first..nodes.min(first + 8)).filter(|&node| graph.is_tombstoned(node)).fold(0u8, |byte, node| byte | 1 << (node - first));
            sink.put(&[byte])?;
        }
        sink.finish()
    }

    /// Loads an index written by `write_to`, returning it with its covered_seq. Verifies magic,
    /// version, checksum, every length and every graph invariant search relies on (link counts,
    /// link targets, levels, entry point, unique live labels); any violation is a corruption
    /// error naming `path` and the offending offset. The capacity equals the node count.
    pub fn read_from(bytes: &[u8], path: &Path) -> Result<(Hnsw, u64)> {
        let (loaded, covered_seq, _) = Hnsw::load(Source::Bytes(bytes), bytes.len(), path)?;
        Ok((loaded.finish_from(Source::Bytes(bytes), path)?, covered_seq))
    }

    /// `read_from` for a file of `len` bytes, read section by section straight into the graph's
    /// arrays (one read and one checksum pass per byte), except the vectors: those are checked
    /// and digested but not kept, for the rows to lend theirs (`LoadedGraph`). Also returns the
    /// xxh3 of the whole file, the digest the manifest records for it. A file that shrinks while
    /// it is read is a corruption error, never a crash.
    pub fn read_file(file: &dyn StorageFile, len: u64, path: &Path) -> Result<(LoadedGraph, u64, u64)> {
        let len = usize::try_from(len).map_err(|_| corruption(path, 0, "index file is too large for this platform"))?;
        Hnsw::load(Source::File(file), len, path)
    }

    /// The graph without its vectors (`LoadedGraph`), its covered seq and the whole file's xxh3.
    fn load(source: Source<'_>, len: usize, path: &Path) -> Result<(LoadedGraph, u64, u64)> {
        if len < header::LEN + CHECKSUM_LEN {
            return Err(corruption(path, len, format!("index file is {len} bytes, shorter than its header and checksum")));
        }
        let mut reader = SectionReader::new(source, len, path);
        let mut head = [0u8; header::LEN];
        reader.fill(&mut head, "header")?;
        if head[header::MAGIC..header::MAGIC + INDEX_MAGIC.len()] != INDEX_MAGIC {
            return Err(corruption(path, header::MAGIC, "not a Cairn HNSW index file (bad magic)"));
        }
        let version = le_u32(&head, header::VERSION);
        if version != INDEX_FORMAT_VERSION {
            return Err(corruption(
                path,
                header::VERSION,
                format!("unsupported index format version {version}, expected {INDEX_FORMAT_VERSION}"),
            ));
        }
        // Until the checksum is in, header fields only size the sections, each bounded by the
        // file's length; a field that makes no sense is reported as damage when the file fails
        // its checksum (`SectionReader::fail`).
        let header = match read_header(&head, path, reader.remaining()) {
            Ok(h) => h,
            Err(e) => return Err(reader.fail(e)),
        };
        let Header { params, entry, top, covered_seq, nodes, level_draws } = header;
        let dim = params.dim;
        let level0_slots = 1 + 2 * params.m;
        let upper_slots = 1 + params.m;

        let mut index =
            Hnsw::new(params, nodes).map_err(|e| corruption(path, header::NODE_COUNT, format!("cannot size the index: {e}")))?;
        let mut view = index.graph.load_view();
        let (vectors_at, digests, non_finite) = digest_vectors(&mut reader, nodes, dim)?;
        let levels_at = reader.fill(bytes_of(view.levels), "levels")?;
        let level_bytes: Vec<u8> = view.levels.iter_mut().map(|level| *level.get_mut()).collect();
        if let Some(i) = level_bytes.iter().position(|&level| level as usize > MAX_LEVEL) {
            let err = corruption(path, levels_at + i, format!("node level {} exceeds {MAX_LEVEL}", level_bytes[i]));
            return Err(reader.fail(err));
        }
        let level0_at = reader.fill(bytes_of(view.level0_links), "level-0 links")?;
        let upper_lists: usize = level_bytes.iter().map(|&level| level as usize).sum();
        let upper_len = upper_lists * upper_slots * 4;
        if upper_len > reader.remaining() {
            let err = corruption(path, reader.offset(), "upper-level links section is truncated");
            return Err(reader.fail(err));
        }
        let mut upper_bytes = vec![0u8; upper_len];
        let upper_at = reader.fill(&mut upper_bytes, "upper-level links")?;
        let labels_at = reader.fill(bytes_of(view.labels), "labels")?;
        let mut tombstone_bytes = vec![0u8; nodes.div_ceil(8)];
        let tombstones_at = reader.fill(&mut tombstone_bytes, "tombstones")?;
        if reader.remaining() != 0 {
            let err = corruption(path, reader.offset(), "unexpected bytes after the tombstone section");
            return Err(reader.fail(err));
        }
        let file_xxh3 = reader.finish()?;
        from_little_endian(&mut view);

        let level_of = |node: usize| level_bytes[node] as usize;
        let is_tombstoned = |node: usize| tombstone_bytes[node / 8] & (1 << (node % 8)) != 0;
        if let Some(&last) = tombstone_bytes.last() {
            let used_bits = nodes - (tombstone_bytes.len() - 1) * 8;
            if used_bits < 8 && last >> used_bits != 0 {
                return Err(corruption(path, tombstones_at + tombstone_bytes.len() - 1, "unused tombstone bits are set"));
            }
        }
        if nodes == 0 {
            if entry != NO_NODE || top != 0 {
                return Err(corruption(path, header::ENTRY_NODE, "empty index names an entry node"));
            }
        } else {
            let highest = level_bytes.iter().map(|&level| level as usize).max().unwrap_or(0);
            if entry as usize >= nodes || top != highest || level_of(entry as usize) != top {
                return Err(corruption(
                    path,
                    header::ENTRY_NODE,
                    format!("entry node {entry} at level {top} is not a node of the highest level {highest}"),
                ));
            }
        }

        if let Some(i) = non_finite {
            return Err(corruption(path, vectors_at + i * 4, format!("vector of node {} is not finite", i / dim)));
        }

        let mut node_of_label: HashMap<u64, u32> = HashMap::with_capacity(nodes);
        let mut tombstones = 0usize;
        for (node, (label, tombstone)) in view.labels.iter_mut().zip(view.tombstones.iter_mut()).enumerate() {
            let label = *label.get_mut();
            let tombstoned = is_tombstoned(node);
            *tombstone.get_mut() = tombstoned;
            if tombstoned {
                tombstones += 1;
            } else if node_of_label.insert(label, node as u32).is_some() {
                return Err(corruption(path, labels_at + node * 8, format!("label {label} is live on two nodes")));
            }
        }

        for (node, list) in view.level0_links.chunks_exact_mut(level0_slots).enumerate() {
            check_links(list.iter_mut().map(|slot| *slot.get_mut()), node, 0, &level_bytes, |neighbour| {
                *view.level0_in_degree[neighbour as usize].get_mut() += 1;
            })
            .map_err(|reason| corruption(path, level0_at + node * level0_slots * 4, reason))?;
        }

        let (upper_words, _) = upper_bytes.as_chunks::<4>();
        let mut next_list = 0usize;
        for (node, &level) in level_bytes.iter().enumerate().filter(|(_, &level)| level > 0) {
            // In bounds: the section's length is the sum of the levels times the list size.
            let words = &upper_words[next_list..next_list + level as usize * upper_slots];
            for (i, list) in words.chunks_exact(upper_slots).enumerate() {
                let list_at = upper_at + (next_list + i * upper_slots) * 4;
                check_links(list.iter().map(|word| u32::from_le_bytes(*word)), node, i + 1, &level_bytes, |_| {})
                    .map_err(|reason| corruption(path, list_at, reason))?;
            }
            view.upper_links.set_mut(node, words.iter().map(|word| u32::from_le_bytes(*word)));
            next_list += words.len();
        }

        if nodes > 0 {
            index.entry.set(entry, top);
        }
        index.level_draws = AtomicU64::new(level_draws);
        *index.directory.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner) =
            LabelDirectory { node_of_label, allocated: nodes as u32, tombstones };
        Ok((LoadedGraph { hnsw: index, vectors_at: vectors_at as u64, digests }, covered_seq, file_xxh3))
    }
}

/// Bytes of the vector section read at a time.
const DIGEST_CHUNK: usize = 1 << 20;

/// Reads the vector section through a small buffer. Each node's bytes feed the file checksum and
/// a digest of their own (to check a later re-read of them: `LoadedGraph::finish`) and are
/// checked for values that are not finite (an all-ones exponent); nothing else is kept, so an
/// open does not fault in and copy a second copy of every vector. Returns the section's offset,
/// the digests and the index of the first float that is not finite (reported once the checksum
/// has held).
fn digest_vectors(reader: &mut SectionReader<'_>, nodes: usize, dim: usize) -> Result<(usize, Box<[u64]>, Option<usize>)> {
    let at = reader.offset();
    let node_bytes = dim * 4;
    // No more than the section holds: a header's `dim` is believed only as far as the file's
    // length bounds `nodes * dim`, so with no nodes it sizes nothing.
    let per_chunk = (DIGEST_CHUNK / node_bytes.max(1)).max(1).min(nodes);
    let mut buf = vec![0u8; per_chunk * node_bytes];
    let mut digests = Vec::with_capacity(nodes);
    let mut non_finite = None;
    while digests.len() < nodes {
        let first = digests.len();
        let chunk = &mut buf[..per_chunk.min(nodes - first) * node_bytes];
        reader.fill(chunk, "vectors")?;
        for (i, vector) in chunk.chunks_exact(node_bytes).enumerate() {
            if non_finite.is_none() {
                let (words, _) = vector.as_chunks::<4>();
                if let Some(j) = words.iter().position(|w| u32::from_le_bytes(*w) & F32_EXPONENT == F32_EXPONENT) {
                    non_finite = Some((first + i) * dim + j);
                }
            }
            digests.push(xxh3_64(vector));
        }
    }
    Ok((at, digests.into_boxed_slice(), non_finite))
}

/// A graph read from its file (`Hnsw::read_file`) whose vectors were checked but not kept. Each
/// node takes its row's vector (`adopt_row_vector`: the row is the authority, its record passed
/// its checksum and a label names one write); `finish` reads the rest back from the file (nodes
/// whose rows are gone or were not offered), each checked against the digest taken of its bytes
/// while the file checksum was verified. Searching needs the `Hnsw` that `finish` returns.
pub struct LoadedGraph {
    hnsw: Hnsw,
    vectors_at: u64,
    digests: Box<[u64]>,
}

impl LoadedGraph {
    pub fn params(&self) -> &HnswParams {
        self.hnsw.params()
    }

    /// As `Hnsw::adopt_row_vector`: false when the label has no live node.
    pub fn adopt_row_vector(&mut self, label: u64, row: &SharedVector) -> bool {
        self.hnsw.adopt_row_vector(label, row)
    }

    /// Gives every node that took no row's vector its own copy, read from `file` (the file it
    /// was loaded from) and checked against its digest; a difference means the file changed
    /// under the open, a corruption error.
    pub fn finish(self, file: &dyn StorageFile, path: &Path) -> Result<Hnsw> {
        self.finish_from(Source::File(file), path)
    }

    fn finish_from(mut self, source: Source<'_>, path: &Path) -> Result<Hnsw> {
        let node_bytes = self.hnsw.params().dim * 4;
        let mut bytes = Vec::new();
        for (node, digest) in self.digests.iter().enumerate() {
            if self.hnsw.graph.vectors.is_set(node as u32) {
                continue;
            }
            // Sized once a node needs it: its file holds at least one vector then.
            bytes.resize(node_bytes, 0);
            let at = self.vectors_at + (node * node_bytes) as u64;
            source.read(at as usize, &mut bytes).map_err(|e| match e.kind() {
                std::io::ErrorKind::UnexpectedEof => {
                    corruption(path, at as usize, "index file ends before its vectors do (truncated after it was read?)")
                }
                _ => Error::io(path, e),
            })?;
            if xxh3_64(&bytes) != *digest {
                return Err(corruption(
                    path,
                    at as usize,
                    format!("vector of node {node} differs from the one verified at open (the file changed since)"),
                ));
            }
            // Stored unit-normalised for cosine, so its norm is 1.
            let vector = SharedVector::from_le_bytes(&bytes);
            self.hnsw.graph.vectors.replace(node as u32, vector, 1.0);
        }
        Ok(self.hnsw)
    }
}

/// The header's fields, checked against each other and against the `body_left` bytes that
/// follow it (so a damaged node count cannot size a huge allocation).
struct Header {
    params: HnswParams,
    entry: u32,
    top: usize,
    covered_seq: u64,
    nodes: usize,
    level_draws: u64,
}

fn read_header(head: &[u8], path: &Path, body_left: usize) -> Result<Header> {
    let metric_code = le_u32(head, header::METRIC);
    let metric = u8::try_from(metric_code)
        .ok()
        .and_then(Metric::from_code)
        .ok_or_else(|| corruption(path, header::METRIC, format!("unknown metric code {metric_code}")))?;
    let params = HnswParams {
        dim: le_u32(head, header::DIM) as usize,
        metric,
        m: le_u32(head, header::M) as usize,
        ef_construction: le_u32(head, header::EF_CONSTRUCTION) as usize,
    };
    params.validate().map_err(|e| corruption(path, header::DIM, format!("invalid parameters: {e}")))?;
    if le_u32(head, header::RESERVED) != 0 {
        return Err(corruption(path, header::RESERVED, "reserved header field is not zero"));
    }
    let node_count = le_u64(head, header::NODE_COUNT);
    // Vectors, level byte, level-0 list and label of every node, before the upper lists.
    let per_node = (params.dim * 4).saturating_add(1).saturating_add((1 + 2 * params.m) * 4).saturating_add(8);
    let nodes = usize::try_from(node_count)
        .ok()
        .filter(|&n| n <= MAX_CAPACITY)
        .ok_or_else(|| corruption(path, header::NODE_COUNT, format!("node count {node_count} is out of range")))?;
    if nodes.checked_mul(per_node).is_none_or(|need| need > body_left) {
        return Err(corruption(path, header::LEN, format!("index file is too short for its {nodes} nodes (sections truncated)")));
    }
    Ok(Header {
        params,
        entry: le_u32(head, header::ENTRY_NODE),
        top: le_u32(head, header::TOP_LEVEL) as usize,
        covered_seq: le_u64(head, header::COVERED_SEQ),
        nodes,
        level_draws: le_u64(head, header::LEVEL_DRAWS),
    })
}

/// The sections were read as they are on disk, little-endian; on a big-endian CPU each word is
/// swapped into place (a no-op on little-endian ones). Vectors are decoded where they are read
/// back (`LoadedGraph::finish`).
fn from_little_endian(view: &mut LoadView<'_>) {
    if cfg!(target_endian = "big") {
        for slot in view.level0_links.iter_mut() {
            *slot.get_mut() = u32::from_le(*slot.get_mut());
        }
        for label in view.labels.iter_mut() {
            *label.get_mut() = u64::from_le(*label.get_mut());
        }
    }
}

fn put_links(sink: &mut ChecksummedWriter<'_>, index: &Hnsw, node: u32, layer: usize) -> std::io::Result<()> {
    let links = index.graph.links(node, layer);
    let count = links.len();
    sink.put(&(count as u32).to_le_bytes())?;
    for slot in 0..index.graph.max_links(layer) {
        let id = if slot < count { links.get(slot) } else { 0 };
        sink.put(&id.to_le_bytes())?;
    }
    Ok(())
}

/// Checks one persisted link list of `node` on `layer` (count, then slots): the count fits, and
/// every link names another existing node that lives on the link's level. Calls `each` with
/// every link.
fn check_links(
    mut list: impl ExactSizeIterator<Item = u32>,
    node: usize,
    layer: usize,
    levels: &[u8],
    mut each: impl FnMut(u32),
) -> std::result::Result<(), String> {
    let Some(count) = list.next() else {
        return Err("empty link list".to_string());
    };
    let (count, capacity) = (count as usize, list.len());
    if count > capacity {
        return Err(format!("link count {count} exceeds the list capacity {capacity}"));
    }
    for neighbour in list.take(count) {
        let at = neighbour as usize;
        if at == node || levels.get(at).is_none_or(|&level| (level as usize) < layer) {
            return Err(format!("node {node} links on level {layer} to invalid node {neighbour}"));
        }
        each(neighbour);
    }
    Ok(())
}

fn corruption(path: &Path, offset: usize, reason: impl Into<String>) -> Error {
    Error::corruption(path, offset as u64, reason)
}

fn le_u32(bytes: &[u8], offset: usize) -> u32 {
    let mut word = [0u8; 4];
    if let Some(src) = bytes.get(offset..offset + 4) {
        word.copy_from_slice(src);
    }
    u32::from_le_bytes(word)
}

fn le_u64(bytes: &[u8], offset: usize) -> u64 {
    let mut word = [0u8; 8];
    if let Some(src) = bytes.get(offset..offset + 8) {
        word.copy_from_slice(src);
    }
    u64::from_le_bytes(word)
}
#[cfg(test)]
mod tests {
    use super::super::test_data::TestRng;
    use super::*;

    fn sample_index(metric: Metric, nodes: usize) -> Hnsw {
        let index = Hnsw::new(HnswParams { dim: 6, metric, m: 4, ef_construction: 32 }, nodes + 4).expect("params");
        let mut rng = TestRng(21);
        for (i, v) in rng.vectors(nodes, 6).iter().enumerate() {
            index.insert(i as u64 * 3, v).expect("capacity");
        }
        index
    }

    fn assert_same_hits(a: &[(u64, f32)], b: &[(u64, f32)]) {
        assert_eq!(a.iter().map(|h| h.0).collect::<Vec<_>>(), b.iter().map(|h| h.0).collect::<Vec<_>>());
        for (x, y) in a.iter().zip(b) {
            assert!((x.1 - y.1).abs() < 1e-5, "distances {} and {}", x.1, y.1);
        }
    }

    /// 300 rows of 6-d vectors by label, inserted sharing their vectors; label 0 then deleted.
    fn rows_in_a_graph(rng: &mut TestRng, metric: Metric) -> (std::collections::HashMap<u64, SharedVector>, Hnsw) {
        let rows: std::collections::HashMap<u64, SharedVector> =
            rng.vectors(300, 6).into_iter().enumerate().map(|(i, v)| (i as u64, SharedVector::from(v))).collect();
        let index = Hnsw::new(HnswParams { dim: 6, metric, m: 4, ef_construction: 32 }, 300).expect("params");
        for (label, vector) in &rows {
            index.insert_shared(*label, vector.clone()).expect("capacity");
        }
        index.mark_deleted(0);
        (rows, index)
    }

    /// A graph read from a file takes the rows' vectors in place of its copies (one copy of
    /// each vector in memory), then answers and writes exactly as the graph it was written from.
    /// Nodes without a row keep a copy of their own once the file's block is freed.
    #[test]
    fn a_loaded_graph_adopts_the_rows_vectors() {
        for metric in [Metric::Cosine, Metric::L2, Metric::Ip] {
            let mut rng = TestRng(5);
            let (rows, index) = rows_in_a_graph(&mut rng, metric);
            let bytes = file_of(&index, 1);
            let (mut loaded, _) = Hnsw::read_from(&bytes, Path::new("index.hnsw")).expect("valid file");
            let node_of = |h: &Hnsw, label: u64| read(&h.directory).node_of_label[&label];
            // Label 5's row is not offered (as if it were pending): its node keeps the file's vector.
            let file_vector_of_5 = loaded.graph.vector(node_of(&loaded, 5)).to_vec();
            let adopted = rows.iter().filter(|(label, row)| **label != 5 && loaded.adopt_row_vector(**label, row)).count();
            assert_eq!(adopted, 298, "{metric:?}: every live label but the one held back");
            for (label, row) in rows.iter().filter(|(label, _)| ![0, 5].contains(*label)) {
                let node = node_of(&loaded, *label);
                assert!(loaded.graph.vectors.shared(node).is_some_and(|v| SharedVector::ptr_eq(&v, row)), "{metric:?} label {label}");
            }
            assert_eq!(loaded.graph.vector(node_of(&loaded, 5)), &file_vector_of_5[..]);
            assert_eq!(loaded.graph.vectors.heap_bytes(), index.graph.vectors.heap_bytes(), "the file's block is freed");
            assert_eq!(file_of(&loaded, 1), bytes, "{metric:?}: re-writing an adopting graph is byte-identical");
            for query in rng.vectors(20, 6) {
                assert_same_hits(&loaded.search(&query, 10, 32, None), &index.search(&query, 10, 32, None));
            }
        }
    }

    /// `read_file` keeps no copy of the vectors: live nodes take the rows' vectors, and `finish`
    /// reads the others (a tombstone, a row held back) from the file. The result is the graph
    /// `read_from` gives, holding no block, answering and re-writing the same.
    #[test]
    fn a_graph_read_from_its_file_keeps_no_vectors_of_its_own_but_those_no_row_lends() {
        use crate::storage::Storage;
        for metric in [Metric::Cosine, Metric::L2, Metric::Ip] {
            let mut rng = TestRng(9);
            let (rows, index) = rows_in_a_graph(&mut rng, metric);
            let bytes = file_of(&index, 1);
            let path = Path::new("/idx/c.hnsw");
            let fs = crate::fault::FaultStorage::holding(path, &bytes);
            let file = fs.open_read(path).expect("open");
            let (mut loaded, _, _) = Hnsw::read_file(file.as_ref(), bytes.len() as u64, path).expect("valid file");
            let adopted = rows.iter().filter(|(label, row)| **label != 5 && loaded.adopt_row_vector(**label, row)).count();
            assert_eq!(adopted, 298, "{metric:?}: every live label but the one held back");
            let loaded = loaded.finish(file.as_ref(), path).expect("finish");
            let (whole, _) = Hnsw::read_from(&bytes, path).expect("valid file");
            let node_of = |h: &Hnsw, label: u64| read(&h.directory).node_of_label[&label];
            for (label, row) in rows.iter().filter(|(label, _)| ![0, 5].contains(*label)) {
                assert!(
                    loaded.graph.vectors.shared(node_of(&loaded, *label)).is_some_and(|v| SharedVector::ptr_eq(&v, row)),
                    "{metric:?} label {label}"
                );
            }
            for node in 0..300 {
                if loaded.graph.vectors.shared(node).is_some_and(|v| rows.values().any(|r| SharedVector::ptr_eq(&v, r))) {
                    continue;
                }
                assert_eq!(loaded.graph.vector(node), whole.graph.vector(node), "{metric:?}: node {node} read back from the file");
            }
            assert_eq!(loaded.graph.vectors.heap_bytes(), index.graph.vectors.heap_bytes(), "no block is held");
            assert_eq!(file_of(&loaded, 1), bytes, "{metric:?}: re-writing it is byte-identical");
            for query in rng.vectors(20, 6) {
                assert_same_hits(&loaded.search(&query, 10, 32, None), &index.search(&query, 10, 32, None));
            }
        }
    }

    /// A vector `finish` reads back must be the one checked at open: changed in between (the
    /// file rewritten under the store), it is a corruption error, not a silently different graph.
    #[test]
    fn a_vector_changed_after_the_open_read_is_corruption() {
        use crate::storage::Storage;
        let index = sample_index(Metric::L2, 50);
        let bytes = file_of(&index, 3);
        let path = Path::new("/idx/d.hnsw");
        let fs = crate::fault::FaultStorage::holding(path, &bytes);
        let file = fs.open(path).expect("open");
        let (loaded, _, _) = Hnsw::read_file(file.as_ref(), bytes.len() as u64, path).expect("valid file");
        // Node 7's first float, flipped after the checked read.
        let at = header::LEN + 7 * 6 * 4;
        file.write_at(at as u64, &[bytes[at] ^ 0x10]).expect("write");
        match loaded.finish(file.as_ref(), path) {
            Err(Error::Corruption { offset, reason, .. }) => {
                assert_eq!(offset as usize, at, "{reason}");
                assert!(reason.contains("node 7"), "{reason}");
            }
            Err(other) => panic!("expected corruption, got {other}"),
            Ok(_) => panic!("a changed vector was taken"),
        }
    }

    fn file_of(index: &Hnsw, covered_seq: u64) -> Vec<u8> {
        let mut bytes = Vec::new();
        index.write_to(&mut bytes, covered_seq).expect("write to a Vec");
        bytes
    }

    fn expect_corruption(bytes: &[u8]) -> (u64, String) {
        match Hnsw::read_from(bytes, Path::new("index.hnsw")) {
            Err(Error::Corruption { offset, reason, .. }) => (offset, reason),
            Err(other) => panic!("expected corruption, got {other}"),
            Ok(_) => panic!("corrupt file loaded"),
        }
    }

    #[test]
    fn round_trip_preserves_everything() {
        let index = sample_index(Metric::Cosine, 300);
        index.mark_deleted(0);
        index.insert(3, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).expect("capacity");
        let bytes = file_of(&index, 42);
        let (loaded, covered_seq) = Hnsw::read_from(&bytes, Path::new("index.hnsw")).expect("valid file");
        assert_eq!(covered_seq, 42);
        assert_eq!(loaded.params(), index.params());
        assert_eq!(loaded.len(), index.len());
        assert_eq!(loaded.deleted_count(), index.deleted_count());
        assert_eq!(loaded.capacity(), 301);
        assert!(!loaded.contains(0));
        assert_eq!(file_of(&loaded, 42), bytes, "re-writing a loaded index is byte-identical");
        let query = [0.5, -0.1, 0.3, 0.9, -0.7, 0.2];
        // The loaded nodes hold the file's unit vectors, the original ones the inserted vectors
        // and their norms: the same distances up to rounding.
        assert_same_hits(&loaded.search(&query, 10, 32, None), &index.search(&query, 10, 32, None));
        // Pruning relies on the in-degree counters, which loading rebuilds from the lists.
        let nodes = loaded.capacity() as u32;
        for node in 0..nodes {
            let in_lists = (0..nodes).filter(|&from| loaded.graph.links(from, 0).to_vec().contains(&node)).count() as u32;
            assert_eq!(loaded.graph.level0_in_degree(node), in_lists, "node {node}");
        }
    }

    #[test]
    fn empty_index_round_trips() {
        let index = Hnsw::new(HnswParams::new(3, Metric::Ip), 5).expect("params");
        let bytes = file_of(&index, 7);
        assert_eq!(bytes.len(), header::LEN + CHECKSUM_LEN);
        let (loaded, covered_seq) = Hnsw::read_from(&bytes, Path::new("x")).expect("valid");
        assert_eq!((loaded.len(), covered_seq), (0, 7));
        assert!(loaded.search(&[1.0, 0.0, 0.0], 3, 8, None).is_empty());
    }

    #[test]
    fn corrupt_header_fields_are_reported_at_their_offset() {
        let bytes = file_of(&sample_index(Metric::L2, 50), 1);
        let mut wrong_magic = bytes.clone();
        wrong_magic[0] ^= 0xFF;
        assert_eq!(expect_corruption(&wrong_magic).0, header::MAGIC as u64);
        let mut wrong_version = bytes.clone();
        wrong_version[header::VERSION] = 9;
        assert_eq!(expect_corruption(&wrong_version).0, header::VERSION as u64);
        let mut flipped = bytes.clone();
        flipped[header::LEN + 5] ^= 0x10;
        let (offset, reason) = expect_corruption(&flipped);
        assert_eq!(offset as usize, bytes.len() - CHECKSUM_LEN);
        assert!(reason.contains("checksum"), "{reason}");
    }

    #[test]
    fn read_file_loads_what_read_from_loads_and_gives_the_whole_file_digest() {
        use crate::storage::Storage;
        let index = sample_index(Metric::L2, 120);
        index.mark_deleted(3);
        let bytes = file_of(&index, 11);
        let path = Path::new("/idx/a.hnsw");
        let fs = crate::fault::FaultStorage::holding(path, &bytes);
        let file = fs.open_read(path).expect("open");
        let (loaded, covered, digest) = Hnsw::read_file(file.as_ref(), bytes.len() as u64, path).expect("valid file");
        assert_eq!((covered, digest), (11, xxh3(&bytes)));
        // No row lends a vector: every one is read back from the file.
        let loaded = loaded.finish(file.as_ref(), path).expect("finish");
        assert_eq!(file_of(&loaded, 11), bytes, "the same graph as read_from's");

        // Every flip is caught from the file as from memory.
        for byte in (0..bytes.len()).step_by(11) {
            let mut flipped = bytes.clone();
            flipped[byte] ^= 1 << (byte % 8);
            crate::durable::write_synced(&fs, path, &flipped).expect("write");
            let file = fs.open_read(path).expect("open");
            assert!(Hnsw::read_file(file.as_ref(), bytes.len() as u64, path).is_err(), "flip at {byte} loaded");
        }
    }

    #[test]
    fn a_file_that_shrinks_while_it_is_read_is_corruption_not_a_crash() {
        use crate::storage::Storage;
        let bytes = file_of(&sample_index(Metric::L2, 80), 2);
        let fs = crate::fault::FaultStorage::new();
        let path = Path::new("/idx/b.hnsw");
        fs.create_dir_all(Path::new("/idx")).expect("dir");
        for cut in [0, header::LEN, header::LEN + 100, bytes.len() / 2, bytes.len() - 1] {
            crate::durable::write_synced(&fs, path, &bytes).expect("write");
            let file = fs.open(path).expect("open");
            // The length was taken before the file was cut underneath the reader.
            let len = file.len().expect("len");
            file.set_len(cut as u64).expect("truncate");
            match Hnsw::read_file(file.as_ref(), len, path) {
                Err(Error::Corruption { .. }) => {}
                Err(other) => panic!("cut at {cut}: expected corruption, got {other}"),
                Ok(_) => panic!("cut at {cut}: a truncated file loaded"),
            }
        }
    }

    #[test]
    fn every_truncation_and_bit_flip_is_an_error_not_a_panic() {
        let bytes = file_of(&sample_index(Metric::L2, 40), 1);
        for len in 0..bytes.len() {
            expect_corruption(&bytes[..len]);
        }
        for byte in (0..bytes.len()).step_by(7) {
            let mut flipped = bytes.clone();
            flipped[byte] ^= 1 << (byte % 8);
            expect_corruption(&flipped);
        }
    }

    /// Rewrites the checksum so structural validation (not the checksum) must catch the damage.
    fn resealed(mut bytes: Vec<u8>) -> Vec<u8> {
        let body_len = bytes.len() - CHECKSUM_LEN;
        let digest = xxh3(&bytes[..body_len]);
        bytes[body_len..].copy_from_slice(&digest.to_le_bytes());
        bytes
    }

    #[test]
    fn structurally_invalid_files_with_valid_checksums_are_rejected() {
        let index = sample_index(Metric::L2, 30);
        let bytes = file_of(&index, 1);
        let nodes = 30usize;
        let levels_at = header::LEN + nodes * 6 * 4;
        let level0_at = levels_at + nodes;

        let mut huge_count = bytes.clone();
        huge_count[header::NODE_COUNT..header::NODE_COUNT + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        expect_corruption(&resealed(huge_count));

        let mut bad_link = bytes.clone();
        bad_link[level0_at..level0_at + 4].copy_from_slice(&1u32.to_le_bytes());
        bad_link[level0_at + 4..level0_at + 8].copy_from_slice(&999u32.to_le_bytes());
        let (offset, reason) = expect_corruption(&resealed(bad_link));
        assert_eq!(offset as usize, level0_at, "{reason}");

        // The first upper-level list belongs to the lowest node id above level 0; point its first
        // link at a level-0 node.
        let levels = &bytes[levels_at..levels_at + nodes];
        let upper_node = levels.iter().position(|&l| l > 0).expect("a node above level 0");
        let level0_node = levels.iter().position(|&l| l == 0).expect("a level-0 node");
        let upper_at = level0_at + nodes * (1 + 2 * 4) * 4;
        let mut bad_upper_link = bytes.clone();
        bad_upper_link[upper_at..upper_at + 4].copy_from_slice(&1u32.to_le_bytes());
        bad_upper_link[upper_at + 4..upper_at + 8].copy_from_slice(&(level0_node as u32).to_le_bytes());
        let (offset, reason) = expect_corruption(&resealed(bad_upper_link));
        assert_eq!(offset as usize, upper_at, "{reason}");
        assert!(reason.contains(&format!("node {upper_node} links on level 1")), "{reason}");

        let mut bad_count = bytes.clone();
        bad_count[level0_at..level0_at + 4].copy_from_slice(&100u32.to_le_bytes());
        expect_corruption(&resealed(bad_count));

        let mut bad_level = bytes.clone();
        bad_level[levels_at] = 200;
        expect_corruption(&resealed(bad_level));

        let mut bad_metric = bytes.clone();
        bad_metric[header::METRIC] = 7;
        assert_eq!(expect_corruption(&resealed(bad_metric)).0, header::METRIC as u64);

        let mut bad_entry = bytes.clone();
        bad_entry[header::ENTRY_NODE..header::ENTRY_NODE + 4].copy_from_slice(&5000u32.to_le_bytes());
        expect_corruption(&resealed(bad_entry));

        let labels_at = bytes.len() - CHECKSUM_LEN - nodes.div_ceil(8) - nodes * 8;
        let mut duplicate_label = bytes.clone();
        duplicate_label.copy_within(labels_at..labels_at + 8, labels_at + 8);
        expect_corruption(&resealed(duplicate_label));

        let mut nan_vector = bytes;
        nan_vector[header::LEN..header::LEN + 4].copy_from_slice(&f32::NAN.to_le_bytes());
        expect_corruption(&resealed(nan_vector));
    }

    /// The golden index: sequential inserts are deterministic (level draws come from a counter),
    /// so this always produces the same graph and the same bytes.
    fn golden_index() -> Hnsw {
        let params = HnswParams { dim: 2, metric: Metric::L2, m: 2, ef_construction: 8 };
        let index = Hnsw::new(params, 8).expect("params");
        let points = [(10u64, [0.0f32, 0.0]), (11, [1.0, 0.0]), (12, [0.0, 1.0]), (13, [1.0, 1.0]), (14, [2.0, 2.0])];
        for (label, v) in points {
            index.insert(label, &v).expect("capacity");
        }
        index.mark_deleted(12);
        index.insert(13, &[3.0, 1.0]).expect("capacity");
        index
    }

    /// Format version 1 as written for `golden_index()` with covered_seq 9: 6 nodes, node 2
    /// deleted, node 3 superseded by node 5.
    const GOLDEN_V1_HEX: &str = concat!(
        "434149524e484e57010000000100000002000000020000000800000003000000030000000000000009000000",
        "000000000600000000000000060000000000000000000000000000000000803f00000000000000000000803f",
        "0000803f0000803f0000004000000040000040400000803f0000000301010200000001000000020000000000",
        "0000000000000400000000000000020000000300000005000000030000000000000001000000030000000000",
        "0000030000000100000002000000040000000000000002000000030000000500000000000000000000000200",
        "0000040000000100000000000000000000000200000004000000050000000000000000000000000000000000",
        "000000000000000000000200000003000000050000000200000004000000030000000a000000000000000b00",
        "0000000000000c000000000000000d000000000000000e000000000000000d000000000000000c983942b9fd",
        "c86016",
    );

    fn from_hex(hex: &str) -> Vec<u8> {
        (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex")).collect()
    }

    #[test]
    fn format_v1_golden_file_loads_and_is_reproduced_byte_for_byte() {
        let golden = from_hex(GOLDEN_V1_HEX);
        let (loaded, covered_seq) = Hnsw::read_from(&golden, Path::new("golden.hnsw")).expect("golden v1 loads");
        assert_eq!(covered_seq, 9);
        assert_eq!((loaded.len(), loaded.deleted_count()), (4, 2));
        assert!(!loaded.contains(12) && loaded.contains(13));
        assert_eq!(loaded.search(&[3.0, 1.0], 1, 8, None), vec![(13, 0.0)]);
        assert_eq!(loaded.search(&[0.0, 1.0], 4, 8, None).len(), 4);
        // A failure here means the layout changed: bump INDEX_FORMAT_VERSION and keep reading v1.
        assert_eq!(file_of(&golden_index(), 9), golden, "writer no longer produces format v1");
    }

    /// Load-time report for a file of a 100k x 128 index (M = 16), run with
    /// `cargo test --release -p cairn-core --lib hnsw_load_timing -- --ignored --nocapture`.
    /// The graph is assembled with random links of realistic counts instead of built, which
    /// would take minutes; loading cost depends only on the file's size and shape.
    #[test]
    #[ignore = "timing report, not a correctness test"]
    fn hnsw_load_timing_report() {
        let (nodes, dim) = (100_000usize, 128usize);
        let mut index = Hnsw::new(HnswParams::new(dim, Metric::L2), nodes).expect("params");
        let mut rng = TestRng(77);
        let levels: Vec<usize> = (0..nodes)
            .map(|_| {
                let uniform = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
                ((-(1.0 - uniform).ln() * index.level_mult) as usize).min(MAX_LEVEL)
            })
            .collect();
        let top = levels.iter().copied().max().unwrap_or(0);
        let entry = levels.iter().position(|&l| l == top).unwrap_or(0) as u32;
        let mut vector = vec![0.0f32; dim];
        for (node, &level) in levels.iter().enumerate() {
            vector.iter_mut().for_each(|x| *x = rng.unit());
            // SAFETY: single-threaded; nothing else can see the graph yet.
            unsafe { index.graph.vectors.write(node as u32, SharedVector::from_slice(&vector), 1.0) };
            index.graph.init_node(node as u32, node as u64 * 3, level);
        }
        for layer in 0..=top {
            let on_layer: Vec<u32> = (0..nodes as u32).filter(|&n| levels[n as usize] >= layer).collect();
            let max = index.graph.max_links(layer).min(on_layer.len() - 1);
            for &node in &on_layer {
                let count = max / 2 + (rng.next_u64() as usize) % (max - max / 2 + 1);
                let mut links = Vec::with_capacity(count);
                while links.len() < count {
                    let target = on_layer[(rng.next_u64() % on_layer.len() as u64) as usize];
                    if target != node && !links.contains(&target) {
                        links.push(target);
                    }
                }
                let lock = index.graph.lock_links(node);
                index.graph.set_links(&lock, node, layer, &links);
            }
        }
        index.entry.set(entry, top);
        *index.directory.get_mut().expect("not poisoned") = LabelDirectory {
            node_of_label: (0..nodes as u32).map(|n| (n as u64 * 3, n)).collect(),
            allocated: nodes as u32,
            tombstones: 0,
        };
        let bytes = file_of(&index, 1);
        drop(index);

        /// This thread's CPU seconds (user and system, so page faults count): on a shared
        /// machine wall time mostly measures the neighbours.
        fn thread_cpu_seconds() -> f64 {
            let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
            // SAFETY: `now` is a valid, writable timespec.
            unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
            now.tv_sec as f64 + now.tv_nsec as f64 * 1e-9
        }
        let (mut wall, mut cpu) = (Vec::new(), Vec::new());
        for _ in 0..7 {
            let (started, cpu_started) = (std::time::Instant::now(), thread_cpu_seconds());
            let (loaded, _) = Hnsw::read_from(&bytes, Path::new("x")).expect("valid");
            wall.push(started.elapsed().as_secs_f64() * 1e3);
            cpu.push((thread_cpu_seconds() - cpu_started) * 1e3);
            assert_eq!(loaded.len(), nodes);
        }
        wall.sort_by(f64::total_cmp);
        cpu.sort_by(f64::total_cmp);
        println!(
            "read_from {nodes} x {dim}, {} MB: cpu min {:.1} ms, median {:.1} ms; wall min {:.1} ms, median {:.1} ms",
            bytes.len() >> 20,
            cpu[0],
            cpu[cpu.len() / 2],
            wall[0],
            wall[wall.len() / 2]
        );
    }

    #[test]
    fn write_errors_are_returned() {
        struct Failing;
        impl Write for Failing {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("disk full"))
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        assert!(sample_index(Metric::L2, 10).write_to(&mut Failing, 0).is_err());
    }
}
