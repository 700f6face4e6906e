//! Images: decode the first picture (JPEG at reduced scale when the output
//! is much smaller), apply the EXIF orientation, re-encode without any
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
    let pic = first_picture(ctx, &mut ictx, p.lowres)?;
    let pic = upright(&pic)?;
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
    match orientation_filter(o) {
        Some(spec) => ff::filter_one(pic, spec, pic.format()),
        None => Ok(pic.clone()),
    }
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
    let first = first_picture(&ctx, &mut ictx, lowres)?;
    let pic = match crate::plan::rotation_filter(v.rotation) {
        Some(spec) if !v.still => ff::filter_one(&first, spec, first.format())?,
        _ => upright(&first)?,
    };
    Ok(ff::jpeg(&pic, side, QSCALE)?.0)
}
