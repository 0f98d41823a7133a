//! Vectorised distance kernels for the graph's hot loops.
//!
//! They compute exactly the quantities of `Metric::distance` (squared L2, or 1 - dot for cosine
//! and ip) with several independent SIMD accumulators (and fused multiply-add on AVX2), so results
//! agree with `crate::distance` up to float rounding, not bit for bit. On x86_64 an SSE kernel is
//! the baseline and an AVX2 + FMA kernel is chosen at run time when the CPU has both.
//!
//! Why not `crate::distance` directly: its loops index both slices per element, and the bounds
//! checks keep them scalar (about 75 ns per 128-d distance here, several times slower).

use crate::distance::Metric;

/// Distance between a query and a stored vector, lower is closer.
pub(super) type DistanceFn = fn(&[f32], &[f32]) -> f32;

/// Accumulator lanes of the portable kernels (used off x86_64, and in tests as a cross-check).
#[cfg(any(not(target_arch = "x86_64"), test))]
const LANES: usize = 16;

#[cfg(any(not(target_arch = "x86_64"), test))]
#[inline(always)]
fn sum_lanes(acc: [f32; LANES]) -> f32 {
    // Pairwise reduction: cheaper and more accurate than a serial sum.
    let mut width = LANES / 2;
    let mut acc = acc;
    while width > 0 {
        for i in 0..width {
            acc[i] += acc[i + width];
        }
        width /= 2;
    }
    acc[0]
}

#[cfg(any(not(target_arch = "x86_64"), test))]
#[inline(always)]
fn l2_squared_lanes(a: &[f32], b: &[f32]) -> f32 {
    let (a_blocks, a_tail) = a.as_chunks::<LANES>();
    let (b_blocks, b_tail) = b.as_chunks::<LANES>();
    let mut acc = [0.0f32; LANES];
    for (x, y) in a_blocks.iter().zip(b_blocks) {
        for lane in 0..LANES {
            let d = x[lane] - y[lane];
            acc[lane] += d * d;
        }
    }
    let mut sum = sum_lanes(acc);
    for (x, y) in a_tail.iter().zip(b_tail) {
        let d = x - y;
        sum += d * d;
    }
    sum
}

#[cfg(any(not(target_arch = "x86_64"), test))]
#[inline(always)]
fn dot_lanes(a: &[f32], b: &[f32]) -> f32 {
    let (a_blocks, a_tail) = a.as_chunks::<LANES>();
    let (b_blocks, b_tail) = b.as_chunks::<LANES>();
    let mut acc = [0.0f32; LANES];
    for (x, y) in a_blocks.iter().zip(b_blocks) {
        for lane in 0..LANES {
            acc[lane] += x[lane] * y[lane];
        }
    }
    let mut sum = sum_lanes(acc);
    for (x, y) in a_tail.iter().zip(b_tail) {
        sum += x * y;
    }
    sum
}

#[cfg(any(not(target_arch = "x86_64"), test))]
fn l2_squared_portable(a: &[f32], b: &[f32]) -> f32 {
    l2_squared_lanes(a, b)
}

#[cfg(any(not(target_arch = "x86_64"), test))]
fn one_minus_dot_portable(a: &[f32], b: &[f32]) -> f32 {
    1.0 - dot_lanes(a, b)
}

/// Explicit SIMD for x86_64: SSE is part of the baseline, AVX2 + FMA is detected at run time.
/// (Written with intrinsics because the auto-vectoriser turns the lane loops above into 2-wide
/// operations.) Each kernel keeps two or four independent accumulators to hide add latency.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    #[inline(always)]
    fn sum_128(v: __m128) -> f32 {
        // SAFETY: SSE is always available on x86_64; these are register-only operations.
        unsafe {
            let pairs = _mm_add_ps(v, _mm_movehl_ps(v, v));
            let total = _mm_add_ss(pairs, _mm_shuffle_ps::<0b01>(pairs, pairs));
            _mm_cvtss_f32(total)
        }
    }

    pub(super) fn l2_squared_sse(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut i = 0;
        // SAFETY: SSE is baseline on x86_64; every load reads [i, i + 4) with i + 4 <= n, inside
        // both slices.
        let sum = unsafe {
            let mut acc = [_mm_setzero_ps(); 4];
            while i + 16 <= n {
                for (j, lane) in acc.iter_mut().enumerate() {
                    let d = _mm_sub_ps(_mm_loadu_ps(pa.add(i + 4 * j)), _mm_loadu_ps(pb.add(i + 4 * j)));
                    *lane = _mm_add_ps(*lane, _mm_mul_ps(d, d));
                }
                i += 16;
            }
            while i + 4 <= n {
                let d = _mm_sub_ps(_mm_loadu_ps(pa.add(i)), _mm_loadu_ps(pb.add(i)));
                acc[0] = _mm_add_ps(acc[0], _mm_mul_ps(d, d));
                i += 4;
            }
            sum_128(_mm_add_ps(_mm_add_ps(acc[0], acc[1]), _mm_add_ps(acc[2], acc[3])))
        };
        let tail: f32 = a[i..n].iter().zip(&b[i..n]).map(|(x, y)| (x - y) * (x - y)).sum();
        sum + tail
    }

    pub(super) fn one_minus_dot_sse(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut i = 0;
        // SAFETY: as in `l2_squared_sse`.
        let sum = unsafe {
            let mut acc = [_mm_setzero_ps(); 4];
            while i + 16 <= n {
                for (j, lane) in acc.iter_mut().enumerate() {
                    let p = _mm_mul_ps(_mm_loadu_ps(pa.add(i + 4 * j)), _mm_loadu_ps(pb.add(i + 4 * j)));
                    *lane = _mm_add_ps(*lane, p);
                }
                i += 16;
            }
            while i + 4 <= n {
                acc[0] = _mm_add_ps(acc[0], _mm_mul_ps(_mm_loadu_ps(pa.add(i)), _mm_loadu_ps(pb.add(i))));
                i += 4;
            }
            sum_128(_mm_add_ps(_mm_add_ps(acc[0], acc[1]), _mm_add_ps(acc[2], acc[3])))
        };
        let tail: f32 = a[i..n].iter().zip(&b[i..n]).map(|(x, y)| x * y).sum();
        1.0 - (sum + tail)
    }

    #[target_feature(enable = "avx2,fma")]
    fn sum_256(v: __m256) -> f32 {
        sum_128(_mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v)))
    }

    #[target_feature(enable = "avx2,fma")]
    fn l2_squared_avx2(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut i = 0;
        let mut acc0 = _mm256_setzero_ps();
        let mut acc1 = _mm256_setzero_ps();
        // SAFETY (all loads below): each reads [i, i + 8) with i + 8 <= n, inside both slices.
        while i + 16 <= n {
            let (x0, y0, x1, y1) = unsafe {
                (_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), _mm256_loadu_ps(pa.add(i + 8)), _mm256_loadu_ps(pb.add(i + 8)))
            };
            let (d0, d1) = (_mm256_sub_ps(x0, y0), _mm256_sub_ps(x1, y1));
            acc0 = _mm256_fmadd_ps(d0, d0, acc0);
            acc1 = _mm256_fmadd_ps(d1, d1, acc1);
            i += 16;
        }
        if i + 8 <= n {
            let d = unsafe { _mm256_sub_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i))) };
            acc0 = _mm256_fmadd_ps(d, d, acc0);
            i += 8;
        }
        let tail: f32 = a[i..n].iter().zip(&b[i..n]).map(|(x, y)| (x - y) * (x - y)).sum();
        sum_256(_mm256_add_ps(acc0, acc1)) + tail
    }

    #[target_feature(enable = "avx2,fma")]
    fn one_minus_dot_avx2(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut i = 0;
        let mut acc0 = _mm256_setzero_ps();
        let mut acc1 = _mm256_setzero_ps();
        // SAFETY (all loads below): each reads [i, i + 8) with i + 8 <= n, inside both slices.
        while i + 16 <= n {
            let (x0, y0, x1, y1) = unsafe {
                (_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), _mm256_loadu_ps(pa.add(i + 8)), _mm256_loadu_ps(pb.add(i + 8)))
            };
            acc0 = _mm256_fmadd_ps(x0, y0, acc0);
            acc1 = _mm256_fmadd_ps(x1, y1, acc1);
            i += 16;
        }
        if i + 8 <= n {
            let (x, y) = unsafe { (_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i))) };
            acc0 = _mm256_fmadd_ps(x, y, acc0);
            i += 8;
        }
        let tail: f32 = a[i..n].iter().zip(&b[i..n]).map(|(x, y)| x * y).sum();
        1.0 - (sum_256(_mm256_add_ps(acc0, acc1)) + tail)
    }

    pub(super) fn l2_squared_avx2_entry(a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: `kernel_for` hands out this entry only after detecting AVX2 and FMA.
        unsafe { l2_squared_avx2(a, b) }
    }

    pub(super) fn one_minus_dot_avx2_entry(a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: as above.
        unsafe { one_minus_dot_avx2(a, b) }
    }
}

/// The fastest kernel this CPU supports for `metric`.
pub(super) fn kernel_for(metric: Metric) -> DistanceFn {
    #[cfg(target_arch = "x86_64")]
    {
        let avx2 = std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma");
        match (metric, avx2) {
            (Metric::L2, true) => x86::l2_squared_avx2_entry,
            (Metric::Cosine | Metric::Ip, true) => x86::one_minus_dot_avx2_entry,
            (Metric::L2, false) => x86::l2_squared_sse,
            (Metric::Cosine | Metric::Ip, false) => x86::one_minus_dot_sse,
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    match metric {
        Metric::L2 => l2_squared_portable,
        Metric::Cosine | Metric::Ip => one_minus_dot_portable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distance::normalize;

    /// Every kernel compiled for this target and usable on this CPU.
    fn kernels(metric: Metric) -> Vec<DistanceFn> {
        let l2 = metric == Metric::L2;
        let portable: DistanceFn = if l2 { l2_squared_portable } else { one_minus_dot_portable };
        #[cfg(target_arch = "x86_64")]
        let sse: Option<DistanceFn> = Some(if l2 { x86::l2_squared_sse } else { x86::one_minus_dot_sse });
        #[cfg(not(target_arch = "x86_64"))]
        let sse: Option<DistanceFn> = None;
        [Some(kernel_for(metric)), Some(portable), sse].into_iter().flatten().collect()
    }

    #[test]
    fn kernels_agree_with_metric_distance_for_every_length() {
        for len in [1usize, 7, 15, 16, 17, 31, 128, 129, 384] {
            let a: Vec<f32> = (0..len).map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.03).collect();
            let b: Vec<f32> = (0..len).map(|i| ((i * 53 % 97) as f32 - 48.0) * 0.02).collect();
            for metric in [Metric::L2, Metric::Ip] {
                let expected = metric.distance(&a, &b);
                for kernel in kernels(metric) {
                    let got = kernel(&a, &b);
                    assert!((got - expected).abs() <= 1e-4 * expected.abs().max(1.0), "{metric:?} len {len}: {got} vs {expected}");
                }
            }
            let (na, nb) = (normalize(&a), normalize(&b));
            let expected = Metric::Cosine.distance(&na, &nb);
            assert!((kernel_for(Metric::Cosine)(&na, &nb) - expected).abs() < 1e-5);
        }
    }
}
