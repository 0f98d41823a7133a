//! Byte helpers for the archive and backup code: the manifests' xxh3 form, and the float32
//! byte shuffle that makes vectors compress better.

use napi::bindgen_prelude::Buffer;
use napi_derive::napi;

/// xxh3-64 of a buffer as 16 hex digits, the form used in manifests.
#[napi]
pub fn xxh3_hex(data: Buffer) -> String {
    format!("{:016x}", cairn_core::checksum::xxh3(&data))
}

/// Byte-shuffle with 4-byte lanes (`cairn_core::shuffle`) into `out`, a buffer of the same length
/// allocated by the caller (a buffer made here would cost more than the shuffle itself).
#[napi]
pub fn shuffle4(data: Buffer, mut out: Buffer) -> napi::Result<()> {
    same_length(&data, &out)?;
    cairn_core::shuffle::shuffle4_into(&data, &mut out);
    Ok(())
}

/// Inverse of `shuffle4`, into `out`.
#[napi]
pub fn unshuffle4(data: Buffer, mut out: Buffer) -> napi::Result<()> {
    same_length(&data, &out)?;
    cairn_core::shuffle::unshuffle4_into(&data, &mut out);
    Ok(())
}

fn same_length(data: &[u8], out: &[u8]) -> napi::Result<()> {
    if data.len() == out.len() {
        return Ok(());
    }
    Err(napi::Error::new(
        napi::Status::InvalidArg,
        format!("out is {} bytes, data {}: they must be the same length", out.len(), data.len()),
    ))
}
