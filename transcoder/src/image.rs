//! Images: decode the first picture (JPEG with libjpeg-turbo, at reduced
//! scale when the output is much smaller; FFmpeg for the rest), apply the EXIF orientation, re-encode without any
//! metadata, plus a thumbnail and a tiny preview.

use ffmpeg_next::{format, frame};

use crate::ff;
use crate::job::{Ctx, Done, JobError, Output, b64};
use crate::plan::{ImageFormat, ImagePlan, Size, orientation_filter};

/// JPEG quantiser of processed images and thumbnails.
const QSCALE: i32 = 4;
/// Preview quantiser (it is tiny and blurred anyway).
const PREVIEW_QSCALE: i32 = 10;

pub(crate) fn run(
    ctx: &Ctx<'_>,
    mut ictx: format::context::Input,
    p: &ImagePlan,
) -> Result<Done, JobError> {
    let pic = match turbo_picture(ctx, p.lowres) {
        Some(pic) => pic,
        None => upright(&first_picture(ctx, &mut ictx, p.lowres)?)?,
    };
    let (bytes, size, file, ct) = match p.format {
        ImageFormat::Jpeg => {
            let (b, s) = ff::jpeg(&pic, p.max_side, QSCALE)?;
            (b, s, "image.jpg", "image/jpeg")
        }
        ImageFormat::Webp => {
            let (b, s) = ff::webp(&pic, p.max_side, 80)?;
            (b, s, "image.webp", "image/webp")
        }
    };
    ff::write(ctx.out(), file, &bytes)?;
    let mut done = Done::default();
    done.outputs.push(output("image", file, ct, size, None));
    stills(ctx, &pic, p.thumb_side, p.preview_side, &mut done)?;
    Ok(done)
}

/// Adds the thumbnail and preview of `pic` to `done`.
pub(crate) fn stills(
    ctx: &Ctx<'_>,
    pic: &frame::Video,
    thumb_side: u32,
    preview_side: u32,
    done: &mut Done,
) -> Result<(), JobError> {
    let (thumb, size) = ff::jpeg(pic, thumb_side, QSCALE)?;
    ff::write(ctx.out(), "thumb.jpg", &thumb)?;
    done.outputs
        .push(output("thumb", "thumb.jpg", "image/jpeg", size, None));
    let (preview, _) = ff::jpeg(pic, preview_side, PREVIEW_QSCALE)?;
    done.preview = Some(b64(&preview));
    Ok(())
}

pub(crate) fn output(
    name: &str,
    file: &str,
    ct: &str,
    s: Size,
    duration_ms: Option<u64>,
) -> Output {
    Output {
        name: name.into(),
        file: file.into(),
        content_type: ct.into(),
        width: Some(s.width),
        height: Some(s.height),
        duration_ms,
    }
}

/// Decodes the first picture of the best video stream.
fn first_picture(
    ctx: &Ctx<'_>,
    ictx: &mut format::context::Input,
    lowres: u8,
) -> Result<frame::Video, JobError> {
    let st = crate::probe::video_stream(ictx)
        .ok_or_else(|| JobError::Unreadable("no picture".into()))?;
    let index = st.index();
    let mut dec = ff::open_decoder(&st, ctx.job.limits.max_image_pixels, lowres, true)?
        .video()
        .map_err(ff::dec_err)?;
    let mut pic = frame::Video::empty();
    for (s, packet) in ictx.packets() {
        ctx.check_time()?;
        if s.index() != index {
            continue;
        }
        // A corrupt packet may be followed by a good one: keep going.
        let _ = dec.send_packet(&packet);
        if dec.receive_frame(&mut pic).is_ok() {
            return Ok(pic);
        }
    }
    let _ = dec.send_eof();
    if dec.receive_frame(&mut pic).is_ok() {
        return Ok(pic);
    }
    Err(JobError::Decode("no picture could be decoded".into()))
}

/// Applies the EXIF orientation the decoder exported, if any.
fn upright(pic: &frame::Video) -> Result<frame::Video, JobError> {
    let o = pic
        .metadata()
        .get("Orientation")
        .and_then(|v| v.trim().parse::<u32>().ok())
        .unwrap_or(1);
    oriented(pic, o)
}

fn oriented(pic: &frame::Video, orientation: u32) -> Result<frame::Video, JobError> {
    match orientation_filter(orientation) {
        Some(spec) => ff::filter_one(pic, spec, pic.format()),
        None => Ok(pic.clone()),
    }
}

/// A JPEG input decoded by libjpeg-turbo at 1/2^`shift` scale, EXIF
/// orientation applied. `None` when the input is not a JPEG or
/// libjpeg-turbo cannot decode it (CMYK, damage it cannot get past): then
/// FFmpeg's decoder has its go, with its own limits and error handling.
fn turbo_picture(ctx: &Ctx<'_>, shift: u8) -> Option<frame::Video> {
    let v = ctx.probe.video.as_ref()?;
    if v.codec != "mjpeg" {
        return None;
    }
    let data = std::fs::read(&ctx.job.input).ok()?;
    if !crate::jpeg::is_jpeg(&data) {
        return None;
    }
    let max = ctx.job.limits.max_image_pixels;
    let pic = match turbo_decode(&data, shift, max) {
        Ok(p) => p,
        Err(e) => {
            tracing::debug!(error = %e, "libjpeg-turbo refused the picture; trying FFmpeg");
            return None;
        }
    };
    oriented(&pic, crate::jpeg::exif_orientation(&data).unwrap_or(1)).ok()
}

/// Decodes a JPEG into an RGB frame at 1/2^`shift` scale.
fn turbo_decode(
    data: &[u8],
    shift: u8,
    max_pixels: u64,
) -> Result<frame::Video, palaver_turbojpeg::Error> {
    let mut dec = palaver_turbojpeg::Decoder::new()?;
    let header = dec.header(data)?;
    let pixels = u64::from(header.width) * u64::from(header.height);
    if pixels > max_pixels {
        return Err(palaver_turbojpeg::Error::TooLarge(pixels));
    }
    let (w, h) = header.scaled(shift);
    let mut pic = frame::Video::new(ffmpeg_next::format::Pixel::RGB24, w, h);
    let pitch = pic.stride(0);
    dec.decode_rgb(data, shift, max_pixels, pic.data_mut(0), pitch)?;
    Ok(pic)
}

/// One JPEG thumbnail fitting `side` of an image (decoded at reduced
/// scale when it is a JPEG, EXIF orientation applied) or of a video's
/// first frame (rotation applied): the fast path the benchmark measures,
/// without the other outputs of a job.
pub fn thumbnail(
    path: &std::path::Path,
    side: u32,
    timeout: std::time::Duration,
) -> Result<Vec<u8>, JobError> {
    let deadline = std::time::Instant::now() + timeout;
    let (mut ictx, probe) = crate::probe::open_and_probe(path, deadline)?;
    let v = probe
        .video
        .clone()
        .ok_or_else(|| JobError::Unreadable("no picture".into()))?;
    let lowres = if v.codec == "mjpeg" {
        crate::plan::lowres_for(v.width.max(v.height), side)
    } else {
        0
    };
    let job = crate::job::Job {
        input: path.to_owned(),
        out_dir: std::env::temp_dir(),
        request: crate::plan::Request {
            kind: crate::plan::MediaKind::Image,
            no_audio: true,
        },
        settings: Default::default(),
        limits: Default::default(),
        timeout,
    };
    let ctx = Ctx {
        job: &job,
        deadline,
        probe: &probe,
    };
    if let Some(pic) = turbo_picture(&ctx, lowres) {
        return Ok(ff::jpeg(&pic, side, QSCALE)?.0);
    }
    let first = first_picture(&ctx, &mut ictx, lowres)?;
    let pic = match crate::plan::rotation_filter(v.rotation) {
        Some(spec) if !v.still => ff::filter_one(&first, spec, first.format())?,
        _ => upright(&first)?,
    };
    Ok(ff::jpeg(&pic, side, QSCALE)?.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corpus;

    /// libjpeg-turbo's reduced-scale decode gives the picture FFmpeg's
    /// `lowres` decode gives (up to IDCT rounding), rows laid out at the
    /// frame's stride, and the EXIF orientation turns it upright.
    #[test]
    fn turbo_decode_matches_ffmpeg_and_applies_orientation() {
        crate::ff::init();
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain.jpg");
        // 1202 wide: odd rows at 1/2 scale (601 px), so stride != width * 3.
        corpus::picture(&plain, 1202, 800).unwrap();
        let data = corpus::with_exif(&std::fs::read(&plain).unwrap(), 6, false);
        let pic = turbo_decode(&data, 1, 50_000_000).unwrap();
        assert_eq!((pic.width(), pic.height()), (601, 400));
        let reference = std::process::Command::new("ffmpeg")
            .args(["-v", "error", "-lowres", "1", "-i"])
            .arg(&plain)
            .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
            .output()
            .unwrap()
            .stdout;
        assert_eq!(reference.len(), 601 * 400 * 3);
        let (stride, row) = (pic.stride(0), 601 * 3);
        let mut diff = 0u64;
        for y in 0..400 {
            let ours = &pic.data(0)[y * stride..y * stride + row];
            let theirs = &reference[y * row..(y + 1) * row];
            diff += ours
                .iter()
                .zip(theirs)
                .map(|(a, b)| u64::from(a.abs_diff(*b)))
                .sum::<u64>();
        }
        let mean = diff as f64 / (601.0 * 400.0 * 3.0);
        assert!(mean < 4.0, "mean difference {mean} per sample");

        assert_eq!(crate::jpeg::exif_orientation(&data), Some(6));
        let up = oriented(&pic, 6).unwrap();
        assert_eq!((up.width(), up.height()), (400, 601));

        let too_big = turbo_decode(&data, 1, 500_000);
        assert!(matches!(
            too_big,
            Err(palaver_turbojpeg::Error::TooLarge(_))
        ));
    }
}
