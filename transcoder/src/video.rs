//! Videos: H.264 (libx264) and AAC in MP4 with the index in front,
//! rotation applied, scaled into the box, frame rate capped; the first
//! picture becomes the poster, thumbnail and preview.

use ffmpeg::{ChannelLayout, Dictionary, Rational, codec, format, frame, media, picture};
use ffmpeg_next as ffmpeg;

use crate::ff::{self, Graph};
use crate::image::{output, stills};
use crate::job::{Ctx, Done, JobError, Progress};
use crate::plan::{Size, VideoPlan, rotation_filter};
use crate::voice::layout_of;

const POSTER_QSCALE: i32 = 4;

/// The filter chain of a video: rotation, frame rate cap, scale.
pub fn video_filters(p: &VideoPlan, in_fps: Option<f64>) -> String {
    let mut parts: Vec<String> = Vec::new();
    if let Some(r) = rotation_filter(p.rotation) {
        parts.push(r.to_owned());
    }
    if in_fps.is_none_or(|f| f > f64::from(p.max_fps) + 0.01) {
        parts.push(format!("fps={}", p.max_fps));
    }
    parts.push(format!(
        "scale={}:{}:flags=bicubic",
        p.size.width, p.size.height
    ));
    parts.push("setsar=1".into());
    parts.join(",")
}

struct VideoOut {
    dec: codec::decoder::Video,
    graph: Graph,
    enc: codec::encoder::Video,
    enc_tb: Rational,
    index: usize,
    frames: u64,
    last_pts: i64,
    poster: Option<frame::Video>,
}

struct AudioOut {
    dec: codec::decoder::Audio,
    graph: Graph,
    enc: codec::encoder::Audio,
    rate: i32,
    index: usize,
    samples: i64,
}

pub(crate) fn run(
    ctx: &Ctx<'_>,
    mut ictx: format::context::Input,
    p: &VideoPlan,
    progress: Progress<'_>,
) -> Result<Done, JobError> {
    let path = ctx.out().join("video.mp4");
    let mut octx = format::output_as(&path, "mp4").map_err(ff::enc_err)?;
    let mut v = video_out(ctx, &ictx, &mut octx, p)?;
    let mut a = match p.audio_bitrate {
        Some(rate) => audio_out(&ictx, &mut octx, rate)?,
        None => None,
    };
    let mut opts = Dictionary::new();
    opts.set("movflags", "+faststart");
    octx.write_header_with(opts).map_err(ff::enc_err)?;
    let total = ctx.probe.duration_ms.unwrap_or(1).max(1) as f64 / 1000.0;
    let vtb = ictx
        .stream(v.index)
        .map(|s| s.time_base())
        .unwrap_or(Rational(1, 1));
    for (s, packet) in ictx.packets() {
        ctx.check_time()?;
        if s.index() == v.index {
            if v.dec.send_packet(&packet).is_ok() {
                v.decode(ctx, &mut octx)?;
            }
            let secs = packet.pts().unwrap_or(0) as f64 * f64::from(vtb);
            progress((secs / total).clamp(0.0, 0.99) as f32);
        } else if let Some(a) = a.as_mut().filter(|a| a.index == s.index())
            && a.dec.send_packet(&packet).is_ok()
        {
            a.decode(&mut octx)?;
        }
    }
    v.finish(ctx, &mut octx)?;
    if let Some(a) = a.as_mut() {
        a.finish(&mut octx)?;
    }
    octx.write_trailer().map_err(ff::enc_err)?;
    let poster = v
        .poster
        .take()
        .ok_or_else(|| JobError::Decode("no video frame could be decoded".into()))?;
    let duration_ms = (v.last_pts.max(0) as f64 * f64::from(v.enc_tb) * 1000.0) as u64;
    let mut done = Done::default();
    done.outputs.push(output(
        "video",
        "video.mp4",
        "video/mp4",
        p.size,
        Some(duration_ms),
    ));
    let (bytes, size) = ff::jpeg(&poster, p.size.width.max(p.size.height), POSTER_QSCALE)?;
    ff::write(ctx.out(), "poster.jpg", &bytes)?;
    done.outputs
        .push(output("poster", "poster.jpg", "image/jpeg", size, None));
    stills(ctx, &poster, p.thumb_side, p.preview_side, &mut done)?;
    Ok(done)
}

fn video_out(
    ctx: &Ctx<'_>,
    ictx: &format::context::Input,
    octx: &mut format::context::Output,
    p: &VideoPlan,
) -> Result<VideoOut, JobError> {
    let st = crate::probe::video_stream(ictx)
        .ok_or_else(|| JobError::Unreadable("no video stream".into()))?;
    let dec = ff::open_decoder(&st, ctx.job.limits.max_video_pixels, 0, false)?
        .video()
        .map_err(ff::dec_err)?;
    let in_fps = ctx.probe.video.as_ref().and_then(|v| v.fps);
    let size = Size {
        width: dec.width(),
        height: dec.height(),
    };
    let mut graph = Graph::video(
        size,
        dec.format(),
        st.time_base(),
        &video_filters(p, in_fps),
        format::Pixel::YUV420P,
    )?;
    let enc_tb = graph.out_time_base();
    let fps = in_fps.unwrap_or(30.0).min(f64::from(p.max_fps));
    let enc = x264(octx, p, enc_tb, fps)?;
    let mut ost = octx.add_stream(enc.codec()).map_err(ff::enc_err)?;
    ost.set_parameters(&enc);
    ost.set_time_base(enc_tb);
    Ok(VideoOut {
        index: st.index(),
        dec,
        graph,
        enc,
        enc_tb,
        frames: 0,
        last_pts: -1,
        poster: None,
    })
}

fn x264(
    octx: &format::context::Output,
    p: &VideoPlan,
    tb: Rational,
    fps: f64,
) -> Result<codec::encoder::Video, JobError> {
    let codec = ffmpeg::encoder::find_by_name("libx264")
        .ok_or_else(|| JobError::Encode("no libx264 encoder".into()))?;
    let mut enc = codec::context::Context::new_with_codec(codec)
        .encoder()
        .video()
        .map_err(ff::enc_err)?;
    enc.set_width(p.size.width);
    enc.set_height(p.size.height);
    enc.set_format(format::Pixel::YUV420P);
    enc.set_time_base(tb);
    enc.set_aspect_ratio(Rational(1, 1));
    enc.set_frame_rate(Some(Rational((fps * 1000.0).round() as i32, 1000)));
    if octx.format().flags().contains(format::Flags::GLOBAL_HEADER) {
        enc.set_flags(codec::Flags::GLOBAL_HEADER);
    }
    let mut d = Dictionary::new();
    d.set("preset", &p.preset);
    d.set("crf", &p.crf.to_string());
    d.set("maxrate", &p.max_bitrate.to_string());
    d.set("bufsize", &(p.max_bitrate * 2).to_string());
    d.set("threads", "auto");
    enc.open_as_with(codec, d).map_err(ff::enc_err)
}

impl VideoOut {
    fn decode(
        &mut self,
        ctx: &Ctx<'_>,
        octx: &mut format::context::Output,
    ) -> Result<(), JobError> {
        let mut f = frame::Video::empty();
        while self.dec.receive_frame(&mut f).is_ok() {
            self.frames += 1;
            if self.frames > ctx.job.limits.max_frames {
                return Err(JobError::Limit(format!(
                    "more than {} frames",
                    ctx.job.limits.max_frames
                )));
            }
            let ts = f.timestamp();
            f.set_pts(ts);
            self.graph.push(&f)?;
            self.drain(ctx, octx)?;
        }
        Ok(())
    }

    fn drain(&mut self, ctx: &Ctx<'_>, octx: &mut format::context::Output) -> Result<(), JobError> {
        let mut f = frame::Video::empty();
        while self.graph.pull(&mut f) {
            // Encoders need strictly increasing timestamps.
            let pts = f.pts().unwrap_or(self.last_pts + 1).max(self.last_pts + 1);
            self.last_pts = pts;
            let ms = pts as f64 * f64::from(self.enc_tb) * 1000.0;
            if ms > (ctx.job.limits.max_duration_ms + 1000) as f64 {
                return Err(JobError::Limit(
                    "video longer than the duration limit".into(),
                ));
            }
            f.set_pts(Some(pts));
            f.set_kind(picture::Type::None);
            if self.poster.is_none() {
                self.poster = Some(f.clone());
            }
            self.enc.send_frame(&f).map_err(ff::enc_err)?;
            write_packets(&mut self.enc, 0, self.enc_tb, octx)?;
        }
        Ok(())
    }

    fn finish(
        &mut self,
        ctx: &Ctx<'_>,
        octx: &mut format::context::Output,
    ) -> Result<(), JobError> {
        let _ = self.dec.send_eof();
        self.decode(ctx, octx)?;
        self.graph.flush()?;
        self.drain(ctx, octx)?;
        self.enc.send_eof().map_err(ff::enc_err)?;
        write_packets(&mut self.enc, 0, self.enc_tb, octx)
    }
}

fn audio_out(
    ictx: &format::context::Input,
    octx: &mut format::context::Output,
    bitrate: u64,
) -> Result<Option<AudioOut>, JobError> {
    let Some(st) = ictx.streams().best(media::Type::Audio) else {
        return Ok(None);
    };
    let dec = ff::open_decoder(&st, 0, 0, false)?
        .audio()
        .map_err(ff::dec_err)?;
    let rate: i32 = if dec.rate() == 44_100 { 44_100 } else { 48_000 };
    let layout = if dec.channels() == 1 {
        ChannelLayout::MONO
    } else {
        ChannelLayout::STEREO
    };
    let codec = ffmpeg::encoder::find(codec::Id::AAC)
        .ok_or_else(|| JobError::Encode("no AAC encoder".into()))?;
    let mut enc = codec::context::Context::new_with_codec(codec)
        .encoder()
        .audio()
        .map_err(ff::enc_err)?;
    let fltp = format::Sample::F32(format::sample::Type::Planar);
    enc.set_rate(rate);
    enc.set_channel_layout(layout);
    enc.set_channels(layout.channels());
    enc.set_format(fltp);
    enc.set_bit_rate(bitrate as usize);
    enc.set_time_base(Rational(1, rate));
    if octx.format().flags().contains(format::Flags::GLOBAL_HEADER) {
        enc.set_flags(codec::Flags::GLOBAL_HEADER);
    }
    let enc = enc.open_as(codec).map_err(ff::enc_err)?;
    let mut graph = Graph::audio(
        (dec.rate(), dec.format(), layout_of(&dec), st.time_base()),
        (rate as u32, fltp, layout),
    )?;
    graph.set_frame_size(enc.frame_size());
    let mut ost = octx.add_stream(enc.codec()).map_err(ff::enc_err)?;
    ost.set_parameters(&enc);
    ost.set_time_base(Rational(1, rate));
    Ok(Some(AudioOut {
        index: st.index(),
        dec,
        graph,
        enc,
        rate,
        samples: 0,
    }))
}

impl AudioOut {
    fn decode(&mut self, octx: &mut format::context::Output) -> Result<(), JobError> {
        let mut f = frame::Audio::empty();
        while self.dec.receive_frame(&mut f).is_ok() {
            let ts = f.timestamp();
            f.set_pts(ts);
            self.graph.push(&f)?;
            self.drain(octx)?;
        }
        Ok(())
    }

    fn drain(&mut self, octx: &mut format::context::Output) -> Result<(), JobError> {
        let mut f = frame::Audio::empty();
        while self.graph.pull(&mut f) {
            f.set_pts(Some(self.samples));
            self.samples += f.samples() as i64;
            self.enc.send_frame(&f).map_err(ff::enc_err)?;
            write_packets(&mut self.enc, 1, Rational(1, self.rate), octx)?;
        }
        Ok(())
    }

    fn finish(&mut self, octx: &mut format::context::Output) -> Result<(), JobError> {
        let _ = self.dec.send_eof();
        self.decode(octx)?;
        self.graph.flush()?;
        self.drain(octx)?;
        self.enc.send_eof().map_err(ff::enc_err)?;
        write_packets(&mut self.enc, 1, Rational(1, self.rate), octx)
    }
}

fn write_packets(
    enc: &mut codec::encoder::Encoder,
    index: usize,
    enc_tb: Rational,
    octx: &mut format::context::Output,
) -> Result<(), JobError> {
    let tb = octx.stream(index).map(|s| s.time_base()).unwrap_or(enc_tb);
    let mut pkt = ffmpeg::Packet::empty();
    while enc.receive_packet(&mut pkt).is_ok() {
        pkt.set_stream(index);
        pkt.rescale_ts(enc_tb, tb);
        pkt.write_interleaved(octx).map_err(ff::enc_err)?;
    }
    Ok(())
}
