//! libjpeg-turbo's TurboJPEG API (Debian: `libturbojpeg0-dev`), the calls
//! Palaver needs and no more: read a JPEG's header, decode it to RGB at a
//! 1/2^n scale (DCT-domain scaling, far cheaper than decoding the full
//! picture and scaling it down). libjpeg-turbo's entropy decoder is also
//! about three times faster than FFmpeg's `mjpeg` decoder here.
//!
//! Safety: every call gets a buffer of the size it writes (checked before
//! the call), the handle is created and destroyed by [`Decoder`] only, and
//! TurboJPEG reports errors by return code (its error manager never
//! `longjmp`s across Rust frames: it `longjmp`s inside its own C code).
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::os::raw::{c_char, c_int, c_uchar, c_ulong, c_void};

#[link(name = "turbojpeg")]
unsafe extern "C" {
    fn tjInitDecompress() -> *mut c_void;
    fn tjDecompressHeader3(
        handle: *mut c_void,
        jpeg: *const c_uchar,
        size: c_ulong,
        width: *mut c_int,
        height: *mut c_int,
        subsamp: *mut c_int,
        colorspace: *mut c_int,
    ) -> c_int;
    fn tjDecompress2(
        handle: *mut c_void,
        jpeg: *const c_uchar,
        size: c_ulong,
        dst: *mut c_uchar,
        width: c_int,
        pitch: c_int,
        height: c_int,
        pixel_format: c_int,
        flags: c_int,
    ) -> c_int;
    fn tjDestroy(handle: *mut c_void) -> c_int;
    fn tjGetErrorStr2(handle: *mut c_void) -> *mut c_char;
    fn tjGetErrorCode(handle: *mut c_void) -> c_int;
}

/// `TJPF_RGB`: 3 bytes per pixel, R, G, B.
const TJPF_RGB: c_int = 0;
/// `TJFLAG_LIMITSCANS`: refuse progressive JPEGs with more than 500 scans
/// (a known way to make a small file cost minutes of CPU).
const TJFLAG_LIMITSCANS: c_int = 32768;
/// `TJERR_WARNING`: the picture decoded, with damage.
const TJERR_WARNING: c_int = 0;

/// What went wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("libjpeg-turbo could not start")]
    Init,
    #[error("not a JPEG libjpeg-turbo can read: {0}")]
    Header(String),
    #[error("the picture is too large ({0} pixels)")]
    TooLarge(u64),
    #[error("wrong output buffer (needs {needed} bytes, pitch {pitch})")]
    Buffer { needed: usize, pitch: usize },
    #[error("libjpeg-turbo could not decode the picture: {0}")]
    Decode(String),
}

/// A JPEG's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub width: u32,
    pub height: u32,
}

impl Header {
    /// The size of a decode at 1/2^`shift` (TurboJPEG rounds up).
    pub fn scaled(&self, shift: u8) -> (u32, u32) {
        let d = 1u32 << shift.min(3);
        (self.width.div_ceil(d), self.height.div_ceil(d))
    }
}

/// A decompressor handle.
#[derive(Debug)]
pub struct Decoder {
    handle: *mut c_void,
}

impl Drop for Decoder {
    fn drop(&mut self) {
        // SAFETY: the handle came from tjInitDecompress and is destroyed once.
        unsafe {
            tjDestroy(self.handle);
        }
    }
}

impl Decoder {
    pub fn new() -> Result<Decoder, Error> {
        // SAFETY: no arguments; a null result is handled.
        let handle = unsafe { tjInitDecompress() };
        if handle.is_null() {
            return Err(Error::Init);
        }
        Ok(Decoder { handle })
    }

    fn last_error(&self) -> String {
        // SAFETY: the handle is valid; TurboJPEG returns a NUL-terminated
        // string it owns (valid until the next call on this handle), which
        // is copied at once.
        unsafe {
            let s = tjGetErrorStr2(self.handle);
            if s.is_null() {
                return "unknown error".into();
            }
            CStr::from_ptr(s).to_string_lossy().into_owned()
        }
    }

    /// Reads the header of `jpeg`.
    pub fn header(&mut self, jpeg: &[u8]) -> Result<Header, Error> {
        let (mut w, mut h, mut ss, mut cs) = (0, 0, 0, 0);
        let size = c_ulong::try_from(jpeg.len()).map_err(|_| Error::TooLarge(0))?;
        // SAFETY: the pointers are to live locals and to `jpeg`, whose
        // length is passed; TurboJPEG only reads `size` bytes of it.
        let rc = unsafe {
            tjDecompressHeader3(
                self.handle,
                jpeg.as_ptr(),
                size,
                &mut w,
                &mut h,
                &mut ss,
                &mut cs,
            )
        };
        if rc != 0 || w <= 0 || h <= 0 {
            return Err(Error::Header(self.last_error()));
        }
        Ok(Header {
            width: w as u32,
            height: h as u32,
        })
    }

    /// Decodes `jpeg` at 1/2^`shift` scale (0 to 3) as RGB rows of `pitch`
    /// bytes into `out`, refusing pictures over `max_pixels` (at full
    /// size). A damaged but decodable picture is accepted (as FFmpeg
    /// does); a fatal error is not.
    pub fn decode_rgb(
        &mut self,
        jpeg: &[u8],
        shift: u8,
        max_pixels: u64,
        out: &mut [u8],
        pitch: usize,
    ) -> Result<Header, Error> {
        let full = self.header(jpeg)?;
        let pixels = u64::from(full.width) * u64::from(full.height);
        if pixels > max_pixels {
            return Err(Error::TooLarge(pixels));
        }
        let (w, h) = full.scaled(shift);
        let row = w as usize * 3;
        let needed = pitch * (h as usize - 1) + row;
        if pitch < row || out.len() < needed {
            return Err(Error::Buffer { needed, pitch });
        }
        let size = c_ulong::try_from(jpeg.len()).map_err(|_| Error::TooLarge(pixels))?;
        // SAFETY: `out` holds at least `pitch * (h - 1) + w * 3` bytes
        // (checked above), which is what TurboJPEG writes for a w x h RGB
        // picture with this pitch; w and h are the scaled size TurboJPEG
        // computes itself for this scaling factor, and fit in c_int since
        // they are at most the header's values.
        let rc = unsafe {
            tjDecompress2(
                self.handle,
                jpeg.as_ptr(),
                size,
                out.as_mut_ptr(),
                w as c_int,
                pitch as c_int,
                h as c_int,
                TJPF_RGB,
                TJFLAG_LIMITSCANS,
            )
        };
        // SAFETY: the handle is valid.
        if rc != 0 && unsafe { tjGetErrorCode(self.handle) } != TJERR_WARNING {
            return Err(Error::Decode(self.last_error()));
        }
        Ok(Header {
            width: w,
            height: h,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaled_sizes_round_up() {
        let h = Header {
            width: 4000,
            height: 2999,
        };
        assert_eq!(h.scaled(0), (4000, 2999));
        assert_eq!(h.scaled(3), (500, 375));
        assert_eq!(h.scaled(9), (500, 375));
    }

    #[test]
    fn garbage_is_refused_without_touching_the_buffer() {
        let mut d = Decoder::new().unwrap();
        assert!(matches!(d.header(b"not a jpeg"), Err(Error::Header(_))));
        assert!(matches!(d.header(b""), Err(Error::Header(_))));
        let mut out = vec![7u8; 16];
        let r = d.decode_rgb(&[0xFF, 0xD8, 0xFF, 0xD9], 0, 1 << 20, &mut out, 8);
        assert!(r.is_err());
        assert!(out.iter().all(|b| *b == 7));
    }
}
