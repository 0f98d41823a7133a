//! The float32 byte shuffle of archives and backup chunks (docs/format.md): the first bytes of
//! every 4-byte lane, then the second bytes, and so on; a tail shorter than a lane is kept as is.
//! Both directions walk the lanes and the words in step (no strided indexing), which the
//! compiler vectorizes: the strided form ran at about 400 MB/s and bounded restore speed.

/// Shuffle `data` into a new buffer.
pub fn shuffle4(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; data.len()];
    shuffle4_into(data, &mut out);
    out
}

/// Inverse of `shuffle4`.
pub fn unshuffle4(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; data.len()];
    unshuffle4_into(data, &mut out);
    out
}

/// `shuffle4` into `out`, which must be as long as `data` (checked by the caller).
pub fn shuffle4_into(data: &[u8], out: &mut [u8]) {
    assert_eq!(data.len(), out.len());
    let n = data.len() / 4;
    let (lanes, tail) = out.split_at_mut(4 * n);
    let (a, rest) = lanes.split_at_mut(n);
    let (b, rest) = rest.split_at_mut(n);
    let (c, d) = rest.split_at_mut(n);
    for ((((word, a), b), c), d) in data[..4 * n].chunks_exact(4).zip(a).zip(b).zip(c).zip(d) {
        *a = word[0];
        *b = word[1];
        *c = word[2];
        *d = word[3];
    }
    tail.copy_from_slice(&data[4 * n..]);
}

/// `unshuffle4` into `out`, which must be as long as `data` (checked by the caller).
pub fn unshuffle4_into(data: &[u8], out: &mut [u8]) {
    assert_eq!(data.len(), out.len());
    let n = data.len() / 4;
    let (a, rest) = data[..4 * n].split_at(n);
    let (b, rest) = rest.split_at(n);
    let (c, d) = rest.split_at(n);
    for ((((word, a), b), c), d) in out[..4 * n].chunks_exact_mut(4).zip(a).zip(b).zip(c).zip(d) {
        word.copy_from_slice(&[*a, *b, *c, *d]);
    }
    out[4 * n..].copy_from_slice(&data[4 * n..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition, index by index.
    fn reference(data: &[u8]) -> Vec<u8> {
        let n = data.len() / 4;
        let mut out = data.to_vec();
        for lane in 0..4 {
            for i in 0..n {
                out[lane * n + i] = data[i * 4 + lane];
            }
        }
        out
    }

    #[test]
    fn matches_the_definition_and_inverts_at_every_length() {
        for len in (0..70).chain([4093, 4096, 4099, (4 << 20) + 3]) {
            let data: Vec<u8> = (0..len).map(|i| (i as u32).wrapping_mul(2654435761).rotate_right(13) as u8).collect();
            let shuffled = shuffle4(&data);
            assert_eq!(shuffled, reference(&data), "length {len}");
            assert_eq!(unshuffle4(&shuffled), data, "length {len}");
        }
    }

    #[test]
    fn a_known_layout() {
        assert_eq!(shuffle4(&[1, 2, 3, 4, 5, 6, 7, 8, 9]), vec![1, 5, 2, 6, 3, 7, 4, 8, 9]);
        assert_eq!(unshuffle4(&[1, 5, 2, 6, 3, 7, 4, 8, 9]), vec![1, 2, 3, 4, 5, 6, 7, 8, 9]);
    }
}
