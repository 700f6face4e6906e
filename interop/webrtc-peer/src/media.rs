//! Real encoded media for the peer: a VP8 IVF file and an Opus Ogg file,
//! made by the `ffmpeg` CLI and split into samples by webrtc-rs's readers.

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use rtc::media::io::ivf_reader::IVFReader;
use rtc::media::io::ogg_reader::OggReader;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The encoded media a peer sends: looped for as long as the call lasts.
#[derive(Debug, Clone)]
pub struct MediaFiles {
    /// VP8 in an IVF container.
    pub video_ivf: PathBuf,
    /// Opus in an Ogg container, one 20 ms packet per page
    /// (`ffmpeg -page_duration 20000`).
    pub audio_ogg: PathBuf,
}

/// Width and height of the video [`generate`] makes.
pub const VIDEO_SIZE: (u32, u32) = (320, 240);

/// Encodes 2 s of `testsrc2` (VP8, 320x240, 30 fps, a keyframe every
/// second) and 2 s of a 440 Hz sine (Opus, 48 kHz) into `dir` with the
/// Debian `ffmpeg` CLI.
pub fn generate(dir: &Path) -> Result<MediaFiles> {
    let files = MediaFiles {
        video_ivf: dir.join("video.ivf"),
        audio_ogg: dir.join("audio.ogg"),
    };
    let (w, h) = VIDEO_SIZE;
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        &format!("testsrc2=size={w}x{h}:rate=30"),
        "-t",
        "2",
        "-c:v",
        "libvpx",
        "-b:v",
        "400k",
        "-g",
        "30",
        "-deadline",
        "realtime",
        "-cpu-used",
        "8",
        "-f",
        "ivf",
        path_str(&files.video_ivf)?,
    ])?;
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000",
        "-t",
        "2",
        "-c:a",
        "libopus",
        "-b:a",
        "48k",
        "-page_duration",
        "20000",
        "-f",
        "ogg",
        path_str(&files.audio_ogg)?,
    ])?;
    Ok(files)
}

fn path_str(p: &Path) -> Result<&str> {
    p.to_str().context("temporary path is not UTF-8")
}

fn ffmpeg(args: &[&str]) -> Result<()> {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"])
        .args(args)
        .output()
        .context("run ffmpeg (apt-get install ffmpeg; scripts/test.sh does)")?;
    if !out.status.success() {
        bail!(
            "ffmpeg {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// One encoded frame or packet and how long it plays.
#[derive(Debug, Clone)]
pub(crate) struct Frame {
    pub(crate) data: Bytes,
    pub(crate) duration: Duration,
}

/// Reads every VP8 frame of an IVF file.
pub(crate) fn read_ivf(path: &Path) -> Result<Vec<Frame>> {
    let file = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let (mut ivf, header) = IVFReader::new(BufReader::new(file)).context("IVF header")?;
    ensure!(&header.four_cc == b"VP80", "{} is not VP8", path.display());
    ensure!(
        header.timebase_denominator > 0 && header.timebase_numerator > 0,
        "bad IVF time base"
    );
    let tick = Duration::from_secs(1) * header.timebase_numerator / header.timebase_denominator;
    let mut frames: Vec<(Bytes, u64)> = Vec::new();
    // The reader reports the end of the file as an error.
    while let Ok((data, h)) = ivf.parse_next_frame() {
        frames.push((data.freeze(), h.timestamp));
    }
    ensure!(frames.len() >= 2, "{} has no frames", path.display());
    // Each frame plays until the next one; the last as long as the average.
    let span = frames[frames.len() - 1].1.saturating_sub(frames[0].1);
    let average = (tick * u32::try_from(span).context("IVF too long")?)
        / u32::try_from(frames.len() - 1).context("IVF too long")?;
    let mut out = Vec::with_capacity(frames.len());
    for i in 0..frames.len() {
        let duration = match frames.get(i + 1) {
            Some(next) => tick * u32::try_from(next.1.saturating_sub(frames[i].1)).unwrap_or(1),
            None => average,
        };
        out.push(Frame {
            data: frames[i].0.clone(),
            duration: if duration.is_zero() {
                average
            } else {
                duration
            },
        });
    }
    Ok(out)
}

/// Reads every Opus packet of an Ogg file (one packet per page), without
/// the `OpusHead` and `OpusTags` header pages.
pub(crate) fn read_ogg(path: &Path) -> Result<Vec<Frame>> {
    let file = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let (mut ogg, head) = OggReader::new(BufReader::new(file), true).context("Ogg header")?;
    ensure!(head.sample_rate > 0, "bad Opus header");
    let mut out = Vec::new();
    let mut last_granule = 0u64;
    while let Ok((data, page)) = ogg.parse_next_page() {
        if data.starts_with(b"OpusHead") || data.starts_with(b"OpusTags") {
            continue;
        }
        // Opus granule positions count 48 kHz samples whatever the input rate.
        let samples = page.granule_position.saturating_sub(last_granule);
        last_granule = page.granule_position;
        if data.is_empty() || samples == 0 {
            continue;
        }
        out.push(Frame {
            data: data.freeze(),
            duration: Duration::from_micros(samples * 1_000_000 / 48_000),
        });
    }
    ensure!(!out.is_empty(), "{} has no Opus packets", path.display());
    Ok(out)
}
