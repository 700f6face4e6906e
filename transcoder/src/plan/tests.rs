use super::*;

fn video(w: u32, h: u32, rotation: u32) -> Probe {
    Probe {
        container: "mov,mp4,m4a,3gp,3g2,mj2".into(),
        duration_ms: Some(5_000),
        bit_rate: Some(4_000_000),
        video: Some(VideoInfo {
            codec: "h264".into(),
            width: w,
            height: h,
            rotation,
            fps: Some(60.0),
            bit_rate: None,
            still: false,
        }),
        audio: Some(AudioInfo {
            codec: "aac".into(),
            channels: 2,
            sample_rate: 44_100,
            bit_rate: None,
        }),
    }
}

fn image(codec: &str, w: u32, h: u32) -> Probe {
    Probe {
        container: "jpeg_pipe".into(),
        duration_ms: None,
        bit_rate: None,
        video: Some(VideoInfo {
            codec: codec.into(),
            width: w,
            height: h,
            rotation: 0,
            fps: None,
            bit_rate: None,
            still: true,
        }),
        audio: None,
    }
}

fn voice() -> Probe {
    Probe {
        container: "wav".into(),
        duration_ms: Some(3_000),
        bit_rate: None,
        video: None,
        audio: Some(AudioInfo {
            codec: "pcm_s16le".into(),
            channels: 2,
            sample_rate: 44_100,
            bit_rate: None,
        }),
    }
}

fn req(kind: MediaKind) -> Request {
    Request {
        kind,
        no_audio: false,
    }
}

fn run(r: Request, p: &Probe) -> Result<Plan, Rejection> {
    plan(r, 1000, p, &Settings::default(), &Limits::default())
}

fn video_plan(p: &Probe) -> VideoPlan {
    match run(req(MediaKind::Video), p) {
        Ok(Plan::Video(v)) => v,
        other => panic!("expected a video plan, got {other:?}"),
    }
}

#[test]
fn kinds_from_content_types() {
    assert_eq!(
        MediaKind::from_content_type("video/mp4"),
        Some(MediaKind::Video)
    );
    assert_eq!(
        MediaKind::from_content_type("Audio/Ogg; codecs=opus"),
        Some(MediaKind::Voice)
    );
    assert_eq!(
        MediaKind::from_content_type("image/jpeg"),
        Some(MediaKind::Image)
    );
    assert_eq!(MediaKind::from_content_type("application/pdf"), None);
    assert_eq!(MediaKind::from_content_type("garbage"), None);
}

#[test]
fn video_fits_the_1280x720_box() {
    let v = video_plan(&video(1920, 1080, 0));
    assert_eq!(
        v.size,
        Size {
            width: 1280,
            height: 720
        }
    );
    assert_eq!(v.max_fps, 30);
    assert_eq!(v.audio_bitrate, Some(128_000));
    let v = video_plan(&video(4000, 1000, 0));
    assert_eq!(
        v.size,
        Size {
            width: 1280,
            height: 320
        }
    );
}

#[test]
fn small_video_is_not_upscaled_but_made_even() {
    let v = video_plan(&video(321, 241, 0));
    assert_eq!(
        v.size,
        Size {
            width: 320,
            height: 240
        }
    );
}

#[test]
fn rotated_video_swaps_sides() {
    let v = video_plan(&video(1920, 1080, 90));
    assert_eq!(
        v.size,
        Size {
            width: 720,
            height: 1280
        }
    );
    assert_eq!(v.rotation, 90);
}

#[test]
fn clip_without_audio() {
    let r = Request {
        kind: MediaKind::Video,
        no_audio: true,
    };
    match run(r, &video(640, 360, 0)) {
        Ok(Plan::Video(v)) => assert_eq!(v.audio_bitrate, None),
        other => panic!("{other:?}"),
    }
    let mut silent = video(640, 360, 0);
    silent.audio = None;
    assert_eq!(video_plan(&silent).audio_bitrate, None);
}

#[test]
fn wrong_kinds_are_rejected() {
    assert!(matches!(
        run(req(MediaKind::Video), &image("mjpeg", 100, 100)),
        Err(Rejection::WrongKind(MediaKind::Video, _))
    ));
    assert!(matches!(
        run(req(MediaKind::Image), &video(640, 360, 0)),
        Err(Rejection::WrongKind(MediaKind::Image, _))
    ));
    assert!(matches!(
        run(req(MediaKind::Voice), &video(640, 360, 0)),
        Err(Rejection::WrongKind(MediaKind::Voice, _))
    ));
    assert!(matches!(
        run(req(MediaKind::Video), &voice()),
        Err(Rejection::WrongKind(MediaKind::Video, _))
    ));
    assert!(matches!(
        run(req(MediaKind::Voice), &image("png", 10, 10)),
        Err(Rejection::WrongKind(MediaKind::Voice, _))
    ));
}

#[test]
fn limits_are_enforced() {
    let l = Limits::default();
    assert_eq!(
        plan(
            req(MediaKind::Video),
            l.max_input_bytes + 1,
            &video(64, 64, 0),
            &Settings::default(),
            &l
        ),
        Err(Rejection::TooLarge {
            size: l.max_input_bytes + 1,
            limit: l.max_input_bytes
        })
    );
    let mut long = video(640, 360, 0);
    long.duration_ms = Some(l.max_duration_ms + 1);
    assert!(matches!(
        run(req(MediaKind::Video), &long),
        Err(Rejection::TooLong { .. })
    ));
    let mut none = video(640, 360, 0);
    none.duration_ms = None;
    assert_eq!(
        run(req(MediaKind::Video), &none),
        Err(Rejection::NoDuration)
    );
    assert!(matches!(
        run(req(MediaKind::Video), &video(7680, 4320, 0)),
        Err(Rejection::TooManyPixels { .. })
    ));
    assert_eq!(
        run(req(MediaKind::Video), &video(0, 360, 0)),
        Err(Rejection::NoSize)
    );
    assert!(matches!(
        run(req(MediaKind::Image), &image("png", 30_000, 30_000)),
        Err(Rejection::TooManyPixels { .. })
    ));
    assert!(matches!(
        run(req(MediaKind::Image), &image("png", 20_000, 2)),
        Err(Rejection::TooManyPixels { .. })
    ));
}

#[test]
fn jpeg_lowres_only_when_it_keeps_enough_pixels() {
    assert_eq!(lowres_for(4000, 1600), 1);
    assert_eq!(lowres_for(4000, 320), 3);
    assert_eq!(lowres_for(4000, 500), 3);
    assert_eq!(lowres_for(4000, 501), 2);
    assert_eq!(lowres_for(1000, 1600), 0);
    match run(req(MediaKind::Image), &image("mjpeg", 4000, 3000)) {
        Ok(Plan::Image(p)) => assert_eq!(p.lowres, 1),
        other => panic!("{other:?}"),
    }
    match run(req(MediaKind::Image), &image("png", 4000, 3000)) {
        Ok(Plan::Image(p)) => assert_eq!(p.lowres, 0),
        other => panic!("{other:?}"),
    }
}

#[test]
fn voice_note_plan() {
    match run(req(MediaKind::Voice), &voice()) {
        Ok(Plan::Voice(v)) => {
            assert_eq!(v.bitrate, 32_000);
            assert_eq!(v.buckets, 64);
        }
        other => panic!("{other:?}"),
    }
}

fn matrix(m: [i32; 9]) -> Vec<u8> {
    m.iter().flat_map(|x| x.to_ne_bytes()).collect()
}

#[test]
fn display_matrix_rotation() {
    let one = 1 << 16;
    assert_eq!(
        rotation_from_matrix(&matrix([one, 0, 0, 0, one, 0, 0, 0, 1 << 30])),
        Some(0)
    );
    // ffprobe calls this one "rotation=90" (counter-clockwise); the CLI turns it clockwise by 270.
    assert_eq!(
        rotation_from_matrix(&matrix([0, -one, 0, one, 0, 0, 0, 0, 1 << 30])),
        Some(270)
    );
    assert_eq!(
        rotation_from_matrix(&matrix([0, one, 0, -one, 0, 0, 0, 0, 1 << 30])),
        Some(90)
    );
    assert_eq!(
        rotation_from_matrix(&matrix([-one, 0, 0, 0, -one, 0, 0, 0, 1 << 30])),
        Some(180)
    );
    assert_eq!(rotation_from_matrix(&[0u8; 10]), None);
    assert_eq!(rotation_from_matrix(&matrix([0; 9])), None);
}

#[test]
fn rotations_round_to_quarters() {
    assert_eq!(normalize_rotation(-90.0), 270);
    assert_eq!(normalize_rotation(89.0), 90);
    assert_eq!(normalize_rotation(450.0), 90);
    assert_eq!(normalize_rotation(f64::NAN), 0);
    assert_eq!(rotation_filter(90), Some("transpose=clock"));
    assert_eq!(rotation_filter(0), None);
}

#[test]
fn exif_orientations() {
    assert_eq!(orientation_filter(1), None);
    assert_eq!(orientation_filter(6), Some("transpose=clock"));
    assert_eq!(orientation_filter(8), Some("transpose=cclock"));
    assert_eq!(orientation_filter(99), None);
    assert!(orientation_swaps(6) && !orientation_swaps(3));
}

#[test]
fn fitting() {
    let s = |width, height| Size { width, height };
    assert_eq!(fit_side(s(4000, 3000), 320), s(320, 240));
    assert_eq!(fit_side(s(3000, 4000), 320), s(240, 320));
    assert_eq!(fit_side(s(100, 50), 320), s(100, 50));
    assert_eq!(fit_side(s(10_000, 1), 320), s(320, 1));
    assert_eq!(even(s(1, 3)), s(2, 2));
}

#[test]
fn waveform_buckets() {
    assert_eq!(waveform(&[], 4), vec![0, 0, 0, 0]);
    assert_eq!(waveform(&[0.5, 0.25], 4), vec![255, 255, 128, 128]);
    assert_eq!(waveform(&[0.1, 0.2, 0.4, 0.8], 2), vec![64, 255]);
    let w = waveform(&vec![0.3; 1000], 64);
    assert_eq!(w.len(), 64);
    assert!(w.iter().all(|&b| b == 255));
    assert_eq!(waveform(&[0.0; 5], 3), vec![0, 0, 0]);
}
