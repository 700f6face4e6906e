//! Runs one transcoder operation in this process, for the side-by-side
//! benchmark with the ffmpeg CLI and vipsthumbnail
//! (scripts/transcoder-bench.sh measures wall and CPU time around it).
//!
//! transcode-run job video|voice|image INPUT OUTDIR
//! transcode-run thumb INPUT OUT.jpg SIDE
//! transcode-run thumbs SIDE OUTDIR INPUT... (one process, many files)

use anyhow::{Context, bail};
use palaver_transcoder::{Job, Limits, MediaKind, Request, Settings};
use std::path::PathBuf;
use std::time::Duration;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let timeout = Duration::from_secs(3600);
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["job", kind, input, out] => {
            let kind = match kind {
                "video" => MediaKind::Video,
                "voice" => MediaKind::Voice,
                "image" => MediaKind::Image,
                _ => bail!("kind: video, voice or image"),
            };
            let job = Job {
                input: PathBuf::from(input),
                out_dir: PathBuf::from(out),
                request: Request {
                    kind,
                    no_audio: false,
                },
                settings: Settings::default(),
                limits: Limits::default(),
                timeout,
            };
            palaver_transcoder::job::run(&job, &mut |_| {}).context("job")?;
        }
        ["thumb", input, out, side] => {
            let side: u32 = side.parse().context("side")?;
            let jpeg = palaver_transcoder::image::thumbnail(input.as_ref(), side, timeout)
                .context("thumbnail")?;
            std::fs::write(out, jpeg)?;
        }
        ["thumbs", side, out, ..] => {
            let side: u32 = side.parse().context("side")?;
            for (i, input) in args[3..].iter().enumerate() {
                let jpeg = palaver_transcoder::image::thumbnail(input.as_ref(), side, timeout)
                    .context("thumbnail")?;
                std::fs::write(PathBuf::from(out).join(format!("{i}.jpg")), jpeg)?;
            }
        }
        _ => bail!(
            "usage: transcode-run job KIND INPUT OUTDIR | thumb INPUT OUT SIDE | thumbs SIDE OUTDIR INPUT..."
        ),
    }
    Ok(())
}
