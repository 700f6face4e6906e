use super::*;

fn bulk(s: &str) -> Value {
    Value::BulkString(s.as_bytes().to_vec())
}

fn map(f: Vec<(&'static str, String)>) -> HashMap<String, String> {
    f.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

#[test]
fn job_entries_round_trip() {
    let j = JobEntry {
        job: "p0123".into(),
        content_type: "video/mp4; clip=1".into(),
        attempt: 2,
        url: "http://127.0.0.1:7450".into(),
        token: "ab".into(),
    };
    assert_eq!(JobEntry::parse(&map(j.fields())), Some(j.clone()));
    let mut broken = map(j.fields());
    broken.insert("attempt".into(), "two".into());
    assert_eq!(JobEntry::parse(&broken), None);
    broken.remove("attempt");
    assert_eq!(JobEntry::parse(&broken), None);
}

#[test]
fn result_entries_round_trip() {
    for report in [
        Report::Started { attempt: 1 },
        Report::Progress(0.5),
        Report::Done {
            run: "1-0".into(),
            outcome: "{}".into(),
        },
        Report::Failed {
            reason: "rejected".into(),
        },
    ] {
        let r = ResultEntry {
            job: "p1".into(),
            report,
        };
        assert_eq!(ResultEntry::parse(&map(r.fields())), Some(r.clone()));
    }
    let mut odd = map(ResultEntry {
        job: "p1".into(),
        report: Report::Progress(0.1),
    }
    .fields());
    odd.insert("progress".into(), "7".into());
    assert_eq!(
        ResultEntry::parse(&odd).unwrap().report,
        Report::Progress(1.0)
    );
    odd.insert("kind".into(), "exploded".into());
    assert_eq!(ResultEntry::parse(&odd), None);
}

#[test]
fn replies_are_parsed() {
    let e = |id: &str| {
        Value::Array(vec![
            bulk(id),
            Value::Array(vec![bulk("job"), bulk("p1"), bulk("attempt"), bulk("1")]),
        ])
    };
    let read = Value::Array(vec![Value::Array(vec![
        bulk("s"),
        Value::Array(vec![e("1-0"), e("2-0")]),
    ])]);
    let got = read_reply(&read);
    assert_eq!(got.len(), 2);
    assert_eq!(got[1].0, "2-0");
    assert_eq!(got[0].1["job"], "p1");
    assert!(read_reply(&Value::Nil).is_empty());

    let claim = Value::Array(vec![
        bulk("0-0"),
        Value::Array(vec![e("3-0"), Value::Array(vec![bulk("4-0"), Value::Nil])]),
        Value::Array(vec![bulk("5-0")]),
    ]);
    let (claimed, deleted) = autoclaim_reply(&claim);
    assert_eq!(claimed.len(), 1);
    assert_eq!(deleted, ["5-0"]);

    let pending = Value::Array(vec![Value::Array(vec![
        bulk("3-0"),
        bulk("w1"),
        Value::Int(1000),
        Value::Int(3),
    ])]);
    assert_eq!(deliveries_reply(&pending), Some(3));
    assert_eq!(deliveries_reply(&Value::Array(vec![])), None);
}

#[test]
fn attempts_are_counted_and_bounded() {
    assert_eq!(after_failed_run(1, 3), NextStep::Retry { attempt: 2 });
    assert_eq!(after_failed_run(3, 3), NextStep::Dead);
    assert_eq!(after_failed_run(1, 1), NextStep::Dead);
    assert_eq!(run_number(1, 1), 1);
    assert_eq!(run_number(2, 3), 4);
    assert_eq!(run_number(1, 0), 1);
}

#[test]
fn tokens_bind_one_job() {
    let k = TokenKey::new(b"secret");
    let t = k.token("pA");
    assert!(k.verify("pA", &t));
    assert!(!k.verify("pB", &t));
    assert!(!k.verify("pA", "zz"));
    assert!(!k.verify("pA", ""));
    assert!(!TokenKey::new(b"other").verify("pA", &t));
}

#[test]
fn run_ids_are_path_safe() {
    assert!(valid_run("1732269000000-0"));
    for bad in ["", "../x", "1/2", "-1", "1-0.", &"1".repeat(50)] {
        assert!(!valid_run(bad), "{bad}");
    }
}
