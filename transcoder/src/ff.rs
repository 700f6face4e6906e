//! Thin helpers over ffmpeg-next shared by the pipelines: hardened input
//! opening, decoders, filter graphs, and still-picture encoding.

use ffmpeg::{Dictionary, Rational, codec, filter, format, frame};
use ffmpeg_next as ffmpeg;
use std::path::Path;
use std::sync::Once;
use std::time::Instant;

use crate::job::JobError;
use crate::plan::{Size, fit_side};

/// Demuxers an upload may use. Playlist and concatenation demuxers (HLS,
/// DASH, concat) are excluded: they open other files or URLs. `image2`
/// (chosen for a file named `*.jpg`) runs with `pattern_type=none`, so it
/// reads that one file and never a numbered sequence or a glob.
const FORMATS: &str = "mov,matroska,avi,ogg,mp3,wav,flac,aac,amr,caf,mpegts,flv,\
                       gif,image2,jpeg_pipe,png_pipe,webp_pipe,bmp_pipe,tiff_pipe";

/// Initialises FFmpeg once and quiets its logging (errors are reported
/// through results, and logs from hostile files are noise).
pub(crate) fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = ffmpeg::init();
        ffmpeg::util::log::set_level(ffmpeg::util::log::Level::Fatal);
    });
}

/// Opens an input with the demuxer and protocol white-lists, a probe
/// size cap, and an interrupt at `deadline`. `no_probe_decode` keeps
/// FFmpeg from decoding while it probes (no decoder is white-listed for
/// the probe; the caller knows the picture size from the header).
pub(crate) fn open_input(
    path: &Path,
    deadline: Instant,
    no_probe_decode: bool,
) -> Result<format::context::Input, JobError> {
    init();
    let mut d = Dictionary::new();
    if no_probe_decode {
        d.set("codec_whitelist", "none");
    }
    d.set("format_whitelist", FORMATS);
    d.set("protocol_whitelist", "file");
    d.set("pattern_type", "none");
    d.set("probesize", "20000000");
    format::input_with_interrupt_and_dictionary(path, move || Instant::now() > deadline, d)
        .map_err(|e| JobError::Unreadable(e.to_string()))
}

/// Opens the decoder of a stream, multi-threaded (frame threads for a
/// stream, slice threads for one picture), refusing pictures over
/// `max_pixels`, with JPEG down-scaling `lowres` (0 for none).
pub(crate) fn open_decoder(
    st: &format::stream::Stream<'_>,
    max_pixels: u64,
    lowres: u8,
    one_picture: bool,
) -> Result<codec::decoder::Opened, JobError> {
    let mut ctx = codec::context::Context::from_parameters(st.parameters()).map_err(dec_err)?;
    ctx.set_threading(codec::threading::Config {
        kind: if one_picture {
            codec::threading::Type::Slice
        } else {
            codec::threading::Type::Frame
        },
        count: 0,
        ..Default::default()
    });
    let mut d = Dictionary::new();
    d.set("max_pixels", &max_pixels.min(i32::MAX as u64).to_string());
    if lowres > 0 {
        d.set("lowres", &lowres.to_string());
    }
    let codec = ffmpeg::decoder::find(ctx.id())
        .ok_or_else(|| JobError::Decode(format!("no decoder for {:?}", ctx.id())))?;
    let mut dec = ctx.decoder();
    dec.set_packet_time_base(st.time_base());
    dec.open_as_with(codec, d).map_err(dec_err)
}

pub(crate) fn dec_err(e: ffmpeg::Error) -> JobError {
    JobError::Decode(e.to_string())
}

pub(crate) fn enc_err(e: ffmpeg::Error) -> JobError {
    JobError::Encode(e.to_string())
}

/// A filter graph with one `buffer`/`abuffer` input named `in` and one
/// sink named `out`.
pub(crate) struct Graph(pub(crate) filter::Graph);

impl Graph {
    /// A video graph for frames of `size` and pixel format `fmt` in time
    /// base `tb`, running `spec`, ending in `out_fmt`.
    pub(crate) fn video(
        size: Size,
        fmt: format::Pixel,
        tb: Rational,
        spec: &str,
        out_fmt: format::Pixel,
    ) -> Result<Graph, JobError> {
        let name = fmt
            .descriptor()
            .map(|d| d.name())
            .ok_or_else(|| JobError::Decode("unknown pixel format".into()))?;
        let args = format!(
            "video_size={}x{}:pix_fmt={}:time_base={}/{}:pixel_aspect=1/1",
            size.width,
            size.height,
            name,
            tb.numerator(),
            tb.denominator().max(1)
        );
        let mut g = filter::Graph::new();
        let f = |n| filter::find(n).ok_or_else(|| JobError::Encode(format!("no filter {n}")));
        g.add(&f("buffer")?, "in", &args).map_err(graph_err)?;
        g.add(&f("buffersink")?, "out", "").map_err(graph_err)?;
        if let Some(mut out) = g.get("out") {
            out.set_pixel_format(out_fmt);
        }
        Self::finish(g, spec)
    }

    /// An audio graph from `rate`/`fmt`/`layout` to `out` (rate, sample
    /// format, layout), resampling and remixing explicitly (the sink's
    /// own constraints are not enough for every input rate in FFmpeg 5.1).
    pub(crate) fn audio(
        src: (u32, format::Sample, ffmpeg::ChannelLayout, Rational),
        out: (u32, format::Sample, ffmpeg::ChannelLayout),
    ) -> Result<Graph, JobError> {
        let (rate, fmt, layout, tb) = src;
        let args = format!(
            "time_base={}/{}:sample_rate={}:sample_fmt={}:channel_layout=0x{:x}",
            tb.numerator(),
            tb.denominator().max(1),
            rate,
            fmt.name(),
            layout.bits()
        );
        let spec = format!(
            "aresample={0},aformat=sample_fmts={1}:sample_rates={0}:channel_layouts=0x{2:x}",
            out.0,
            out.1.name(),
            out.2.bits()
        );
        let mut g = filter::Graph::new();
        let f = |n| filter::find(n).ok_or_else(|| JobError::Encode(format!("no filter {n}")));
        g.add(&f("abuffer")?, "in", &args).map_err(graph_err)?;
        g.add(&f("abuffersink")?, "out", "").map_err(graph_err)?;
        Self::finish(g, &spec)
    }

    fn finish(mut g: filter::Graph, spec: &str) -> Result<Graph, JobError> {
        g.output("in", 0)
            .and_then(|p| p.input("out", 0))
            .and_then(|p| p.parse(spec))
            .map_err(graph_err)?;
        g.validate().map_err(graph_err)?;
        Ok(Graph(g))
    }

    pub(crate) fn push(&mut self, f: &frame::Frame) -> Result<(), JobError> {
        match self.0.get("in") {
            Some(mut c) => c.source().add(f).map_err(graph_err),
            None => Err(JobError::Encode("graph without input".into())),
        }
    }

    pub(crate) fn flush(&mut self) -> Result<(), JobError> {
        match self.0.get("in") {
            Some(mut c) => c.source().flush().map_err(graph_err),
            None => Err(JobError::Encode("graph without input".into())),
        }
    }

    /// The next filtered frame, or `false` when none is ready.
    pub(crate) fn pull(&mut self, f: &mut frame::Frame) -> bool {
        match self.0.get("out") {
            Some(mut c) => c.sink().frame(f).is_ok(),
            None => false,
        }
    }

    pub(crate) fn out_time_base(&mut self) -> Rational {
        self.0
            .get("out")
            .map(|mut c| c.sink().time_base())
            .unwrap_or(Rational(1, 1))
    }

    pub(crate) fn set_frame_size(&mut self, n: u32) {
        if let Some(mut c) = self.0.get("out") {
            c.sink().set_frame_size(n);
        }
    }
}

fn graph_err(e: ffmpeg::Error) -> JobError {
    JobError::Encode(format!("filter graph: {e}"))
}

/// Runs one picture through `spec` and returns the result.
pub(crate) fn filter_one(
    pic: &frame::Video,
    spec: &str,
    out_fmt: format::Pixel,
) -> Result<frame::Video, JobError> {
    let size = Size {
        width: pic.width(),
        height: pic.height(),
    };
    let mut g = Graph::video(size, pic.format(), Rational(1, 25), spec, out_fmt)?;
    let mut one = pic.clone();
    one.set_pts(Some(0));
    g.push(&one)?;
    g.flush()?;
    let mut out = frame::Video::empty();
    if g.pull(&mut out) {
        Ok(out)
    } else {
        Err(JobError::Encode("the filter gave no picture".into()))
    }
}

/// Encodes one picture, scaled to fit `side`, as a JPEG file's bytes.
/// `qscale` is the MJPEG quantiser (2 best .. 31 worst).
pub(crate) fn jpeg(
    pic: &frame::Video,
    side: u32,
    qscale: i32,
) -> Result<(Vec<u8>, Size), JobError> {
    let s = fit_side(
        Size {
            width: pic.width(),
            height: pic.height(),
        },
        side,
    );
    let spec = format!("scale={}:{}:flags=bicubic", s.width, s.height);
    let scaled = filter_one(pic, &spec, format::Pixel::YUVJ420P)?;
    let codec = ffmpeg::encoder::find(codec::Id::MJPEG)
        .ok_or_else(|| JobError::Encode("no MJPEG encoder".into()))?;
    let mut enc = codec::context::Context::new_with_codec(codec)
        .encoder()
        .video()
        .map_err(enc_err)?;
    enc.set_width(s.width);
    enc.set_height(s.height);
    enc.set_format(format::Pixel::YUVJ420P);
    enc.set_time_base(Rational(1, 25));
    enc.set_flags(codec::Flags::QSCALE);
    enc.set_global_quality(qscale * 118);
    let mut opened = enc.open_as(codec).map_err(enc_err)?;
    encode_still(&mut opened, &scaled).map(|b| (b, s))
}

/// Encodes one picture as WebP.
pub(crate) fn webp(
    pic: &frame::Video,
    side: u32,
    quality: u32,
) -> Result<(Vec<u8>, Size), JobError> {
    let s = fit_side(
        Size {
            width: pic.width(),
            height: pic.height(),
        },
        side,
    );
    let spec = format!("scale={}:{}:flags=bicubic", s.width, s.height);
    let scaled = filter_one(pic, &spec, format::Pixel::YUV420P)?;
    let codec = ffmpeg::encoder::find_by_name("libwebp")
        .ok_or_else(|| JobError::Encode("no libwebp encoder".into()))?;
    let mut enc = codec::context::Context::new_with_codec(codec)
        .encoder()
        .video()
        .map_err(enc_err)?;
    enc.set_width(s.width);
    enc.set_height(s.height);
    enc.set_format(format::Pixel::YUV420P);
    enc.set_time_base(Rational(1, 25));
    let mut d = Dictionary::new();
    d.set("quality", &quality.to_string());
    let mut opened = enc.open_as_with(codec, d).map_err(enc_err)?;
    encode_still(&mut opened, &scaled).map(|b| (b, s))
}

fn encode_still(
    enc: &mut codec::encoder::video::Encoder,
    pic: &frame::Video,
) -> Result<Vec<u8>, JobError> {
    let mut one = pic.clone();
    one.set_pts(Some(0));
    enc.send_frame(&one).map_err(enc_err)?;
    enc.send_eof().map_err(enc_err)?;
    let mut pkt = ffmpeg::Packet::empty();
    let mut out = Vec::new();
    while enc.receive_packet(&mut pkt).is_ok() {
        out.extend_from_slice(pkt.data().unwrap_or_default());
    }
    if out.is_empty() {
        return Err(JobError::Encode("the encoder gave no picture".into()));
    }
    Ok(out)
}

/// Writes `bytes` to `dir/name`.
pub(crate) fn write(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), JobError> {
    std::fs::write(dir.join(name), bytes).map_err(|e| JobError::Io(e.to_string()))
}
