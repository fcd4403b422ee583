//! A stand-in for the `zstd` crate (0.14 API subset) on the pure-Rust
//! `ruzstd`, enough for `parquet`'s ZSTD codec. Used through
//! `[patch.crates-io] zstd = { path = ... }` so nothing needs a C compiler.
//! Compression is ruzstd's "Fastest" (≈ level 1) whatever level is asked.

use std::io;
use std::ops::RangeInclusive;

fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::Other, e.to_string())
}

/// Decodes all frames of `src` (skippable frames skipped), appending to `dest`.
fn decode_frames(
    decoder: &mut ruzstd::decoding::FrameDecoder,
    mut src: &[u8],
    dest: &mut (impl io::Write + ?Sized),
) -> io::Result<usize> {
    use ruzstd::decoding::BlockDecodingStrategy;
    use ruzstd::decoding::errors::{FrameDecoderError, ReadFrameHeaderError};
    let mut written = 0;
    while !src.is_empty() {
        match decoder.reset(&mut src) {
            Ok(()) => {}
            Err(FrameDecoderError::ReadFrameHeaderError(ReadFrameHeaderError::SkipFrame {
                length,
                ..
            })) => {
                src = src
                    .get(length as usize..)
                    .ok_or_else(|| other("truncated skippable frame"))?;
                continue;
            }
            Err(e) => return Err(other(e)),
        }
        while !decoder.is_finished() {
            decoder
                .decode_blocks(&mut src, BlockDecodingStrategy::UptoBytes(1 << 20))
                .map_err(other)?;
            written += decoder.collect_to_writer(&mut *dest)?;
        }
        written += decoder.collect_to_writer(&mut *dest)?;
    }
    Ok(written)
}

pub mod bulk {
    use super::*;
    use std::marker::PhantomData;

    pub struct Compressor<'a> {
        _level: i32,
        _dict: PhantomData<&'a ()>,
    }

    impl Compressor<'static> {
        pub fn new(level: i32) -> io::Result<Self> {
            if !compression_level_range().contains(&level) && level != 0 {
                return Err(other(format!("invalid zstd level {level}")));
            }
            Ok(Self {
                _level: level,
                _dict: PhantomData,
            })
        }
    }

    impl Compressor<'_> {
        /// Appends one zstd frame to `destination`; returns its length.
        pub fn compress_to_buffer<W: io::Write + ?Sized>(
            &mut self,
            source: &[u8],
            destination: &mut W,
        ) -> io::Result<usize> {
            let frame = self.compress(source)?;
            destination.write_all(&frame)?;
            Ok(frame.len())
        }

        pub fn compress(&mut self, data: &[u8]) -> io::Result<Vec<u8>> {
            Ok(ruzstd::encoding::compress_to_vec(
                data,
                ruzstd::encoding::CompressionLevel::Fastest,
            ))
        }
    }

    pub struct Decompressor<'a> {
        decoder: ruzstd::decoding::FrameDecoder,
        _dict: PhantomData<&'a ()>,
    }

    impl Decompressor<'static> {
        pub fn new() -> io::Result<Self> {
            Ok(Self {
                decoder: ruzstd::decoding::FrameDecoder::new(),
                _dict: PhantomData,
            })
        }
    }

    impl Decompressor<'_> {
        /// Appends the decoded bytes of every frame in `source` to
        /// `destination` (for parquet: a `Cursor<&mut Vec<u8>>` at its end).
        pub fn decompress_to_buffer<W: io::Write + ?Sized>(
            &mut self,
            source: &[u8],
            destination: &mut W,
        ) -> io::Result<usize> {
            decode_frames(&mut self.decoder, source, destination)
        }

        pub fn decompress(&mut self, data: &[u8], capacity: usize) -> io::Result<Vec<u8>> {
            let mut out = Vec::with_capacity(capacity);
            self.decompress_to_buffer(data, &mut out)?;
            if out.len() > capacity {
                return Err(other("decompressed data larger than capacity"));
            }
            Ok(out)
        }
    }
}

pub mod zstd_safe {
    /// Error of [`get_frame_content_size`] (the real one is a unit struct too).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct ContentSizeError;

    /// The decompressed size a frame header declares, if it declares one.
    pub fn get_frame_content_size(src: &[u8]) -> Result<Option<u64>, ContentSizeError> {
        // Frame header layout: RFC 8878 section 3.1.1.1.
        let magic = u32::from_le_bytes(src.get(..4).ok_or(ContentSizeError)?.try_into().unwrap());
        if magic != 0xFD2F_B528 {
            return Err(ContentSizeError);
        }
        let desc = *src.get(4).ok_or(ContentSizeError)?;
        let single_segment = desc & 0x20 != 0;
        let dict_len = [0usize, 1, 2, 4][(desc & 3) as usize];
        let fcs_len = match desc >> 6 {
            0 if single_segment => 1,
            0 => return Ok(None),
            1 => 2,
            2 => 4,
            _ => 8,
        };
        let start = 5 + usize::from(!single_segment) + dict_len;
        let bytes = src.get(start..start + fcs_len).ok_or(ContentSizeError)?;
        let mut v = 0u64;
        for (i, b) in bytes.iter().enumerate() {
            v |= u64::from(*b) << (8 * i);
        }
        Ok(Some(if fcs_len == 2 { v + 256 } else { v }))
    }

    /// ZSTD_COMPRESSBOUND from zstd.h.
    pub const fn compress_bound(src_size: usize) -> usize {
        let margin = if src_size < (128 << 10) {
            ((128 << 10) - src_size) >> 11
        } else {
            0
        };
        src_size + (src_size >> 8) + margin
    }

    pub fn min_c_level() -> i32 {
        -(1 << 17)
    }
    pub fn max_c_level() -> i32 {
        22
    }
}

pub fn compression_level_range() -> RangeInclusive<i32> {
    zstd_safe::min_c_level()..=zstd_safe::max_c_level()
}

pub const DEFAULT_COMPRESSION_LEVEL: i32 = 3;

pub fn decode_all<R: io::Read>(mut source: R) -> io::Result<Vec<u8>> {
    let mut input = Vec::new();
    source.read_to_end(&mut input)?;
    let mut out = Vec::new();
    decode_frames(&mut ruzstd::decoding::FrameDecoder::new(), &input, &mut out)?;
    Ok(out)
}

pub fn encode_all<R: io::Read>(source: R, _level: i32) -> io::Result<Vec<u8>> {
    Ok(ruzstd::encoding::compress_to_vec(
        source,
        ruzstd::encoding::CompressionLevel::Fastest,
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn roundtrip_and_header() {
        let data: Vec<u8> = (0..100_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let mut c = crate::bulk::Compressor::new(1).unwrap();
        let frame = c.compress(&data).unwrap();
        assert!(frame.len() < data.len());
        let size = crate::zstd_safe::get_frame_content_size(&frame).unwrap();
        assert!(size.is_none() || size == Some(data.len() as u64));
        let mut d = crate::bulk::Decompressor::new().unwrap();
        let mut out = vec![7u8; 3];
        let mut cur = std::io::Cursor::new(&mut out);
        cur.set_position(3);
        let n = d.decompress_to_buffer(&frame, &mut cur).unwrap();
        assert_eq!(n, data.len());
        assert_eq!(&out[3..], &data[..]);
        // two frames back to back
        let mut two = frame.clone();
        two.extend_from_slice(&frame);
        assert_eq!(crate::decode_all(&two[..]).unwrap().len(), 2 * data.len());
    }
}
