//! Probing: what an input holds (container, codecs, duration, sizes,
//! rotation, bit rates), read by FFmpeg's demuxers under the white-lists
//! of [`crate::ff::open_input`].

use ffmpeg::{format, media};
use ffmpeg_next as ffmpeg;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::job::JobError;
use crate::plan::{AudioInfo, Probe, VideoInfo, rotation_from_matrix};

/// Containers that hold one still picture.
fn still_container(name: &str) -> bool {
    name.ends_with("_pipe") || name == "image2"
}

/// Probes a file within `timeout`.
pub fn probe_file(path: &Path, timeout: Duration) -> Result<Probe, JobError> {
    open_and_probe(path, Instant::now() + timeout).map(|(_, p)| p)
}

/// Opens and probes a file. A JPEG's size is read from its header, so
/// FFmpeg's probe does not decode the whole picture (the pipeline then
/// decodes it once, at reduced scale when it can).
pub(crate) fn open_and_probe(
    path: &Path,
    deadline: Instant,
) -> Result<(format::context::Input, Probe), JobError> {
    let jpeg = read_head(path).and_then(|h| crate::jpeg::jpeg_size(&h));
    let ictx = crate::ff::open_input(path, deadline, jpeg.is_some())?;
    let mut p = probe(&ictx);
    if let (Some(size), Some(v)) = (jpeg, p.video.as_mut())
        && v.codec == "mjpeg"
        && v.still
    {
        v.width = size.width;
        v.height = size.height;
    }
    Ok((ictx, p))
}

/// The first 256 KiB of a file (where a JPEG's frame header is, after
/// its metadata segments).
fn read_head(path: &Path) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut head = Vec::with_capacity(256 << 10);
    std::fs::File::open(path)
        .ok()?
        .take(256 << 10)
        .read_to_end(&mut head)
        .ok()?;
    Some(head)
}

/// Describes an opened input.
pub(crate) fn probe(ictx: &format::context::Input) -> Probe {
    let container = ictx.format().name().to_owned();
    let d = ictx.duration();
    let still = still_container(&container);
    Probe {
        duration_ms: (d > 0 && d != ffmpeg::ffi::AV_NOPTS_VALUE).then_some(d as u64 / 1000),
        bit_rate: positive(ictx.bit_rate()),
        video: video_stream(ictx).and_then(|st| video_info(&st, still)),
        audio: ictx
            .streams()
            .best(media::Type::Audio)
            .and_then(|st| audio_info(&st)),
        container,
    }
}

fn positive(v: i64) -> Option<u64> {
    (v > 0).then_some(v as u64)
}

/// The best video stream that is not a cover picture.
pub(crate) fn video_stream(ictx: &format::context::Input) -> Option<format::stream::Stream<'_>> {
    ictx.streams()
        .filter(|s| s.parameters().medium() == media::Type::Video)
        .find(|s| {
            !s.disposition()
                .contains(format::stream::Disposition::ATTACHED_PIC)
        })
}

fn video_info(st: &format::stream::Stream<'_>, still: bool) -> Option<VideoInfo> {
    let ctx = ffmpeg::codec::context::Context::from_parameters(st.parameters()).ok()?;
    let codec = ctx.id().name().to_owned();
    let v = ctx.decoder().video().ok()?;
    let rotation = st
        .side_data()
        .find(|sd| sd.kind() == ffmpeg::codec::packet::side_data::Type::DisplayMatrix)
        .and_then(|sd| rotation_from_matrix(sd.data()))
        .unwrap_or(0);
    let r = st.avg_frame_rate();
    Some(VideoInfo {
        codec,
        width: v.width(),
        height: v.height(),
        rotation,
        fps: (r.denominator() > 0 && r.numerator() > 0).then(|| f64::from(r)),
        bit_rate: positive(v.bit_rate() as i64),
        still,
    })
}

fn audio_info(st: &format::stream::Stream<'_>) -> Option<AudioInfo> {
    let ctx = ffmpeg::codec::context::Context::from_parameters(st.parameters()).ok()?;
    let codec = ctx.id().name().to_owned();
    let a = ctx.decoder().audio().ok()?;
    Some(AudioInfo {
        codec,
        channels: u32::from(a.channels()),
        sample_rate: a.rate(),
        bit_rate: positive(a.bit_rate() as i64),
    })
}
