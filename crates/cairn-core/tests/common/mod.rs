//! Shared pieces of the crash, fault-injection and recovery tests: a seeded RNG, a reference
//! model (collection -> id -> (vector, metadata)) built from committed batches, a workload
//! generator, and helpers that read an engine's whole state back for comparison.
#![allow(dead_code, reason = "each test binary uses a different subset of these helpers")]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cairn_core::batch::{self, CollectionSpec, Op};
use cairn_core::fault::FaultStorage;
use cairn_core::layout::{ARCHIVE_DIR, DATA_DIR, WAL_DIR};
use cairn_core::storage::Storage;
use cairn_core::wal::record::record_len;
use cairn_core::wal::writer::Prealloc;
use cairn_core::{Engine, Error, Metric, Options, RecoveryMode, SyncMode};

pub mod mixture;

/// Every FaultStorage store lives at this fake path.
pub const DIR: &str = "/store";

pub fn dir() -> &'static Path {
    Path::new(DIR)
}

/// splitmix64: small, seeded, and good enough to pick operations.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    pub fn range(&mut self, lo: u64, hi_inclusive: u64) -> u64 {
        lo + self.below(hi_inclusive - lo + 1)
    }
    /// True with probability `percent`/100.
    pub fn percent(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    /// Uniform in [-1, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    pub fn vector(&mut self, dim: u32) -> Vec<f32> {
        (0..dim).map(|_| self.unit()).collect()
    }
    /// Uniform in (0, 1].
    pub fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }
    /// Standard normal (Box-Muller).
    pub fn gaussian(&mut self) -> f32 {
        let (u, v) = (self.uniform(), self.uniform());
        ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
    }
}

// ---------------------------------------------------------------------------------------------
// Reference model
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq)]
pub struct ModelCollection {
    pub dim: u32,
    pub metric: Metric,
    pub rows: BTreeMap<String, (Vec<f32>, String)>,
}

pub type Model = BTreeMap<String, ModelCollection>;

/// Apply one batch to the model, all or nothing. Returns false (model unchanged) when any
/// operation does not apply, exactly the cases the engine refuses: creating an existing
/// collection, dropping or writing to a missing one, a vector of the wrong dimension.
pub fn apply(model: &mut Model, ops: &[Op]) -> bool {
    let mut next = model.clone();
    for op in ops {
        match op {
            Op::CreateCollection(spec) => {
                if next.contains_key(&spec.name) {
                    return false;
                }
                next.insert(spec.name.clone(), ModelCollection { dim: spec.dim, metric: spec.metric, rows: BTreeMap::new() });
            }
            Op::DropCollection { name } => {
                if next.remove(name).is_none() {
                    return false;
                }
            }
            Op::Upsert { collection, id, vector, metadata } => match next.get_mut(collection) {
                Some(c) if c.dim as usize == vector.len() => {
                    c.rows.insert(id.clone(), (vector.to_vec(), metadata.to_string()));
                }
                _ => return false,
            },
            Op::Delete { collection, id } => match next.get_mut(collection) {
                Some(c) => {
                    c.rows.remove(id);
                }
                None => return false,
            },
        }
    }
    *model = next;
    true
}

/// The committed history: `commits[i]` is the batch with sequence number `i + 1`.
#[derive(Clone, Default)]
pub struct History {
    pub commits: Vec<Vec<Op>>,
}

impl History {
    pub fn len(&self) -> u64 {
        self.commits.len() as u64
    }

    /// Record an acknowledged commit; sequence numbers must be contiguous from 1.
    pub fn acknowledge(&mut self, seq: u64, ops: Vec<Op>) {
        assert_eq!(seq, self.len() + 1, "acknowledged sequence numbers must be contiguous");
        self.commits.push(ops);
    }

    /// The model after every commit up to and including `seq`.
    pub fn model_at(&self, seq: u64) -> Model {
        assert!(seq <= self.len(), "seq {seq} is past the history ({})", self.len());
        let mut m = Model::new();
        for (i, ops) in self.commits[..seq as usize].iter().enumerate() {
            assert!(apply(&mut m, ops), "history batch {} does not apply to the model", i + 1);
        }
        m
    }

    /// The model after the commits up to `seq`, leaving out those `skipped` names. Batches that
    /// no longer apply (they depended on a skipped one) are left out too and returned.
    pub fn model_skipping(&self, seq: u64, skipped: impl Fn(u64) -> bool) -> (Model, Vec<u64>) {
        let mut m = Model::new();
        let mut unapplied = Vec::new();
        for (i, ops) in self.commits[..seq as usize].iter().enumerate() {
            let s = i as u64 + 1;
            if !skipped(s) && !apply(&mut m, ops) {
                unapplied.push(s);
            }
        }
        (m, unapplied)
    }

    pub fn truncate(&mut self, seq: u64) {
        self.commits.truncate(seq as usize);
    }
}

// ---------------------------------------------------------------------------------------------
// Reading an engine back
// ---------------------------------------------------------------------------------------------

/// Everything the engine serves, read through its public API only.
pub fn read_state(e: &Engine) -> Model {
    let mut m = Model::new();
    for info in e.collections().expect("collections() must work") {
        let metric = Metric::parse(info.metric).expect("known metric");
        let mut rows = BTreeMap::new();
        let mut unreadable = 0;
        if info.count > 0 {
            let zero = vec![0.0f32; info.dim as usize];
            let out = e.query_exact(&info.name, &zero, info.count, None).expect("query_exact lists every row");
            let hits = out.hits;
            // Records that exist but cannot be read are reported as skipped, not listed.
            unreadable = out.skipped.len();
            assert_eq!(hits.len() + unreadable, info.count, "query_exact with k = count must return every row of '{}'", info.name);
            for (id, _, meta) in hits {
                let (vector, metadata) =
                    e.get(&info.name, &id).expect("get must work").unwrap_or_else(|| panic!("'{id}' listed but get() finds nothing"));
                assert_eq!(metadata, meta, "query and get disagree on the metadata of '{id}'");
                assert!(rows.insert(id.clone(), (vector, metadata)).is_none(), "id '{id}' listed twice");
            }
        }
        assert_eq!(e.count(&info.name).expect("count must work"), rows.len() + unreadable);
        m.insert(info.name.clone(), ModelCollection { dim: info.dim, metric, rows });
    }
    m
}

/// Compare with a readable first difference instead of two huge dumps.
pub fn assert_model_eq(got: &Model, want: &Model, ctx: &str) {
    if got == want {
        return;
    }
    let names: Vec<_> = got.keys().chain(want.keys()).collect();
    for name in names {
        let (g, w) = (got.get(name), want.get(name));
        match (g, w) {
            (None, Some(_)) => panic!("{ctx}: collection '{name}' is missing"),
            (Some(_), None) => panic!("{ctx}: collection '{name}' should not exist"),
            (Some(g), Some(w)) => {
                assert_eq!((g.dim, g.metric), (w.dim, w.metric), "{ctx}: schema of '{name}'");
                for id in g.rows.keys().chain(w.rows.keys()) {
                    let (gr, wr) = (g.rows.get(id), w.rows.get(id));
                    assert_eq!(gr, wr, "{ctx}: row '{name}/{id}' differs (got vs model)");
                }
            }
            (None, None) => {}
        }
    }
    unreachable!("models differ but no difference was found");
}

pub fn assert_state(e: &Engine, want: &Model, ctx: &str) {
    assert_model_eq(&read_state(e), want, ctx);
}

// ---------------------------------------------------------------------------------------------
// Opening
// ---------------------------------------------------------------------------------------------

pub fn options(fs: &FaultStorage, sync: SyncMode, recovery: RecoveryMode, segment_bytes: u64, prealloc: Prealloc) -> Options {
    Options { sync, recovery, segment_bytes, prealloc, storage: Arc::new(fs.clone()), ..Options::default() }
}

/// Open for recovery checks: the sync mode does not matter for what recovery finds.
pub fn open_with(fs: &FaultStorage, recovery: RecoveryMode) -> cairn_core::Result<Engine> {
    Engine::open(dir(), options(fs, SyncMode::Always, recovery, 16 << 10, Prealloc::Off))
}

/// Wait until the background indexer has caught up, then checkpoint. With every graph complete,
/// what a checkpoint writes (and so the write and fsync counts that fault injection targets)
/// does not depend on thread timing.
pub fn checkpoint(e: &Engine) -> cairn_core::Result<u64> {
    for c in e.collections()? {
        e.wait_for_index(&c.name)?;
    }
    e.checkpoint()
}

pub fn code(r: &cairn_core::Result<impl Sized>) -> &'static str {
    match r {
        Ok(_) => "OK",
        Err(e) => e.code(),
    }
}

/// The file and offset a corruption error names.
pub fn corruption_location(e: &Error) -> (PathBuf, u64) {
    match e {
        Error::Corruption { file, offset, .. } | Error::ChecksumMismatch { file, offset, .. } => (file.clone(), *offset),
        other => panic!("expected a corruption error, got {other:?} ({})", other.code()),
    }
}

/// Every file of the store with its bytes, for "a refused open changes nothing" checks.
pub fn files(fs: &FaultStorage) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let root = dir().to_path_buf();
    for d in [root.clone(), root.join(WAL_DIR), root.join(ARCHIVE_DIR), root.join(DATA_DIR)] {
        for name in fs.list(&d).unwrap_or_default() {
            let p = d.join(&name);
            if let Ok(bytes) = fs.read(&p) {
                out.insert(p, bytes);
            }
        }
    }
    out
}

pub fn list(fs: &FaultStorage, sub: &str) -> Vec<String> {
    fs.list(&dir().join(sub)).unwrap_or_default()
}

/// WAL segment names in `wal/`, in sequence order.
pub fn wal_segments(fs: &FaultStorage) -> Vec<PathBuf> {
    list(fs, WAL_DIR).into_iter().filter(|n| n.ends_with(".wal")).map(|n| dir().join(WAL_DIR).join(n)).collect()
}

// ---------------------------------------------------------------------------------------------
// Workloads
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub enum Step {
    Commit(Vec<Op>),
    Checkpoint,
    /// Close cleanly and open again.
    Reopen,
}

#[derive(Clone, Copy)]
pub struct WorkloadShape {
    pub commits: usize,
    /// Chance, in percent, of a checkpoint after a commit.
    pub checkpoint_pct: u64,
    /// Chance, in percent, of a clean close and reopen after a commit.
    pub reopen_pct: u64,
    /// Chance, in percent, of a batch larger than 4 KiB.
    pub big_pct: u64,
}

/// Collection "a": dim 8, L2. "b": dim 48, inner product (a 30-row batch is ~7 KiB).
/// "c": dim 4, cosine, dropped and created again now and then.
pub const DIM_A: u32 = 8;
pub const DIM_B: u32 = 48;
pub const DIM_C: u32 = 4;

pub fn spec(name: &str, dim: u32, metric: Metric) -> CollectionSpec {
    CollectionSpec { name: name.into(), dim, metric, m: 16, ef_construction: 100 }
}

struct Gen {
    rng: Rng,
    model: Model,
    counter: u64,
}

impl Gen {
    fn metadata(&mut self) -> String {
        self.counter += 1;
        match self.rng.below(10) {
            0 => "null".into(),
            1 => format!("{{\"n\":{},\"note\":\"{}\"}}", self.counter, "x".repeat(self.rng.below(200) as usize)),
            _ => format!("{{\"n\":{},\"t\":{}}}", self.counter, self.rng.below(3)),
        }
    }

    fn upsert(&mut self, coll: &str) -> Op {
        let (dim, pool) = match coll {
            "a" => (DIM_A, 60),
            "b" => (DIM_B, 40),
            _ => (DIM_C, 10),
        };
        let id = format!("{coll}{}", self.rng.below(pool));
        Op::Upsert { collection: coll.into(), id, vector: self.rng.vector(dim).into(), metadata: self.metadata().into() }
    }

    fn delete(&mut self, coll: &str) -> Op {
        // Prefer ids that exist so deletes do something; sometimes delete a missing id.
        let existing: Vec<String> = self.model.get(coll).map(|c| c.rows.keys().cloned().collect()).unwrap_or_default();
        let id = if !existing.is_empty() && self.rng.percent(80) {
            existing[self.rng.below(existing.len() as u64) as usize].clone()
        } else {
            format!("{coll}{}", 1000 + self.rng.below(5))
        };
        Op::Delete { collection: coll.into(), id }
    }

    fn ab(&mut self) -> &'static str {
        if self.rng.percent(55) {
            "a"
        } else {
            "b"
        }
    }

    fn batch(&mut self, shape: &WorkloadShape) -> Vec<Op> {
        let has_c = self.model.contains_key("c");
        let r = self.rng.below(100);
        if r < shape.big_pct {
            let n = self.rng.range(20, 32);
            return (0..n).map(|_| self.upsert("b")).collect();
        }
        match r {
            _ if r < 40 => vec![self.upsert("a")],
            _ if r < 52 => vec![self.upsert("b")],
            _ if r < 62 => {
                let c = self.ab();
                vec![self.delete(c)]
            }
            _ if r < 82 => {
                let n = self.rng.range(2, 8);
                let mut ops = Vec::new();
                for _ in 0..n {
                    let coll = if has_c && self.rng.percent(20) { "c" } else { self.ab() };
                    ops.push(if self.rng.percent(75) { self.upsert(coll) } else { self.delete(coll) });
                }
                ops
            }
            _ if r < 92 => {
                if !has_c {
                    let mut ops = vec![Op::CreateCollection(spec("c", DIM_C, Metric::Cosine))];
                    for _ in 0..self.rng.below(4) {
                        ops.push(self.upsert("c"));
                    }
                    ops
                } else if self.rng.percent(25) {
                    vec![Op::DropCollection { name: "c".into() }]
                } else {
                    // A write to "a" and "c" together: atomic across collections.
                    vec![self.upsert("c"), self.upsert("a")]
                }
            }
            _ => {
                // The same id written several times in one batch: the last write wins.
                let c = self.ab();
                let first = self.upsert(c);
                let Op::Upsert { id, .. } = &first else { unreachable!() };
                let id = id.clone();
                let mut again = self.upsert(c);
                if let Op::Upsert { id: i, .. } = &mut again {
                    i.clone_from(&id);
                }
                vec![first, Op::Delete { collection: c.into(), id }, again]
            }
        }
    }
}

/// A deterministic workload over collections "a", "b" (created by the first two commits) and
/// "c" (created and dropped along the way). Every batch is valid when applied in order.
pub fn workload(seed: u64, shape: WorkloadShape) -> Vec<Step> {
    let mut g = Gen { rng: Rng::new(seed), model: Model::new(), counter: 0 };
    let mut steps = Vec::new();
    let mut commits = 0;
    let push = |g: &mut Gen, steps: &mut Vec<Step>, ops: Vec<Op>| {
        assert!(apply(&mut g.model, &ops), "generated batch must be valid");
        steps.push(Step::Commit(ops));
    };
    push(&mut g, &mut steps, vec![Op::CreateCollection(spec("a", DIM_A, Metric::L2))]);
    push(&mut g, &mut steps, vec![Op::CreateCollection(spec("b", DIM_B, Metric::Ip))]);
    commits += 2;
    while commits < shape.commits {
        let ops = g.batch(&shape);
        push(&mut g, &mut steps, ops);
        commits += 1;
        if g.rng.percent(shape.checkpoint_pct) {
            steps.push(Step::Checkpoint);
        }
        if g.rng.percent(shape.reopen_pct) {
            steps.push(Step::Reopen);
        }
    }
    steps
}

/// Bytes the batch takes in the WAL.
pub fn wal_record_len(ops: &[Op]) -> usize {
    record_len(batch::encode(ops).len())
}

pub fn commit_count(steps: &[Step]) -> usize {
    steps.iter().filter(|s| matches!(s, Step::Commit(_))).count()
}

/// Runs a Commit step (its acknowledgement recorded in `history`) or a Checkpoint step on
/// `engine`, panicking on an error. A Reopen step is not run: true hands it back to the caller,
/// which reopens its own way (or skips it).
pub fn run_step(engine: &Engine, step: &Step, history: &mut History) -> bool {
    match step {
        Step::Commit(ops) => history.acknowledge(engine.commit(ops).expect("commit"), ops.clone()),
        Step::Checkpoint => {
            checkpoint(engine).expect("checkpoint");
        }
        Step::Reopen => return true,
    }
    false
}

/// Offsets, vector sizes (0 for a delete) and ids of the records of a segment (checkpoint)
/// file, version 2 layout: the vector at +32, the id after it.
pub fn segment_records(buf: &[u8]) -> Vec<(usize, usize, String)> {
    let dim = u32::from_le_bytes(buf[12..16].try_into().expect("4 bytes")) as usize;
    let footer = buf.len() - 32;
    let mut out = Vec::new();
    let mut pos = cairn_core::datafile::DATAFILE_HEADER_LEN;
    while pos < footer {
        let len = u32::from_le_bytes(buf[pos..pos + 4].try_into().expect("4 bytes")) as usize;
        let vec_bytes = if buf[pos + 4] == 1 { dim * 4 } else { 0 };
        let id_len = u16::from_le_bytes(buf[pos + 16..pos + 18].try_into().expect("2 bytes")) as usize;
        let id_at = pos + 32 + vec_bytes;
        out.push((pos, vec_bytes, String::from_utf8(buf[id_at..id_at + id_len].to_vec()).expect("utf-8 id")));
        pos += len;
    }
    out
}
