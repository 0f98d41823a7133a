// Deterministic data for the benchmarks: the same seed gives the same vectors on every run.

/** xorshift32 in [0, 1). */
export function rng(seed) {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 4294967296;
  };
}

/** A vector of `dim` values in [-1, 1) drawn from `rand`. */
export function randomVector(rand, dim) {
  const v = new Float32Array(dim);
  for (let i = 0; i < dim; i++) v[i] = rand() * 2 - 1;
  return v;
}

/** The `i`th of a cheap, spread-out sequence of `dim`-vectors in [-0.5, 0.5): no generator state to carry. */
export function vectorOf(i, dim) {
  const v = new Float32Array(dim);
  let x = (i + 1) * 2654435761;
  for (let d = 0; d < dim; d++) {
    x = (x * 1103515245 + 12345) >>> 0;
    v[d] = x / 2 ** 32 - 0.5;
  }
  return v;
}
