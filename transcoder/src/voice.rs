//! Voice notes: the best audio stream to Opus in Ogg, mono, 48 kHz, with
//! an amplitude summary (waveform) for the player.

use ffmpeg::{ChannelLayout, Rational, codec, format, frame, media};
use ffmpeg_next as ffmpeg;

use crate::ff::{self, Graph};
use crate::job::{Ctx, Done, JobError, Output, Progress};
use crate::plan::{VoicePlan, waveform};

const RATE: u32 = 48_000;

pub(crate) fn run(
    ctx: &Ctx<'_>,
    mut ictx: format::context::Input,
    p: &VoicePlan,
    progress: Progress<'_>,
) -> Result<Done, JobError> {
    let st = ictx
        .streams()
        .best(media::Type::Audio)
        .ok_or_else(|| JobError::Unreadable("no audio stream".into()))?;
    let index = st.index();
    let in_tb = st.time_base();
    let mut dec = ff::open_decoder(&st, 0, 0, false)?
        .audio()
        .map_err(ff::dec_err)?;
    let path = ctx.out().join("voice.ogg");
    let mut octx = format::output_as(&path, "ogg").map_err(ff::enc_err)?;
    let mut enc = opus_encoder(&octx, p.bitrate)?;
    let mut ost = octx.add_stream(enc.codec()).map_err(ff::enc_err)?;
    ost.set_parameters(&enc);
    ost.set_time_base(Rational(1, RATE as i32));
    octx.write_header().map_err(ff::enc_err)?;
    let layout = layout_of(&dec);
    let mut graph = Graph::audio(
        (dec.rate(), dec.format(), layout, in_tb),
        (
            RATE,
            format::Sample::F32(format::sample::Type::Packed),
            ChannelLayout::MONO,
        ),
    )?;
    graph.set_frame_size(enc.frame_size());
    let mut sink = Sink {
        enc: &mut enc,
        octx: &mut octx,
        peaks: Vec::new(),
        samples: 0,
        last_ms: 0,
    };
    let total = ctx.probe.duration_ms.unwrap_or(1).max(1);
    let mut decoded = frame::Audio::empty();
    for (s, packet) in ictx.packets() {
        ctx.check_time()?;
        if s.index() != index {
            continue;
        }
        if dec.send_packet(&packet).is_err() {
            continue;
        }
        while dec.receive_frame(&mut decoded).is_ok() {
            graph.push(&decoded)?;
            sink.drain(&mut graph, ctx)?;
        }
        progress((sink.last_ms as f32 / total as f32).min(0.99));
    }
    let _ = dec.send_eof();
    while dec.receive_frame(&mut decoded).is_ok() {
        graph.push(&decoded)?;
    }
    graph.flush()?;
    sink.drain(&mut graph, ctx)?;
    sink.finish()?;
    let Sink { peaks, last_ms, .. } = sink;
    if peaks.is_empty() {
        return Err(JobError::Decode("no audio could be decoded".into()));
    }
    octx.write_trailer().map_err(ff::enc_err)?;
    Ok(Done {
        outputs: vec![Output {
            name: "voice".into(),
            file: "voice.ogg".into(),
            content_type: "audio/ogg; codecs=opus".into(),
            width: None,
            height: None,
            duration_ms: Some(last_ms),
        }],
        waveform: Some(waveform(&peaks, p.buckets)),
        preview: None,
    })
}

/// The decoder's channel layout, or the default one for its channel count.
pub(crate) fn layout_of(dec: &codec::decoder::Audio) -> ChannelLayout {
    let l = dec.channel_layout();
    if l.bits() != 0 {
        l
    } else {
        ChannelLayout::default(i32::from(dec.channels()))
    }
}

fn opus_encoder(
    octx: &format::context::Output,
    bitrate: u64,
) -> Result<codec::encoder::Audio, JobError> {
    let codec = ffmpeg::encoder::find_by_name("libopus")
        .ok_or_else(|| JobError::Encode("no libopus encoder".into()))?;
    let mut enc = codec::context::Context::new_with_codec(codec)
        .encoder()
        .audio()
        .map_err(ff::enc_err)?;
    enc.set_rate(RATE as i32);
    enc.set_channel_layout(ChannelLayout::MONO);
    enc.set_channels(1);
    enc.set_format(format::Sample::F32(format::sample::Type::Packed));
    enc.set_bit_rate(bitrate as usize);
    enc.set_time_base(Rational(1, RATE as i32));
    if octx.format().flags().contains(format::Flags::GLOBAL_HEADER) {
        enc.set_flags(codec::Flags::GLOBAL_HEADER);
    }
    let mut d = ffmpeg::Dictionary::new();
    d.set("application", "voip");
    enc.open_as_with(codec, d).map_err(ff::enc_err)
}

struct Sink<'a> {
    enc: &'a mut codec::encoder::Audio,
    octx: &'a mut format::context::Output,
    peaks: Vec<f32>,
    samples: u64,
    last_ms: u64,
}

impl Sink<'_> {
    fn drain(&mut self, graph: &mut Graph, ctx: &Ctx<'_>) -> Result<(), JobError> {
        let mut f = frame::Audio::empty();
        while graph.pull(&mut f) {
            self.peaks.push(peak(&f));
            f.set_pts(Some(self.samples as i64));
            self.samples += f.samples() as u64;
            self.last_ms = self.samples * 1000 / u64::from(RATE);
            if self.last_ms > ctx.job.limits.max_duration_ms {
                return Err(JobError::Limit(
                    "audio longer than the duration limit".into(),
                ));
            }
            self.enc.send_frame(&f).map_err(ff::enc_err)?;
            self.write_packets()?;
        }
        Ok(())
    }

    fn write_packets(&mut self) -> Result<(), JobError> {
        let mut pkt = ffmpeg::Packet::empty();
        let tb = self
            .octx
            .stream(0)
            .map(|s| s.time_base())
            .unwrap_or(Rational(1, 1));
        while self.enc.receive_packet(&mut pkt).is_ok() {
            pkt.set_stream(0);
            pkt.rescale_ts(Rational(1, RATE as i32), tb);
            pkt.write_interleaved(self.octx).map_err(ff::enc_err)?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), JobError> {
        self.enc.send_eof().map_err(ff::enc_err)?;
        self.write_packets()
    }
}

/// Largest absolute sample of a packed mono f32 frame.
fn peak(f: &frame::Audio) -> f32 {
    let n = f.samples() * 4;
    let data = f.data(0);
    data[..n.min(data.len())]
        .chunks_exact(4)
        .map(|c| f32::from_ne_bytes([c[0], c[1], c[2], c[3]]).abs())
        .fold(0f32, f32::max)
        .min(1.0)
}
