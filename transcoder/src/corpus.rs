//! Test media, generated on demand with the ffmpeg CLI (Debian's
//! `ffmpeg` package) and by corrupting valid files: nothing binary is
//! committed. Used by the tests of this crate, the end-to-end tests and
//! the benchmark.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::plan::MediaKind;

/// Runs `ffmpeg -y ARGS` quietly.
pub fn ffmpeg(args: &[&str]) -> io::Result<()> {
    let st = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"])
        .args(args)
        .status()?;
    if st.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!("ffmpeg {args:?} failed: {st}")))
    }
}

/// A test-pattern video.
#[derive(Debug, Clone)]
pub struct VideoSpec {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub secs: u32,
    pub audio: bool,
    /// Rotation written in the MP4 track matrix (the `rotate` tag).
    pub rotate: Option<u32>,
    /// Camera-like noise on top of the pattern (harder to encode).
    pub noise: bool,
}

impl Default for VideoSpec {
    fn default() -> Self {
        VideoSpec {
            width: 640,
            height: 360,
            fps: 30,
            secs: 2,
            audio: true,
            rotate: None,
            noise: false,
        }
    }
}

/// Writes a test video (H.264 + AAC in MP4) to `path`.
pub fn video(path: &Path, s: &VideoSpec) -> io::Result<()> {
    let src = format!(
        "testsrc2=size={}x{}:rate={}:duration={}",
        s.width, s.height, s.fps, s.secs
    );
    let dur = s.secs.to_string();
    let mut args: Vec<String> = vec!["-f".into(), "lavfi".into(), "-i".into(), src];
    if s.audio {
        args.extend(["-f", "lavfi", "-i"].map(String::from));
        args.push(format!(
            "sine=frequency=440:sample_rate=44100:duration={dur}"
        ));
    }
    if s.noise {
        args.extend(["-vf", "noise=alls=20:allf=t"].map(String::from));
    }
    args.extend(
        [
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
        ]
        .map(String::from),
    );
    if s.audio {
        args.extend(["-c:a", "aac", "-ac", "2"].map(String::from));
    }
    let plain = path.with_extension("plain.mp4");
    let target = if s.rotate.is_some() { &plain } else { path };
    args.push(target.to_string_lossy().into_owned());
    ffmpeg(&args.iter().map(String::as_str).collect::<Vec<_>>())?;
    if let Some(r) = s.rotate {
        // FFmpeg 5.1 writes the track matrix from the `rotate` tag only
        // when it copies the stream.
        let tag = format!("rotate={r}");
        let (src, dst) = (plain.to_string_lossy(), path.to_string_lossy());
        ffmpeg(&["-i", &src, "-c", "copy", "-metadata:s:v:0", &tag, &dst])?;
        std::fs::remove_file(&plain)?;
    }
    Ok(())
}

/// A voice-note-like recording: pink noise (speech-like spectrum), quiet
/// for the first second, stereo 44.1 kHz, in `path`'s format (by
/// extension: wav, m4a, ogg, mp3...).
pub fn voice(path: &Path, secs: u32) -> io::Result<()> {
    let src = format!("anoisesrc=d={secs}:c=pink:r=44100:a=0.5");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        &src,
        "-af",
        "volume='if(lt(t,1),0.2,1)':eval=frame",
        "-ac",
        "2",
        &path.to_string_lossy(),
    ])
}

/// A still picture of `w`x`h` in `path`'s format (jpg, png, webp).
pub fn picture(path: &Path, w: u32, h: u32) -> io::Result<()> {
    let src = format!("testsrc2=size={w}x{h}:rate=1:duration=1");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        &src,
        "-frames:v",
        "1",
        "-q:v",
        "3",
        &path.to_string_lossy(),
    ])
}

/// Inserts an EXIF block (orientation, and a GPS position when `gps`)
/// right after a JPEG's SOI marker.
pub fn with_exif(jpeg: &[u8], orientation: u16, gps: bool) -> Vec<u8> {
    // TIFF, little endian: header, IFD0 with Orientation (and a GPS IFD
    // pointer), then the GPS IFD with latitude ref and latitude.
    let mut t: Vec<u8> = b"II*\0".to_vec();
    t.extend(8u32.to_le_bytes());
    let n: u16 = if gps { 2 } else { 1 };
    t.extend(n.to_le_bytes());
    t.extend(entry(0x0112, 3, 1, u32::from(orientation)));
    let ifd0_end = 8 + 2 + 12 * u32::from(n) + 4;
    if gps {
        t.extend(entry(0x8825, 4, 1, ifd0_end));
    }
    t.extend(0u32.to_le_bytes());
    if gps {
        let rationals_at = ifd0_end + 2 + 2 * 12 + 4;
        t.extend(2u16.to_le_bytes());
        t.extend(entry(0x0001, 2, 2, u32::from_le_bytes(*b"N\0\0\0")));
        t.extend(entry(0x0002, 5, 3, rationals_at));
        t.extend(0u32.to_le_bytes());
        for (num, den) in [(48u32, 1u32), (51, 1), (2400, 100)] {
            t.extend(num.to_le_bytes());
            t.extend(den.to_le_bytes());
        }
    }
    let mut app1 = b"Exif\0\0".to_vec();
    app1.extend(t);
    let len = (app1.len() + 2) as u16;
    let mut out = jpeg[..2].to_vec();
    out.extend([0xFF, 0xE1]);
    out.extend(len.to_be_bytes());
    out.extend(app1);
    out.extend(&jpeg[2..]);
    out
}

fn entry(tag: u16, kind: u16, count: u32, value: u32) -> Vec<u8> {
    let mut e = tag.to_le_bytes().to_vec();
    e.extend(kind.to_le_bytes());
    e.extend(count.to_le_bytes());
    e.extend(value.to_le_bytes());
    e
}

/// One hostile input and the kind it is uploaded as.
#[derive(Debug, Clone)]
pub struct Hostile {
    pub name: &'static str,
    pub path: PathBuf,
    pub kind: MediaKind,
}

/// Writes the hostile corpus into `dir`: truncated, lying, empty,
/// random, corrupt-header and absurd-dimension files, plus valid files
/// claimed as the wrong kind.
pub fn hostile(dir: &Path) -> io::Result<Vec<Hostile>> {
    let good = dir.join("good.mp4");
    video(&good, &VideoSpec::default())?;
    let mp4 = std::fs::read(&good)?;
    let png = dir.join("good.png");
    picture(&png, 64, 48)?;
    let png_bytes = std::fs::read(&png)?;
    let wav = dir.join("good.wav");
    voice(&wav, 1)?;
    let mut out = Vec::new();
    let mut add = |name: &'static str, bytes: &[u8], kind| -> io::Result<()> {
        let path = dir.join(name);
        std::fs::write(&path, bytes)?;
        out.push(Hostile { name, path, kind });
        Ok(())
    };
    add("empty.mp4", b"", MediaKind::Video)?;
    add("truncated.mp4", &mp4[..mp4.len() / 3], MediaKind::Video)?;
    add("head-only.mp4", &mp4[..64.min(mp4.len())], MediaKind::Video)?;
    add(
        "text-as-video.mp4",
        &b"hello, this is not a video\n".repeat(50),
        MediaKind::Video,
    )?;
    add("noise.mp4", &noise(200_000), MediaKind::Video)?;
    let mut corrupt = mp4.clone();
    for b in corrupt.iter_mut().take(256) {
        *b ^= 0x5A;
    }
    add("corrupt-header.mp4", &corrupt, MediaKind::Video)?;
    let mut scrambled = mp4.clone();
    let n = scrambled.len();
    for (i, b) in scrambled.iter_mut().enumerate().skip(n / 4) {
        if i % 7 == 0 {
            *b = b.wrapping_mul(31).wrapping_add(7);
        }
    }
    add("scrambled-data.mp4", &scrambled, MediaKind::Video)?;
    add("png-as-video.mp4", &png_bytes, MediaKind::Video)?;
    add("video-as-image.jpg", &mp4, MediaKind::Image)?;
    add("video-as-voice.ogg", &mp4, MediaKind::Voice)?;
    add("png-as-voice.ogg", &png_bytes, MediaKind::Voice)?;
    add(
        "absurd-dimensions.png",
        &absurd_png(&png_bytes),
        MediaKind::Image,
    )?;
    let zero = dir.join("zero-frames.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=320x240:rate=30",
        "-frames:v",
        "0",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        &zero.to_string_lossy(),
    ])?;
    add("zero-frames.mp4", &std::fs::read(&zero)?, MediaKind::Video)?;
    let silent = dir.join("zero-samples.wav");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "anullsrc=r=8000:cl=mono",
        "-frames:a",
        "0",
        &silent.to_string_lossy(),
    ])?;
    add(
        "zero-samples.wav",
        &std::fs::read(&silent)?,
        MediaKind::Voice,
    )?;
    let wav_bytes = std::fs::read(&wav)?;
    add(
        "truncated.wav",
        &wav_bytes[..40.min(wav_bytes.len())],
        MediaKind::Voice,
    )?;
    Ok(out)
}

/// Deterministic pseudo-random bytes.
pub fn noise(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A PNG whose header claims 100000 x 100000 pixels (the CRC is fixed
/// so only the size is a lie).
fn absurd_png(png: &[u8]) -> Vec<u8> {
    let mut p = png.to_vec();
    if p.len() > 33 {
        p[16..20].copy_from_slice(&100_000u32.to_be_bytes());
        p[20..24].copy_from_slice(&100_000u32.to_be_bytes());
        let crc = crc32(&p[12..29]);
        p[29..33].copy_from_slice(&crc.to_be_bytes());
    }
    p
}

fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in data {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// `ffprobe`'s JSON description of a file (format and streams).
pub fn ffprobe(path: &Path) -> io::Result<serde_json::Value> {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_format",
            "-show_streams",
            "-of",
            "json",
        ])
        .arg(path)
        .output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "ffprobe {} failed: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    serde_json::from_slice(&out.stdout).map_err(io::Error::other)
}

/// Whether an MP4's `moov` box comes before its `mdat` box (faststart).
pub fn moov_before_mdat(mp4: &[u8]) -> bool {
    let find = |tag: &[u8]| mp4.windows(4).position(|w| w == tag);
    matches!((find(b"moov"), find(b"mdat")), (Some(m), Some(d)) if m < d)
}

/// The first picture of a file as 8x8 grey levels, decoded by the ffmpeg
/// CLI (which applies the rotation of a video itself): for comparing
/// orientations.
pub fn gray8x8(path: &Path) -> io::Result<Vec<u8>> {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-i"])
        .arg(path)
        .args([
            "-frames:v",
            "1",
            "-vf",
            "scale=8:8",
            "-pix_fmt",
            "gray",
            "-f",
            "rawvideo",
            "-",
        ])
        .output()?;
    if !out.status.success() || out.stdout.len() != 64 {
        return Err(io::Error::other("ffmpeg could not make an 8x8 picture"));
    }
    Ok(out.stdout)
}

/// Mean absolute difference of two grey pictures.
pub fn gray_distance(a: &[u8], b: &[u8]) -> f64 {
    let sum: u64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| u64::from(x.abs_diff(*y)))
        .sum();
    sum as f64 / a.len().max(1) as f64
}
