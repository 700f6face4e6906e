//! Reading a JPEG's size from its frame header, without decoding: lets
//! the image path skip FFmpeg's probe decode (a full-size decode of the
//! whole picture) and decode once, at reduced scale; and its EXIF
//! orientation, for the libjpeg-turbo path that does not read EXIF. Pure
//! code; the decoder still enforces `max_pixels` on what it decodes.

use crate::plan::Size;

/// Whether `data` starts like a JPEG file (SOI then a marker).
pub fn is_jpeg(data: &[u8]) -> bool {
    data.len() >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF
}

/// The size in the first frame header (SOF) of a JPEG, if it appears
/// before the scan data within `data`.
pub fn jpeg_size(data: &[u8]) -> Option<Size> {
    let (_, body) = find_segment(data, is_sof)?;
    let h = u16::from_be_bytes([*body.get(1)?, *body.get(2)?]);
    let w = u16::from_be_bytes([*body.get(3)?, *body.get(4)?]);
    Some(Size {
        width: u32::from(w),
        height: u32::from(h),
    })
}

/// The EXIF orientation (1 to 8) of a JPEG, from the IFD0 of its first
/// `Exif` APP1 segment; `None` without one.
pub fn exif_orientation(data: &[u8]) -> Option<u32> {
    let (_, body) = find_segment(data, |m| m == 0xE1)?;
    let tiff = body.strip_prefix(b"Exif\0\0")?;
    let be = match tiff.get(..2)? {
        b"MM" => true,
        b"II" => false,
        _ => return None,
    };
    let u16_at = |i: usize| -> Option<u16> {
        let b = [*tiff.get(i)?, *tiff.get(i + 1)?];
        Some(if be {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        })
    };
    let u32_at = |i: usize| -> Option<u32> {
        let b = [
            *tiff.get(i)?,
            *tiff.get(i + 1)?,
            *tiff.get(i + 2)?,
            *tiff.get(i + 3)?,
        ];
        Some(if be {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    };
    if u16_at(2)? != 42 {
        return None;
    }
    let ifd = usize::try_from(u32_at(4)?).ok()?;
    let entries = usize::from(u16_at(ifd)?);
    (0..entries).find_map(|n| {
        let e = ifd.checked_add(2 + n * 12)?;
        // Tag 0x0112 (Orientation), type 3 (SHORT).
        if u16_at(e)? != 0x0112 || u16_at(e + 2)? != 3 {
            return None;
        }
        let o = u32::from(u16_at(e + 8)?);
        (1..=8).contains(&o).then_some(o)
    })
}

/// The first marker segment before the scan data whose marker satisfies
/// `want`, with its body (after the length).
fn find_segment(data: &[u8], want: impl Fn(u8) -> bool) -> Option<(u8, &[u8])> {
    if !is_jpeg(data) {
        return None;
    }
    let mut i = 2;
    loop {
        // Markers start with 0xFF, possibly padded with more 0xFF.
        if *data.get(i)? != 0xFF {
            return None;
        }
        while *data.get(i)? == 0xFF {
            i += 1;
        }
        let marker = *data.get(i)?;
        i += 1;
        match marker {
            // Markers without a length: TEM, RST0-7, SOI.
            0x01 | 0xD0..=0xD8 => continue,
            // Start of scan or end of image.
            0xDA | 0xD9 => return None,
            _ => {}
        }
        let len = usize::from(u16::from_be_bytes([*data.get(i)?, *data.get(i + 1)?]));
        if len < 2 {
            return None;
        }
        if want(marker) {
            return Some((marker, data.get(i + 2..i + len)?));
        }
        i += len;
    }
}

/// SOF0 to SOF15, except DHT (C4), JPG (C8) and DAC (CC).
fn is_sof(m: u8) -> bool {
    (0xC0..=0xCF).contains(&m) && !matches!(m, 0xC4 | 0xC8 | 0xCC)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(marker: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![0xFF, marker];
        v.extend(((body.len() + 2) as u16).to_be_bytes());
        v.extend(body);
        v
    }

    fn sof(w: u16, h: u16) -> Vec<u8> {
        let mut b = vec![8];
        b.extend(h.to_be_bytes());
        b.extend(w.to_be_bytes());
        b.extend([3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1]);
        seg(0xC0, &b)
    }

    #[test]
    fn size_after_app_segments() {
        let mut j = vec![0xFF, 0xD8];
        j.extend(seg(0xE0, b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0"));
        j.extend(seg(0xE1, &vec![7u8; 3000]));
        j.extend(seg(0xDB, &[0u8; 65]));
        j.extend([0xFF, 0xFF]); // fill bytes
        j.extend(sof(4000, 3000));
        j.extend(seg(0xDA, &[0; 10]));
        assert_eq!(
            jpeg_size(&j),
            Some(Size {
                width: 4000,
                height: 3000
            })
        );
    }

    #[test]
    fn progressive_and_huffman_tables() {
        let mut j = vec![0xFF, 0xD8];
        j.extend(seg(0xC4, &[0; 20])); // DHT is not a frame header
        let mut p = sof(640, 480);
        p[1] = 0xC2;
        j.extend(p);
        assert_eq!(
            jpeg_size(&j),
            Some(Size {
                width: 640,
                height: 480
            })
        );
    }

    /// An APP1 segment with a TIFF header and one IFD0 entry.
    fn exif(big_endian: bool, tag: u16, value: u16) -> Vec<u8> {
        let w16 = |v: u16| {
            if big_endian {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let w32 = |v: u32| {
            if big_endian {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let mut b = b"Exif\0\0".to_vec();
        b.extend(if big_endian { b"MM" } else { b"II" });
        b.extend(w16(42));
        b.extend(w32(8));
        b.extend(w16(2));
        // An unrelated entry first (Make, ASCII), then the tag.
        b.extend(w16(0x010F));
        b.extend(w16(2));
        b.extend(w32(4));
        b.extend(b"abc\0");
        b.extend(w16(tag));
        b.extend(w16(3));
        b.extend(w32(1));
        b.extend(w16(value));
        b.extend([0, 0]);
        b.extend([0, 0, 0, 0]);
        seg(0xE1, &b)
    }

    #[test]
    fn exif_orientation_in_both_byte_orders() {
        for be in [true, false] {
            for o in 1..=8 {
                let mut j = vec![0xFF, 0xD8];
                j.extend(seg(0xE0, b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0"));
                j.extend(exif(be, 0x0112, o));
                j.extend(sof(10, 10));
                j.extend(seg(0xDA, &[0; 10]));
                assert_eq!(exif_orientation(&j), Some(u32::from(o)), "be={be} o={o}");
            }
        }
        let mut j = vec![0xFF, 0xD8];
        j.extend(exif(false, 0x0112, 9));
        assert_eq!(exif_orientation(&j), None, "out of range");
        let mut j = vec![0xFF, 0xD8];
        j.extend(exif(true, 0x0110, 6));
        assert_eq!(exif_orientation(&j), None, "another tag");
        let mut j = vec![0xFF, 0xD8];
        j.extend(sof(10, 10));
        assert_eq!(exif_orientation(&j), None, "no EXIF");
        // Truncated anywhere: no panic.
        let mut j = vec![0xFF, 0xD8];
        j.extend(exif(true, 0x0112, 6));
        for n in 0..j.len() {
            let _ = exif_orientation(&j[..n]);
        }
    }

    #[test]
    fn garbage_and_truncation() {
        assert_eq!(jpeg_size(b""), None);
        assert_eq!(jpeg_size(b"\x89PNG\r\n"), None);
        let mut j = vec![0xFF, 0xD8];
        j.extend(sof(10, 10));
        for n in 0..j.len() - 4 {
            let _ = jpeg_size(&j[..n]);
        }
        assert_eq!(jpeg_size(&[0xFF, 0xD8, 0xFF, 0xDA, 0, 2]), None);
        assert_eq!(jpeg_size(&[0xFF, 0xD8, 0xFF, 0xE0, 0, 0]), None);
        assert_eq!(jpeg_size(&[0xFF, 0xD8, 0x00]), None);
    }
}
