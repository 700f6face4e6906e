//! Reading a JPEG's size from its frame header, without decoding: lets
//! the image path skip FFmpeg's probe decode (a full-size decode of the
//! whole picture) and decode once, at reduced scale. Pure code; the
//! decoder still enforces `max_pixels` on what it actually decodes.

use crate::plan::Size;

/// Whether `data` starts like a JPEG file (SOI then a marker).
pub fn is_jpeg(data: &[u8]) -> bool {
    data.len() >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF
}

/// The size in the first frame header (SOF) of a JPEG, if it appears
/// before the scan data within `data`.
pub fn jpeg_size(data: &[u8]) -> Option<Size> {
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
            // Start of scan or end of image before any frame header.
            0xDA | 0xD9 => return None,
            _ => {}
        }
        let len = usize::from(u16::from_be_bytes([*data.get(i)?, *data.get(i + 1)?]));
        if len < 2 {
            return None;
        }
        if is_sof(marker) {
            let h = u16::from_be_bytes([*data.get(i + 3)?, *data.get(i + 4)?]);
            let w = u16::from_be_bytes([*data.get(i + 5)?, *data.get(i + 6)?]);
            return Some(Size {
                width: u32::from(w),
                height: u32::from(h),
            });
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
