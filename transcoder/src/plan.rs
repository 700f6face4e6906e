//! Pure decisions: what to produce from a probed input, with which limits.
//! No FFmpeg, no I/O: everything here is unit-tested.

use serde::{Deserialize, Serialize};

/// What the uploader says the file is (from its `Content-Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaKind {
    Video,
    Voice,
    Image,
}

impl MediaKind {
    /// The kind a media type asks for: `video/*`, `audio/*`, `image/*`.
    /// Anything else is stored as is, without a job.
    pub fn from_content_type(ct: &str) -> Option<MediaKind> {
        let main = ct.split(';').next()?.trim().to_ascii_lowercase();
        match main.split_once('/')?.0 {
            "video" => Some(MediaKind::Video),
            "audio" => Some(MediaKind::Voice),
            "image" => Some(MediaKind::Image),
            _ => None,
        }
    }
}

/// Output settings. Defaults are documented in docs/transcoder.md and
/// docs/configuration.md (`[transcoder]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// Longest side of a transcoded video, in pixels.
    pub video_max_side: u32,
    /// Shortest side of a transcoded video, at most (the 1280x720 box).
    pub video_max_short_side: u32,
    /// Cap of the H.264 bit rate (bit/s): x264's VBV max rate.
    pub video_max_bitrate: u64,
    /// x264 constant rate factor under the cap.
    pub video_crf: u32,
    /// x264 preset.
    pub video_preset: String,
    /// Frame rate cap.
    pub video_max_fps: u32,
    /// AAC bit rate (bit/s).
    pub audio_bitrate: u64,
    /// Opus bit rate of voice notes (bit/s).
    pub voice_bitrate: u64,
    /// Amplitude buckets in a voice note's waveform.
    pub waveform_buckets: usize,
    /// Longest side of a processed image.
    pub image_max_side: u32,
    /// Output format of processed images.
    pub image_format: ImageFormat,
    /// Longest side of thumbnails (images and video posters).
    pub thumb_side: u32,
    /// Longest side of the tiny inline preview.
    pub preview_side: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            video_max_side: 1280,
            video_max_short_side: 720,
            video_max_bitrate: 2_500_000,
            video_crf: 23,
            video_preset: "veryfast".into(),
            video_max_fps: 30,
            audio_bitrate: 128_000,
            voice_bitrate: 32_000,
            waveform_buckets: 64,
            image_max_side: 1600,
            image_format: ImageFormat::Jpeg,
            thumb_side: 320,
            preview_side: 24,
        }
    }
}

/// Output format of processed images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    Jpeg,
    Webp,
}

/// Limits on hostile input, checked when planning and again while decoding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    /// Largest input file.
    pub max_input_bytes: u64,
    /// Longest duration of a video or voice note, in milliseconds.
    pub max_duration_ms: u64,
    /// Most pixels in one image (decompression bombs).
    pub max_image_pixels: u64,
    /// Most pixels in one video frame.
    pub max_video_pixels: u64,
    /// Longest side of any input picture.
    pub max_side: u32,
    /// Most decoded video frames.
    pub max_frames: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_input_bytes: 256 << 20,
            max_duration_ms: 10 * 60 * 1000,
            max_image_pixels: 50_000_000,
            max_video_pixels: 3840 * 2160,
            max_side: 16384,
            max_frames: 10 * 60 * 60,
        }
    }
}

/// A video stream as probed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VideoInfo {
    pub codec: String,
    pub width: u32,
    pub height: u32,
    /// Clockwise rotation to apply for display (0, 90, 180, 270).
    pub rotation: u32,
    pub fps: Option<f64>,
    pub bit_rate: Option<u64>,
    /// A still-picture codec (JPEG, PNG, WebP, GIF...).
    pub still: bool,
}

/// An audio stream as probed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AudioInfo {
    pub codec: String,
    pub channels: u32,
    pub sample_rate: u32,
    pub bit_rate: Option<u64>,
}

/// What probing found in an input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    /// Container (demuxer) name.
    pub container: String,
    pub duration_ms: Option<u64>,
    pub bit_rate: Option<u64>,
    pub video: Option<VideoInfo>,
    pub audio: Option<AudioInfo>,
}

/// Why an input is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum Rejection {
    #[error("not a {0:?}: {1}")]
    WrongKind(MediaKind, String),
    #[error("input of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge { size: u64, limit: u64 },
    #[error("duration of {ms} ms exceeds the limit of {limit} ms")]
    TooLong { ms: u64, limit: u64 },
    #[error("picture of {width}x{height} exceeds the limits")]
    TooManyPixels { width: u32, height: u32 },
    #[error("picture has no size")]
    NoSize,
    #[error("stream has no duration")]
    NoDuration,
}

/// Pixel dimensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Size {
    pub width: u32,
    pub height: u32,
}

/// A transcode of a video.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VideoPlan {
    /// Output size (even, rotation applied).
    pub size: Size,
    pub rotation: u32,
    /// Output frame rate cap.
    pub max_fps: u32,
    pub crf: u32,
    pub preset: String,
    pub max_bitrate: u64,
    /// AAC bit rate, or no audio track.
    pub audio_bitrate: Option<u64>,
    pub thumb_side: u32,
    pub preview_side: u32,
}

/// A transcode of a voice note.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VoicePlan {
    pub bitrate: u64,
    pub buckets: usize,
}

/// A transcode of an image. The orientation is read from the decoded
/// picture, so the final size is computed then with [`fit`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImagePlan {
    pub max_side: u32,
    pub format: ImageFormat,
    /// JPEG decoder down-scaling (`lowres`: 1/2^n), when the output is
    /// much smaller than the input.
    pub lowres: u8,
    pub thumb_side: u32,
    pub preview_side: u32,
}

/// What to do with one input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Plan {
    Video(VideoPlan),
    Voice(VoicePlan),
    Image(ImagePlan),
}

/// What the uploader asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub kind: MediaKind,
    /// A short clip played like an animated GIF: no audio track.
    pub no_audio: bool,
}

/// Decides what to produce from `probe`, or why not.
pub fn plan(
    req: Request,
    input_bytes: u64,
    probe: &Probe,
    s: &Settings,
    l: &Limits,
) -> Result<Plan, Rejection> {
    if input_bytes > l.max_input_bytes {
        return Err(Rejection::TooLarge {
            size: input_bytes,
            limit: l.max_input_bytes,
        });
    }
    match req.kind {
        MediaKind::Video => plan_video(req, probe, s, l).map(Plan::Video),
        MediaKind::Voice => plan_voice(probe, s, l).map(Plan::Voice),
        MediaKind::Image => plan_image(probe, s, l).map(Plan::Image),
    }
}

fn wrong(kind: MediaKind, why: &str) -> Rejection {
    Rejection::WrongKind(kind, why.to_owned())
}

fn check_duration(probe: &Probe, l: &Limits) -> Result<(), Rejection> {
    match probe.duration_ms {
        None | Some(0) => Err(Rejection::NoDuration),
        Some(ms) if ms > l.max_duration_ms => Err(Rejection::TooLong {
            ms,
            limit: l.max_duration_ms,
        }),
        Some(_) => Ok(()),
    }
}

fn check_pixels(width: u32, height: u32, max_pixels: u64, l: &Limits) -> Result<(), Rejection> {
    if width == 0 || height == 0 {
        return Err(Rejection::NoSize);
    }
    if width > l.max_side
        || height > l.max_side
        || u64::from(width) * u64::from(height) > max_pixels
    {
        return Err(Rejection::TooManyPixels { width, height });
    }
    Ok(())
}

fn plan_video(req: Request, p: &Probe, s: &Settings, l: &Limits) -> Result<VideoPlan, Rejection> {
    let k = MediaKind::Video;
    let v = p
        .video
        .as_ref()
        .ok_or_else(|| wrong(k, "no video stream"))?;
    if v.still {
        return Err(wrong(k, "a still picture"));
    }
    check_pixels(v.width, v.height, l.max_video_pixels, l)?;
    check_duration(p, l)?;
    let shown = rotated(
        Size {
            width: v.width,
            height: v.height,
        },
        v.rotation,
    );
    Ok(VideoPlan {
        size: even(fit_box(shown, s.video_max_side, s.video_max_short_side)),
        rotation: v.rotation,
        max_fps: s.video_max_fps,
        crf: s.video_crf,
        preset: s.video_preset.clone(),
        max_bitrate: s.video_max_bitrate,
        audio_bitrate: (p.audio.is_some() && !req.no_audio).then_some(s.audio_bitrate),
        thumb_side: s.thumb_side,
        preview_side: s.preview_side,
    })
}

fn plan_voice(p: &Probe, s: &Settings, l: &Limits) -> Result<VoicePlan, Rejection> {
    let k = MediaKind::Voice;
    let a = p
        .audio
        .as_ref()
        .ok_or_else(|| wrong(k, "no audio stream"))?;
    if p.video.as_ref().is_some_and(|v| !v.still) {
        return Err(wrong(k, "a video"));
    }
    if a.channels == 0 || a.sample_rate == 0 {
        return Err(wrong(k, "audio stream without channels or rate"));
    }
    check_duration(p, l)?;
    Ok(VoicePlan {
        bitrate: s.voice_bitrate,
        buckets: s.waveform_buckets,
    })
}

fn plan_image(p: &Probe, s: &Settings, l: &Limits) -> Result<ImagePlan, Rejection> {
    let k = MediaKind::Image;
    let v = p.video.as_ref().ok_or_else(|| wrong(k, "no picture"))?;
    if !v.still {
        return Err(wrong(k, "a video"));
    }
    check_pixels(v.width, v.height, l.max_image_pixels, l)?;
    let lowres = if v.codec == "mjpeg" {
        lowres_for(v.width.max(v.height), s.image_max_side)
    } else {
        0
    };
    Ok(ImagePlan {
        max_side: s.image_max_side,
        format: s.image_format,
        lowres,
        thumb_side: s.thumb_side,
        preview_side: s.preview_side,
    })
}

/// The largest JPEG down-scaling (1/2, 1/4, 1/8) that still decodes at
/// least `target` pixels on the longest side.
pub fn lowres_for(longest: u32, target: u32) -> u8 {
    let mut n = 0;
    while n < 3 && (longest >> (n + 1)) >= target {
        n += 1;
    }
    n
}

/// The size after a clockwise rotation.
pub fn rotated(s: Size, rotation: u32) -> Size {
    if rotation % 180 == 90 {
        Size {
            width: s.height,
            height: s.width,
        }
    } else {
        s
    }
}

/// Scales `s` down (never up) so that its longest side is at most
/// `long` and its shortest at most `short`, keeping the aspect ratio.
pub fn fit_box(s: Size, long: u32, short: u32) -> Size {
    let (l, sh) = (s.width.max(s.height), s.width.min(s.height));
    if l == 0 {
        return s;
    }
    // Scale factor as a fraction num/den, the smaller of the two limits.
    let (mut num, mut den) = (1u64, 1u64);
    if l > long {
        (num, den) = (u64::from(long), u64::from(l));
    }
    if sh > short && u64::from(short) * den < num * u64::from(sh) {
        (num, den) = (u64::from(short), u64::from(sh));
    }
    let scale = |x: u32| ((u64::from(x) * num + den / 2) / den).max(1) as u32;
    Size {
        width: scale(s.width),
        height: scale(s.height),
    }
}

/// Fits `s` into a square of `side` (thumbnails, images).
pub fn fit_side(s: Size, side: u32) -> Size {
    fit_box(s, side, side)
}

/// Rounds both sides down to even numbers (4:2:0 chroma), at least 2.
pub fn even(s: Size) -> Size {
    Size {
        width: (s.width & !1).max(2),
        height: (s.height & !1).max(2),
    }
}

/// Clockwise display rotation from an FFmpeg display matrix (nine
/// native-endian 32-bit integers, 16.16 fixed point), rounded to a
/// multiple of 90 degrees. `None` if the data is not a display matrix.
pub fn rotation_from_matrix(data: &[u8]) -> Option<u32> {
    if data.len() < 36 {
        return None;
    }
    let m = |i: usize| {
        let b: [u8; 4] = data[i * 4..i * 4 + 4].try_into().ok()?;
        Some(f64::from(i32::from_ne_bytes(b)))
    };
    let (a, b, c, d) = (m(0)?, m(1)?, m(3)?, m(4)?);
    let (s0, s1) = (a.hypot(c), b.hypot(d));
    if s0 == 0.0 || s1 == 0.0 {
        return None;
    }
    // av_display_rotation_get is minus this angle (counter-clockwise);
    // the CLI's autorotate turns the picture clockwise by minus that.
    let cw = (b / s1).atan2(a / s0).to_degrees();
    Some(normalize_rotation(cw))
}

/// Rounds degrees to 0, 90, 180 or 270 (clockwise).
pub fn normalize_rotation(deg: f64) -> u32 {
    if !deg.is_finite() {
        return 0;
    }
    let q = (deg / 90.0).round() as i64;
    (q.rem_euclid(4) * 90) as u32
}

/// FFmpeg filters that turn a picture with EXIF orientation `o` (1 to 8)
/// upright; `None` for 1 or unknown values.
pub fn orientation_filter(o: u32) -> Option<&'static str> {
    match o {
        2 => Some("hflip"),
        3 => Some("hflip,vflip"),
        4 => Some("vflip"),
        5 => Some("transpose=cclock_flip"),
        6 => Some("transpose=clock"),
        7 => Some("transpose=clock_flip"),
        8 => Some("transpose=cclock"),
        _ => None,
    }
}

/// Whether EXIF orientation `o` swaps width and height.
pub fn orientation_swaps(o: u32) -> bool {
    (5..=8).contains(&o)
}

/// FFmpeg filters for a clockwise rotation (as the CLI's autorotate).
pub fn rotation_filter(rotation: u32) -> Option<&'static str> {
    match rotation {
        90 => Some("transpose=clock"),
        180 => Some("hflip,vflip"),
        270 => Some("transpose=cclock"),
        _ => None,
    }
}

/// Folds per-frame peaks (0.0 to 1.0) into `n` buckets of 0 to 255, the
/// loudest bucket scaled to 255 (silence stays 0).
pub fn waveform(peaks: &[f32], n: usize) -> Vec<u8> {
    if n == 0 {
        return Vec::new();
    }
    let mut out = vec![0f32; n];
    if !peaks.is_empty() {
        for (b, v) in out.iter_mut().enumerate() {
            let from = b * peaks.len() / n;
            let to = ((b + 1) * peaks.len() / n).max(from + 1).min(peaks.len());
            *v = peaks[from.min(peaks.len() - 1)..to]
                .iter()
                .fold(0f32, |m, &x| m.max(x.abs()));
        }
    }
    let max = out.iter().fold(0f32, |m, &x| m.max(x));
    out.iter()
        .map(|&v| {
            if max > 0.0 {
                (v / max * 255.0).round().clamp(0.0, 255.0) as u8
            } else {
                0
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
