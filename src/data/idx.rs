//! The IDX format (MNIST, Fashion-MNIST, KMNIST, EMNIST): a big-endian header of magic
//! `00 00 <type> <ndims>`, `ndims` u32 dimensions, then the payload. Only unsigned bytes
//! (type 0x08) are accepted: every MNIST-family file holds them.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use crate::error::{Error, Result};

/// The largest payload accepted (bigger declarations are treated as corrupt headers).
pub const MAX_PAYLOAD: u64 = 1 << 32;

/// A parsed IDX file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

fn type_name(code: u8) -> Option<&'static str> {
    Some(match code {
        0x08 => "unsigned byte",
        0x09 => "signed byte",
        0x0B => "i16",
        0x0C => "i32",
        0x0D => "f32",
        0x0E => "f64",
        _ => return None,
    })
}

/// Reads an IDX file, raw or gzip-compressed (detected from the gzip magic, not the name).
pub fn read_idx(path: &Path) -> Result<IdxArray> {
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut magic = [0u8; 2];
    let n = read_full(&mut file, &mut magic).map_err(|e| Error::io(path, e))?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let head = std::io::Cursor::new(magic[..n].to_vec());
    if n == 2 && magic == [0x1f, 0x8b] {
        // Every member of the stream (`cat a.gz b.gz`, bgzip), not just the first.
        let gz = flate2::read::MultiGzDecoder::new(BufReader::new(head.chain(file)));
        parse(gz, None, Some(len.saturating_mul(MAX_DEFLATE_RATIO)), path)
    } else {
        parse_idx(head.chain(BufReader::new(file)), Some(len), path)
    }
}

/// Deflate never expands data by more than about 1032:1, so a gzip file of n bytes holds at
/// most n x 1032 bytes: a header declaring more is corrupt, and is rejected before inflating.
const MAX_DEFLATE_RATIO: u64 = 1032;

/// Parses IDX bytes from `reader`. With `total_len` (an uncompressed file's size) the declared
/// size is checked against it before anything is allocated.
pub fn parse_idx(reader: impl Read, total_len: Option<u64>, path: &Path) -> Result<IdxArray> {
    parse(reader, total_len, None, path)
}

/// [`parse_idx`], with `max_payload` bounding the declared size of compressed input.
fn parse(
    mut reader: impl Read,
    total_len: Option<u64>,
    max_payload: Option<u64>,
    path: &Path,
) -> Result<IdxArray> {
    let err = |detail: String| Error::data(path, detail);
    let mut header = [0u8; 4];
    let got = read_full(&mut reader, &mut header).map_err(|e| gz_error(path, e))?;
    if got < 4 {
        return Err(err(format!("truncated header: {got} of 4 magic bytes")));
    }
    if header[0] != 0 || header[1] != 0 {
        return Err(err(format!(
            "bad magic {:02x} {:02x}: IDX files start with 00 00 (is this an IDX file?)",
            header[0], header[1]
        )));
    }
    match type_name(header[2]) {
        Some(_) if header[2] == 0x08 => {}
        Some(name) => {
            return Err(err(format!(
                "type code 0x{:02x} ({name}) is not supported; MNIST-style files hold unsigned bytes (0x08)",
                header[2]
            )))
        }
        None => return Err(err(format!("invalid IDX type code 0x{:02x}", header[2]))),
    }
    let ndims = header[3] as usize;
    if !(1..=4).contains(&ndims) {
        return Err(err(format!(
            "{ndims} dimensions; IDX files here have 1 to 4"
        )));
    }
    let mut raw_dims = vec![0u8; 4 * ndims];
    let got = read_full(&mut reader, &mut raw_dims).map_err(|e| gz_error(path, e))?;
    if got < raw_dims.len() {
        return Err(err(format!(
            "truncated header: {got} of {} dimension bytes",
            raw_dims.len()
        )));
    }
    let dims: Vec<usize> = raw_dims
        .chunks(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    if dims.contains(&0) {
        return Err(err(format!("dimensions {dims:?} include a zero")));
    }
    let payload = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
        .filter(|&p| p <= MAX_PAYLOAD)
        .ok_or_else(|| {
            err(format!(
                "dimensions {dims:?} declare more than {MAX_PAYLOAD} bytes; the header is corrupt"
            ))
        })?;
    if let Some(max) = max_payload.filter(|&max| payload > max) {
        return Err(err(format!(
            "dimensions {dims:?} declare {payload} bytes, more than the compressed file can \
             hold ({max} at most): the header is corrupt"
        )));
    }
    let header_len = 4 + 4 * ndims as u64;
    if let Some(total) = total_len {
        let actual = total.saturating_sub(header_len);
        if actual < payload {
            return Err(err(format!(
                "truncated payload: dimensions {dims:?} need {payload} bytes, the file has {actual}"
            )));
        }
        if actual > payload {
            return Err(err(format!(
                "{} trailing bytes after the {payload}-byte payload of dimensions {dims:?}",
                actual - payload
            )));
        }
    }
    // Compressed input: read at most one byte past the declared size to detect trailing data.
    let mut data = Vec::with_capacity(payload as usize);
    let read = reader
        .by_ref()
        .take(payload)
        .read_to_end(&mut data)
        .map_err(|e| gz_error(path, e))? as u64;
    if read < payload {
        return Err(err(format!(
            "truncated payload: dimensions {dims:?} need {payload} bytes, found {read}"
        )));
    }
    let mut extra = [0u8; 1];
    if read_full(&mut reader, &mut extra).map_err(|e| gz_error(path, e))? > 0 {
        return Err(err(format!(
            "trailing bytes after the {payload}-byte payload of dimensions {dims:?}"
        )));
    }
    Ok(IdxArray { dims, data })
}

fn gz_error(path: &Path, e: std::io::Error) -> Error {
    match e.kind() {
        std::io::ErrorKind::InvalidInput | std::io::ErrorKind::InvalidData => {
            Error::data(path, format!("corrupt gzip stream: {e}"))
        }
        std::io::ErrorKind::UnexpectedEof => {
            Error::data(path, format!("gzip stream cut short: {e}"))
        }
        _ => Error::io(path, e),
    }
}

/// Reads until `buf` is full or the stream ends; returns the bytes read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}
