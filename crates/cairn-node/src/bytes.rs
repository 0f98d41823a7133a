//! Byte helpers for the archive and backup code: the manifests' xxh3 form, and the float32
//! byte shuffle that makes vectors compress better.

use napi::bindgen_prelude::Buffer;
use napi_derive::napi;

/// xxh3-64 of a buffer as 16 hex digits, the form used in manifests.
#[napi]
pub fn xxh3_hex(data: Buffer) -> String {
    format!("{:016x}", cairn_core::checksum::xxh3(&data))
}

/// Byte-shuffle with 4-byte lanes (all first bytes, then all second bytes, ...): float32 data
/// compresses better this way. A tail shorter than a lane is kept as is.
#[napi]
pub fn shuffle4(data: Buffer) -> Buffer {
    let n = data.len() / 4;
    let mut out = vec![0u8; data.len()];
    for lane in 0..4 {
        let dst = &mut out[lane * n..(lane + 1) * n];
        for (i, d) in dst.iter_mut().enumerate() {
            *d = data[i * 4 + lane];
        }
    }
    out[4 * n..].copy_from_slice(&data[4 * n..]);
    out.into()
}

/// Inverse of `shuffle4`.
#[napi]
pub fn unshuffle4(data: Buffer) -> Buffer {
    let n = data.len() / 4;
    let mut out = vec![0u8; data.len()];
    for lane in 0..4 {
        let src = &data[lane * n..(lane + 1) * n];
        for (i, s) in src.iter().enumerate() {
            out[i * 4 + lane] = *s;
        }
    }
    out[4 * n..].copy_from_slice(&data[4 * n..]);
    out.into()
}
