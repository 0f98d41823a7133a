//! Clustered synthetic vectors for the recall tests: a gaussian mixture (closer to real
//! embeddings than uniform noise), cluster centres ~ N(0, 1) per coordinate, points = centre +
//! N(0, 0.5^2). Seeded, so failures reproduce.

use super::Rng;

pub struct Mixture {
    pub centres: Vec<Vec<f32>>,
    /// The generator the points are drawn from (callers may draw other values between points).
    pub rng: Rng,
}

impl Mixture {
    /// `clusters` centres of `dim` coordinates, drawn first from `Rng::new(seed)`.
    pub fn new(seed: u64, clusters: usize, dim: usize) -> Mixture {
        let mut rng = Rng::new(seed);
        let centres = (0..clusters).map(|_| (0..dim).map(|_| rng.gaussian()).collect()).collect();
        Mixture { centres, rng }
    }

    /// A point around a uniformly chosen centre.
    pub fn point(&mut self) -> Vec<f32> {
        let cluster = (self.rng.next_u64() % self.centres.len() as u64) as usize;
        self.point_in(cluster)
    }

    pub fn sample(&mut self, n: usize) -> Vec<Vec<f32>> {
        (0..n).map(|_| self.point()).collect()
    }

    pub fn point_in(&mut self, cluster: usize) -> Vec<f32> {
        let rng = &mut self.rng;
        self.centres[cluster].iter().map(|c| c + 0.5 * rng.gaussian()).collect()
    }

    pub fn nearest_cluster(&self, v: &[f32]) -> usize {
        let distances = self.centres.iter().map(|c| cairn_core::distance::l2_squared(c, v));
        distances.enumerate().min_by(|a, b| a.1.total_cmp(&b.1)).map_or(0, |(i, _)| i)
    }
}
