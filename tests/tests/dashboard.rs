//! docs/grafana/palaver.json charts only metrics that exist: every
//! `palaver_*` / `process_*` name in its queries is exported by `palaver
//! serve` (which runs every role and registers every counter).

use palaver_tests::Server;
use std::collections::BTreeSet;

/// Metric names in a PromQL expression (identifiers starting with a
/// known prefix).
fn names(expr: &str) -> Vec<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("palaver_") || w.starts_with("process_"))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn dashboard_queries_name_exported_metrics() {
    let s = Server::start();
    let text = s.metrics().await;
    let exported: BTreeSet<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split([' ', '{']).next())
        .collect();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/grafana/palaver.json");
    let dash: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let mut used = 0;
    for panel in dash["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().unwrap() {
            for n in names(t["expr"].as_str().unwrap()) {
                assert!(
                    exported.contains(n.as_str()),
                    "{n} is not exported:\n{text}"
                );
                used += 1;
            }
        }
    }
    assert!(used > 20, "{used}");
}
