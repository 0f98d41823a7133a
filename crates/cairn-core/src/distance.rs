//! Distance kernels shared by exact search and the HNSW graph.
//! Every kernel returns a distance: lower is closer. `Metric::score` turns it into the public score.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    Cosine,
    L2,
    Ip,
}

impl Metric {
    pub fn parse(s: &str) -> Option<Metric> {
        match s {
            "cosine" => Some(Metric::Cosine),
            "l2" => Some(Metric::L2),
            "ip" => Some(Metric::Ip),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Cosine => "cosine",
            Metric::L2 => "l2",
            Metric::Ip => "ip",
        }
    }

    pub fn code(self) -> u8 {
        match self {
            Metric::Cosine => 0,
            Metric::L2 => 1,
            Metric::Ip => 2,
        }
    }

    pub fn from_code(c: u8) -> Option<Metric> {
        match c {
            0 => Some(Metric::Cosine),
            1 => Some(Metric::L2),
            2 => Some(Metric::Ip),
            _ => None,
        }
    }

    /// Distance between `a` and `b`. For cosine, both inputs must already be unit-normalised
    /// (see `normalize`); callers keep a normalised copy for that reason.
    #[inline]
    pub fn distance(self, a: &[f32], b: &[f32]) -> f32 {
        match self {
            Metric::L2 => l2_squared(a, b),
            Metric::Ip | Metric::Cosine => 1.0 - dot(a, b),
        }
    }

    /// Public score for a distance: cosine similarity, inner product, or Euclidean distance.
    #[inline]
    pub fn score(self, distance: f32) -> f32 {
        match self {
            Metric::L2 => distance.max(0.0).sqrt(),
            Metric::Ip | Metric::Cosine => 1.0 - distance,
        }
    }
}

#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight independent accumulators let the compiler vectorise without fast-math.
    let mut acc = [0.0f32; 8];
    let chunks = a.len() / 8;
    for i in 0..chunks {
        let o = i * 8;
        for j in 0..8 {
            acc[j] += a[o + j] * b[o + j];
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for i in chunks * 8..a.len() {
        sum += a[i] * b[i];
    }
    sum
}

#[inline]
pub fn l2_squared(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let chunks = a.len() / 8;
    for i in 0..chunks {
        let o = i * 8;
        for j in 0..8 {
            let d = a[o + j] - b[o + j];
            acc[j] += d * d;
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for i in chunks * 8..a.len() {
        let d = a[i] - b[i];
        sum += d * d;
    }
    sum
}

/// Unit-normalised copy; a zero vector stays zero (its cosine distance to anything is 1).
pub fn normalize(v: &[f32]) -> Vec<f32> {
    let norm = cosine_norm(v);
    v.iter().map(|x| x / norm).collect()
}

/// What `normalize` divides by: the vector's length, or 1 when that is zero or not finite.
pub fn cosine_norm(v: &[f32]) -> f32 {
    let norm = dot(v, v).sqrt();
    if norm == 0.0 || !norm.is_finite() {
        1.0
    } else {
        norm
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_match_naive_sums() {
        let a: Vec<f32> = (0..19).map(|i| i as f32 * 0.5).collect();
        let b: Vec<f32> = (0..19).map(|i| 3.0 - i as f32).collect();
        let naive_dot: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        let naive_l2: f32 = a.iter().zip(&b).map(|(x, y)| (x - y) * (x - y)).sum();
        assert!((dot(&a, &b) - naive_dot).abs() < 1e-3);
        assert!((l2_squared(&a, &b) - naive_l2).abs() < 1e-3);
    }

    #[test]
    fn cosine_of_parallel_vectors_scores_one() {
        let a = normalize(&[1.0, 2.0, 3.0]);
        let b = normalize(&[2.0, 4.0, 6.0]);
        let d = Metric::Cosine.distance(&a, &b);
        assert!((Metric::Cosine.score(d) - 1.0).abs() < 1e-6);
    }
}
