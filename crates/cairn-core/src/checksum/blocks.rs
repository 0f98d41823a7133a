//! xxh3-64 (seed 0, default secret) computed block by block, for two reasons:
//!
//! - Speed: the `xxhash-rust` crate picks its SIMD level when it is compiled, and release builds
//!   target baseline x86_64, so it runs its SSE2 loop (23 GB/s from L2 here). The loop below
//!   runs on AVX2 (50 GB/s) when the CPU has it, chosen at run time.
//! - Ranges: xxh3's long-input loop adds to its 8 accumulators, per 64-byte stripe, terms that
//!   depend only on the input and the secret, and scrambles the accumulators (not linearly)
//!   after every 1024-byte block. So `acc = scramble(acc + delta(block))`, where `delta` needs
//!   no earlier state: threads can compute the deltas of disjoint ranges of one file, and
//!   folding them in order (one scramble per KiB) gives the digest of the whole file. The
//!   digest is the same xxh3 the manifest records; no format changes.
//!
//! Algorithm: the XXH3 specification (`doc/xxhash_spec.md` of xxHash, "XXH3 long input").
//! Inputs up to 240 bytes use xxh3's short-input paths, delegated to `xxhash-rust`. Digests
//! equal `xxhash_rust::xxh3::xxh3_64` for every input (the tests compare them).

use std::collections::BTreeMap;

use xxhash_rust::const_xxh3::const_custom_default_secret;

const SECRET_LEN: usize = 192;
/// The default secret (seed 0).
const SECRET: [u8; SECRET_LEN] = const_custom_default_secret(0);
pub const STRIPE_LEN: usize = 64;
const STRIPES_PER_BLOCK: usize = (SECRET_LEN - STRIPE_LEN) / 8;
/// Bytes between two scrambles; ranges start at multiples of it.
pub const BLOCK_LEN: usize = STRIPE_LEN * STRIPES_PER_BLOCK;
/// Longest input hashed by xxh3's short-input paths.
pub const SHORT_MAX: usize = 240;
/// Secret offsets of the scramble, the last stripe and the final merge.
const SCRAMBLE_KEY: usize = SECRET_LEN - STRIPE_LEN;
const LAST_STRIPE_KEY: usize = SECRET_LEN - STRIPE_LEN - 7;
const MERGE_KEY: usize = 11;

const PRIME32_1: u64 = 0x9E37_79B1;
const PRIME32_2: u64 = 0x85EB_CA77;
const PRIME32_3: u64 = 0xC2B2_AE3D;
const PRIME64_1: u64 = 0x9E37_79B1_85EB_CA87;
const PRIME64_2: u64 = 0xC2B2_AE3D_27D4_EB4F;
const PRIME64_3: u64 = 0x1656_67B1_9E37_79F9;
const PRIME64_4: u64 = 0x85EB_CA77_C2B2_AE63;
const PRIME64_5: u64 = 0x27D4_EB2F_1656_67C5;

type Acc = [u64; 8];
const INIT: Acc = [PRIME32_3, PRIME64_1, PRIME64_2, PRIME64_3, PRIME64_4, PRIME32_2, PRIME64_5, PRIME32_1];

#[inline(always)]
fn le64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Add one stripe's terms (secret at `key`) to `acc`.
#[inline(always)]
fn stripe(acc: &mut Acc, stripe: &[u8], key: usize) {
    for i in 0..8 {
        let v = le64(stripe, 8 * i);
        let k = v ^ le64(&SECRET, key + 8 * i);
        acc[i ^ 1] = acc[i ^ 1].wrapping_add(v);
        acc[i] = acc[i].wrapping_add((k & 0xFFFF_FFFF).wrapping_mul(k >> 32));
    }
}

#[inline(always)]
fn scramble(acc: &mut Acc) {
    for (i, a) in acc.iter_mut().enumerate() {
        let mut x = *a;
        x ^= x >> 47;
        x ^= le64(&SECRET, SCRAMBLE_KEY + 8 * i);
        *a = x.wrapping_mul(PRIME32_1);
    }
}

fn add(acc: &mut Acc, d: &Acc) {
    for (a, x) in acc.iter_mut().zip(d) {
        *a = a.wrapping_add(*x);
    }
}

fn merge(acc: &Acc, total: u64) -> u64 {
    let mut r = total.wrapping_mul(PRIME64_1);
    for i in 0..4 {
        let a = acc[2 * i] ^ le64(&SECRET, MERGE_KEY + 16 * i);
        let b = acc[2 * i + 1] ^ le64(&SECRET, MERGE_KEY + 16 * i + 8);
        let p = (a as u128) * (b as u128);
        r = r.wrapping_add((p as u64) ^ ((p >> 64) as u64));
    }
    r ^= r >> 37;
    r = r.wrapping_mul(0x1656_6791_9E37_79F9);
    r ^ (r >> 32)
}

/// The terms of the final partial block (1..=BLOCK_LEN bytes) and of the last stripe, which is
/// the last 64 bytes of the input: taken from `before` (the 64 bytes preceding `tail`) when
/// `tail` is shorter.
fn add_tail(simd: bool, acc: &mut Acc, tail: &[u8], before: &[u8; STRIPE_LEN]) {
    let mut last = [0u8; STRIPE_LEN];
    if tail.len() >= STRIPE_LEN {
        last.copy_from_slice(&tail[tail.len() - STRIPE_LEN..]);
    } else {
        let from_before = STRIPE_LEN - tail.len();
        last[..from_before].copy_from_slice(&before[tail.len()..]);
        last[from_before..].copy_from_slice(tail);
    }
    #[cfg(target_arch = "x86_64")]
    if simd {
        // SAFETY: `simd` is true only where `simd_available()` said so.
        unsafe { x86::add_tail(acc, tail, &last) };
        return;
    }
    let _ = simd;
    let n = (tail.len() - 1) / STRIPE_LEN;
    for s in 0..n {
        stripe(acc, &tail[s * STRIPE_LEN..], 8 * s);
    }
    stripe(acc, &last, LAST_STRIPE_KEY);
}

fn last_stripe_of(data: &[u8]) -> [u8; STRIPE_LEN] {
    let mut s = [0u8; STRIPE_LEN];
    s.copy_from_slice(&data[data.len() - STRIPE_LEN..]);
    s
}

/// Whether the AVX2 loops may run on this CPU.
pub fn simd_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

fn fold_blocks_portable(acc: &mut Acc, data: &[u8]) {
    for block in data.chunks_exact(BLOCK_LEN) {
        for s in 0..STRIPES_PER_BLOCK {
            stripe(acc, &block[s * STRIPE_LEN..], 8 * s);
        }
        scramble(acc);
    }
}

fn block_deltas_portable(data: &[u8], out: &mut Vec<Acc>) {
    for block in data.chunks_exact(BLOCK_LEN) {
        let mut d = [0u64; 8];
        for s in 0..STRIPES_PER_BLOCK {
            stripe(&mut d, &block[s * STRIPE_LEN..], 8 * s);
        }
        out.push(d);
    }
}

/// `acc = scramble(acc + delta(block))` for each whole block of `data` (its length is a multiple
/// of `BLOCK_LEN`).
fn fold_blocks(simd: bool, acc: &mut Acc, data: &[u8]) {
    debug_assert_eq!(data.len() % BLOCK_LEN, 0);
    #[cfg(target_arch = "x86_64")]
    if simd {
        // SAFETY: `simd` is true only where `simd_available()` said so.
        unsafe { x86::fold_blocks(acc, data) };
        return;
    }
    let _ = simd;
    fold_blocks_portable(acc, data)
}

fn fold_deltas(simd: bool, acc: &mut Acc, deltas: &[Acc]) {
    #[cfg(target_arch = "x86_64")]
    if simd {
        // SAFETY: as in `fold_blocks`.
        unsafe { x86::fold_deltas(acc, deltas) };
        return;
    }
    let _ = simd;
    for d in deltas {
        add(acc, d);
        scramble(acc);
    }
}

/// Push `delta(block)` for each whole block of `data`.
fn block_deltas(simd: bool, data: &[u8], out: &mut Vec<Acc>) {
    debug_assert_eq!(data.len() % BLOCK_LEN, 0);
    #[cfg(target_arch = "x86_64")]
    if simd {
        // SAFETY: as in `fold_blocks`.
        unsafe { x86::block_deltas(data, out) };
        return;
    }
    let _ = simd;
    block_deltas_portable(data, out)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{Acc, BLOCK_LEN, LAST_STRIPE_KEY, PRIME32_1, SCRAMBLE_KEY, SECRET, STRIPES_PER_BLOCK, STRIPE_LEN};

    /// The `n` stripes at `p` added to `a` (acc lanes 0..4 and 4..8), stripe `s` with the secret
    /// at `key + 8 * s`.
    ///
    /// SAFETY: `p` must point at `n * STRIPE_LEN` readable bytes, and `key + 8 * (n - 1) + 64`
    /// must not exceed the secret's 192 bytes (a block: 8 * 15 + 64 = 184; the last stripe:
    /// 121 + 64 = 185).
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn stripes(a: &mut [__m256i; 2], p: *const u8, n: usize, key: usize) {
        let secret = SECRET.as_ptr();
        for s in 0..n {
            for (j, lane) in a.iter_mut().enumerate() {
                // SAFETY: inside the stripes and the secret, by the caller's contract.
                let (d, k) = unsafe {
                    (_mm256_loadu_si256(p.add(s * STRIPE_LEN + 32 * j).cast()), _mm256_loadu_si256(secret.add(key + 8 * s + 32 * j).cast()))
                };
                let dk = _mm256_xor_si256(d, k);
                // High 32 bits of each 64-bit lane moved down, then lo32 * hi32 per lane.
                let product = _mm256_mul_epu32(dk, _mm256_shuffle_epi32::<0x31>(dk));
                // acc[i ^ 1] += input[i]: swap the 64-bit lanes of each 128-bit half.
                let swapped = _mm256_shuffle_epi32::<0x4E>(d);
                *lane = _mm256_add_epi64(*lane, _mm256_add_epi64(product, swapped));
            }
        }
    }

    #[target_feature(enable = "avx2")]
    #[inline]
    fn scramble(a: &mut [__m256i; 2]) {
        let prime = _mm256_set1_epi32(PRIME32_1 as i32);
        for (j, lane) in a.iter_mut().enumerate() {
            // SAFETY: bytes SCRAMBLE_KEY + 32 * j .. + 32 lie inside the 192-byte secret.
            let k = unsafe { _mm256_loadu_si256(SECRET.as_ptr().add(SCRAMBLE_KEY + 32 * j).cast()) };
            let x = _mm256_xor_si256(_mm256_xor_si256(*lane, _mm256_srli_epi64::<47>(*lane)), k);
            // x * PRIME32_1 mod 2^64, from two 32x32 products.
            let lo = _mm256_mul_epu32(x, prime);
            let hi = _mm256_mul_epu32(_mm256_srli_epi64::<32>(x), prime);
            *lane = _mm256_add_epi64(lo, _mm256_slli_epi64::<32>(hi));
        }
    }

    #[target_feature(enable = "avx2")]
    fn load(acc: &Acc) -> [__m256i; 2] {
        // SAFETY: `acc` holds 8 u64, two 32-byte vectors.
        unsafe { [_mm256_loadu_si256(acc.as_ptr().cast()), _mm256_loadu_si256(acc.as_ptr().add(4).cast())] }
    }

    #[target_feature(enable = "avx2")]
    fn store(a: &[__m256i; 2], acc: &mut Acc) {
        // SAFETY: as in `load`.
        unsafe {
            _mm256_storeu_si256(acc.as_mut_ptr().cast(), a[0]);
            _mm256_storeu_si256(acc.as_mut_ptr().add(4).cast(), a[1]);
        }
    }

    /// SAFETY: the CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn fold_blocks(acc: &mut Acc, data: &[u8]) {
        let mut a = load(acc);
        for b in data.chunks_exact(BLOCK_LEN) {
            // SAFETY: `b` is one block.
            unsafe { stripes(&mut a, b.as_ptr(), STRIPES_PER_BLOCK, 0) };
            scramble(&mut a);
        }
        store(&a, acc);
    }

    /// `acc = scramble(acc + d)` for each `d` in order.
    ///
    /// SAFETY: the CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn fold_deltas(acc: &mut Acc, deltas: &[Acc]) {
        let mut a = load(acc);
        for d in deltas {
            let d = load(d);
            a = [_mm256_add_epi64(a[0], d[0]), _mm256_add_epi64(a[1], d[1])];
            scramble(&mut a);
        }
        store(&a, acc);
    }

    /// `super::add_tail` on AVX2: the tail's whole stripes, then `last`.
    ///
    /// SAFETY: the CPU must support AVX2; `tail` is 1..=BLOCK_LEN bytes.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn add_tail(acc: &mut Acc, tail: &[u8], last: &[u8; STRIPE_LEN]) {
        let mut a = load(acc);
        let n = (tail.len() - 1) / STRIPE_LEN;
        // SAFETY: n whole stripes lie inside `tail`; n <= 15 keeps the key inside the secret.
        unsafe {
            stripes(&mut a, tail.as_ptr(), n, 0);
            stripes(&mut a, last.as_ptr(), 1, LAST_STRIPE_KEY);
        }
        store(&a, acc);
    }

    /// SAFETY: the CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn block_deltas(data: &[u8], out: &mut Vec<Acc>) {
        out.reserve(data.len() / BLOCK_LEN);
        for b in data.chunks_exact(BLOCK_LEN) {
            let mut a = [_mm256_setzero_si256(); 2];
            // SAFETY: `b` is one block.
            unsafe { stripes(&mut a, b.as_ptr(), STRIPES_PER_BLOCK, 0) };
            let mut d = [0u64; 8];
            store(&a, &mut d);
            out.push(d);
        }
    }
}

/// xxh3-64 of `data`, equal to `xxhash_rust::xxh3::xxh3_64(data)`.
pub fn xxh3_64(data: &[u8]) -> u64 {
    let simd = simd_available();
    // Below a block, xxhash-rust's SSE2 path is as fast (measured), and short inputs are its.
    if data.len() <= BLOCK_LEN || !simd {
        return xxhash_rust::xxh3::xxh3_64(data);
    }
    let blocks = (data.len() - 1) / BLOCK_LEN * BLOCK_LEN;
    let mut acc = INIT;
    fold_blocks(simd, &mut acc, &data[..blocks]);
    // The tail is at least 1 byte; the last stripe may reach back into the last block.
    let tail = &data[blocks..];
    let before = if blocks > 0 { last_stripe_of(&data[..blocks]) } else { [0; STRIPE_LEN] };
    add_tail(simd, &mut acc, tail, &before);
    merge(&acc, data.len() as u64)
}

/// Streaming xxh3-64: the digest of everything given to `update`, in order. Cloning gives the
/// digest of a prefix while the stream goes on.
#[derive(Clone)]
pub struct Xxh3Blocks {
    simd: bool,
    acc: Acc,
    /// Bytes not folded yet: a block is folded only once a byte after it has arrived, because
    /// the input's last 1..=BLOCK_LEN bytes are hashed differently.
    buf: [u8; BLOCK_LEN],
    len: usize,
    /// The 64 bytes before `buf`, for a last stripe that reaches back into them.
    before: [u8; STRIPE_LEN],
    total: u64,
}

impl Default for Xxh3Blocks {
    fn default() -> Self {
        Xxh3Blocks::with_simd(simd_available())
    }
}

impl Xxh3Blocks {
    fn with_simd(simd: bool) -> Xxh3Blocks {
        Xxh3Blocks { simd, acc: INIT, buf: [0; BLOCK_LEN], len: 0, before: [0; STRIPE_LEN], total: 0 }
    }

    pub fn update(&mut self, mut data: &[u8]) {
        self.total += data.len() as u64;
        if self.len > 0 {
            let take = (BLOCK_LEN - self.len).min(data.len());
            self.buf[self.len..self.len + take].copy_from_slice(&data[..take]);
            self.len += take;
            data = &data[take..];
            if data.is_empty() {
                return;
            }
            // Full, and more follows: a whole block.
            fold_blocks(self.simd, &mut self.acc, &self.buf);
            self.before = last_stripe_of(&self.buf);
            self.len = 0;
        }
        if data.len() > BLOCK_LEN {
            let n = (data.len() - 1) / BLOCK_LEN * BLOCK_LEN;
            fold_blocks(self.simd, &mut self.acc, &data[..n]);
            self.before = last_stripe_of(&data[..n]);
            data = &data[n..];
        }
        self.buf[..data.len()].copy_from_slice(data);
        self.len = data.len();
    }

    pub fn digest(&self) -> u64 {
        if self.total <= SHORT_MAX as u64 {
            // Nothing was folded: every byte is in `buf`.
            return xxhash_rust::xxh3::xxh3_64(&self.buf[..self.len]);
        }
        let mut acc = self.acc;
        add_tail(self.simd, &mut acc, &self.buf[..self.len], &self.before);
        merge(&acc, self.total)
    }
}

/// Storage for a range's block deltas (64 bytes per KiB). Reusing one (`RangeFold::add` hands
/// them back) spares each range the page faults of fresh memory.
#[derive(Default)]
pub struct DeltaBuffer(Vec<Acc>);

/// What one range of an input contributes to its digest (see `RangeFold`).
pub struct RangeSums {
    start: u64,
    end: u64,
    /// `delta(block)` of each block that is scrambled after.
    deltas: Vec<Acc>,
    /// The final range only: the terms of the input's tail and last stripe.
    tail: Option<Acc>,
}

impl RangeSums {
    pub fn start(&self) -> u64 {
        self.start
    }
    pub fn end(&self) -> u64 {
        self.end
    }
}

/// Splits an input of `total` bytes into ranges that `RangeHasher` accepts, each about
/// `target` bytes (rounded down to whole blocks, at least one): the last range takes the
/// remainder, so it holds between `target` and `2 * target` bytes. Inputs shorter than
/// `2 * target` (or short inputs) are one range. Returns the boundaries, from 0 to `total`.
pub fn split(total: u64, target: u64) -> Vec<u64> {
    let step = (target / BLOCK_LEN as u64).max(1) * BLOCK_LEN as u64;
    let mut cuts = vec![0];
    if total > SHORT_MAX as u64 {
        // Each cut leaves at least `step` (>= one block, so the last stripe too) after it.
        let mut at = step;
        while at + step <= total {
            cuts.push(at);
            at += step;
        }
    }
    cuts.push(total);
    cuts
}

/// Computes `RangeSums` for bytes `start..end` of an input of `total` bytes, given in order.
pub struct RangeHasher {
    simd: bool,
    start: u64,
    end: u64,
    total: u64,
    /// Where the scrambled blocks stop: `end`, or for the final range the start of the tail.
    blocks_end: u64,
    pos: u64,
    deltas: Vec<Acc>,
    buf: Box<[u8; BLOCK_LEN]>,
    len: usize,
    tail: Vec<u8>,
    before: [u8; STRIPE_LEN],
}

impl RangeHasher {
    /// Fails unless the range is one `split` could produce: `start` at a block boundary, `end`
    /// at one or at `total`, and a final range long enough to hold the last stripe.
    pub fn new(start: u64, end: u64, total: u64, buffer: DeltaBuffer) -> Result<RangeHasher, &'static str> {
        RangeHasher::with_simd(start, end, total, buffer, simd_available())
    }

    fn with_simd(start: u64, end: u64, total: u64, buffer: DeltaBuffer, simd: bool) -> Result<RangeHasher, &'static str> {
        let block = BLOCK_LEN as u64;
        if total <= SHORT_MAX as u64 {
            return Err("input too short to hash by ranges");
        }
        if start >= end || end > total || !start.is_multiple_of(block) || (end != total && !end.is_multiple_of(block)) {
            return Err("range does not start and end at block boundaries");
        }
        if end == total && total - start < STRIPE_LEN as u64 {
            return Err("final range shorter than a stripe");
        }
        let blocks_end = if end == total { (total - 1) / block * block } else { end };
        let mut deltas = buffer.0;
        deltas.clear();
        deltas.reserve(((blocks_end - start) / block) as usize);
        Ok(RangeHasher {
            simd,
            start,
            end,
            total,
            blocks_end,
            pos: start,
            deltas,
            buf: Box::new([0; BLOCK_LEN]),
            len: 0,
            tail: Vec::new(),
            before: [0; STRIPE_LEN],
        })
    }

    /// Feed the next bytes of the range; bytes past its end are an error.
    pub fn update(&mut self, mut data: &[u8]) -> Result<(), &'static str> {
        if data.len() as u64 > self.end - self.pos {
            return Err("more bytes than the range holds");
        }
        while !data.is_empty() {
            if self.pos >= self.blocks_end {
                self.tail.extend_from_slice(data);
                self.pos += data.len() as u64;
                return Ok(());
            }
            let here = ((self.blocks_end - self.pos) as usize).min(data.len());
            let used = if self.len > 0 || here < BLOCK_LEN {
                let take = (BLOCK_LEN - self.len).min(here);
                self.buf[self.len..self.len + take].copy_from_slice(&data[..take]);
                self.len += take;
                if self.len == BLOCK_LEN {
                    block_deltas(self.simd, &self.buf[..], &mut self.deltas);
                    self.before = last_stripe_of(&self.buf[..]);
                    self.len = 0;
                }
                take
            } else {
                let n = here / BLOCK_LEN * BLOCK_LEN;
                block_deltas(self.simd, &data[..n], &mut self.deltas);
                self.before = last_stripe_of(&data[..n]);
                n
            };
            self.pos += used as u64;
            data = &data[used..];
        }
        Ok(())
    }

    pub fn finish(self) -> Result<RangeSums, &'static str> {
        if self.pos != self.end {
            return Err("fewer bytes than the range holds");
        }
        let tail = (self.end == self.total).then(|| {
            let mut t = [0u64; 8];
            add_tail(self.simd, &mut t, &self.tail, &self.before);
            t
        });
        Ok(RangeSums { start: self.start, end: self.end, deltas: self.deltas, tail })
    }
}

/// Folds the `RangeSums` of an input's ranges, given in any order, into its digest. Ranges
/// that arrive early wait (holding 64 bytes per KiB) until the ones before them are folded.
pub struct RangeFold {
    simd: bool,
    total: u64,
    next: u64,
    acc: Acc,
    tail: Option<Acc>,
    waiting: BTreeMap<u64, RangeSums>,
}

impl RangeFold {
    pub fn new(total: u64) -> RangeFold {
        RangeFold::with_simd(total, simd_available())
    }

    fn with_simd(total: u64, simd: bool) -> RangeFold {
        RangeFold { simd, total, next: 0, acc: INIT, tail: None, waiting: BTreeMap::new() }
    }

    /// Returns the delta buffers of the ranges folded by this call, for reuse.
    pub fn add(&mut self, part: RangeSums) -> Result<Vec<DeltaBuffer>, &'static str> {
        if part.start < self.next || self.waiting.contains_key(&part.start) || part.end > self.total {
            return Err("range given twice or out of bounds");
        }
        self.waiting.insert(part.start, part);
        let mut spent = Vec::new();
        while let Some(p) = self.waiting.remove(&self.next) {
            fold_deltas(self.simd, &mut self.acc, &p.deltas);
            self.next = p.end;
            self.tail = p.tail;
            spent.push(DeltaBuffer(p.deltas));
        }
        Ok(spent)
    }

    /// The digest, once every byte up to `total` has been folded.
    pub fn digest(&self) -> Option<u64> {
        let tail = self.tail.as_ref().filter(|_| self.next == self.total)?;
        let mut acc = self.acc;
        add(&mut acc, tail);
        Some(merge(&acc, self.total))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn kernels() -> Vec<bool> {
        if simd_available() {
            vec![false, true]
        } else {
            vec![false]
        }
    }

    fn stream(simd: bool, data: &[u8], piece: usize) -> u64 {
        let mut h = Xxh3Blocks::with_simd(simd);
        for p in data.chunks(piece.max(1)) {
            h.update(p);
        }
        if data.is_empty() {
            h.update(&[]);
        }
        h.digest()
    }

    fn by_ranges(simd: bool, data: &[u8], target: u64, reverse: bool) -> u64 {
        let cuts = split(data.len() as u64, target);
        let mut parts = Vec::new();
        for w in cuts.windows(2) {
            let mut r = RangeHasher::with_simd(w[0], w[1], data.len() as u64, DeltaBuffer::default(), simd).expect("range");
            for p in data[w[0] as usize..w[1] as usize].chunks(777) {
                r.update(p).expect("update");
            }
            parts.push(r.finish().expect("finish"));
        }
        if reverse {
            parts.reverse();
        }
        let mut fold = RangeFold::with_simd(data.len() as u64, simd);
        for p in parts {
            fold.add(p).expect("add");
        }
        fold.digest().expect("complete")
    }

    #[test]
    fn every_length_up_to_five_blocks_matches_xxhash_rust() {
        let data = input(5 * BLOCK_LEN + 100, 1);
        for n in 0..data.len() {
            let want = xxhash_rust::xxh3::xxh3_64(&data[..n]);
            assert_eq!(xxh3_64(&data[..n]), want, "one-shot, {n} bytes");
            for simd in kernels() {
                for piece in [1, 63, 64, 1000, 1024, 1025, 4096] {
                    assert_eq!(stream(simd, &data[..n], piece), want, "stream simd={simd} piece={piece}, {n} bytes");
                }
            }
        }
    }

    #[test]
    fn long_inputs_match_in_one_shot_streamed_and_by_ranges_in_any_order() {
        for (i, n) in [100_000usize, 1 << 20, (1 << 20) + 1, 3 * (1 << 20) + 4095, 2 * 65536 + 63, 2 * 65536 + 64, 2 * 65536 + 65]
            .into_iter()
            .enumerate()
        {
            let data = input(n, 7 + i as u64);
            let want = xxhash_rust::xxh3::xxh3_64(&data);
            assert_eq!(xxh3_64(&data), want, "{n}");
            for simd in kernels() {
                assert_eq!(stream(simd, &data, 131_072), want, "{n}");
                for target in [1024, 4096, 65536] {
                    if n as u64 >= 3 * target {
                        assert!(split(n as u64, target).len() > 2, "{n} is split");
                    }
                    assert_eq!(by_ranges(simd, &data, target, false), want, "ranges of {target}, {n} bytes, simd={simd}");
                    assert_eq!(by_ranges(simd, &data, target, true), want, "reversed ranges of {target}, {n} bytes");
                }
            }
        }
    }

    #[test]
    fn split_ranges_are_valid_and_cover_the_input() {
        for total in [0u64, 1, 240, 241, 1023, 1024, 1025, 2047, 2048, 2049, 2048 + 63, 2048 + 64, 1 << 30, (1 << 30) + 17] {
            for target in [1u64, 1024, 1500, 1 << 20] {
                let cuts = split(total, target);
                assert_eq!((cuts[0], *cuts.last().expect("end")), (0, total));
                if total > SHORT_MAX as u64 {
                    for w in cuts.windows(2) {
                        assert!(RangeHasher::new(w[0], w[1], total, DeltaBuffer::default()).is_ok(), "{total} {target} {w:?}");
                    }
                }
            }
        }
        assert!(RangeHasher::new(1, 4096, 8192, DeltaBuffer::default()).is_err());
        assert!(RangeHasher::new(0, 4000, 8192, DeltaBuffer::default()).is_err());
        assert!(RangeHasher::new(8192, 8192 + 10, 8192 + 10, DeltaBuffer::default()).is_err());
    }

    #[test]
    fn a_fold_refuses_a_range_twice_and_is_incomplete_without_every_range() {
        let data = input(10_000, 3);
        let cuts = split(10_000, 2048);
        let part = |i: usize| {
            let mut r = RangeHasher::new(cuts[i], cuts[i + 1], 10_000, DeltaBuffer::default()).expect("range");
            r.update(&data[cuts[i] as usize..cuts[i + 1] as usize]).expect("update");
            r.finish().expect("finish")
        };
        let mut fold = RangeFold::new(10_000);
        fold.add(part(0)).expect("first");
        assert!(fold.add(part(0)).is_err());
        for i in 2..cuts.len() - 1 {
            fold.add(part(i)).expect("later");
        }
        assert_eq!(fold.digest(), None);
        fold.add(part(1)).expect("gap");
        assert_eq!(fold.digest(), Some(xxhash_rust::xxh3::xxh3_64(&data)));
        let mut short = RangeHasher::new(0, 2048, 10_000, DeltaBuffer::default()).expect("range");
        short.update(&data[..100]).expect("update");
        assert!(short.finish().is_err());
    }
}
