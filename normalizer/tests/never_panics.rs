//! The parsers never panic, whatever the bytes: arbitrary bytes, arbitrary JSON, and the golden
//! fixtures with bytes flipped. `PROPTEST_CASES=100000 cargo test -p hookline-normalizer --test
//! never_panics` runs a longer search.

use proptest::prelude::*;
use std::path::Path;

use hookline_normalizer::{normalize, EventContext, RawInput};
use hookline_shared::Source;

fn ctx() -> EventContext {
    EventContext {
        tenant_id: "t".into(),
        channel_id: "c".into(),
        platform: String::new(),
        received_at: "2026-01-01T00:00:00Z".into(),
        raw: None,
    }
}

fn run(source: Source, body: &[u8], query: Option<&str>) {
    let ctx = ctx();
    let _ = normalize(&RawInput { source, body, content_type: None, query, context: &ctx });
}

fn fixture_bodies() -> Vec<(Source, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut out = Vec::new();
    for source in Source::ALL {
        let Ok(dir) = std::fs::read_dir(root.join(source.as_str())) else { continue };
        for entry in dir.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if (name.ends_with(".json") && !name.ends_with(".events.json")) || name.ends_with(".form") {
                if let Ok(bytes) = std::fs::read(entry.path()) {
                    out.push((source, bytes));
                }
            }
        }
    }
    out
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        any::<i64>().prop_map(|n| serde_json::json!(n)),
        any::<f64>().prop_map(|f| serde_json::json!(f)),
        "[a-z_.:+0-9 ]{0,12}".prop_map(serde_json::Value::String),
    ];
    leaf.prop_recursive(5, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("object".to_string()),
                    Just("entry".to_string()),
                    Just("changes".to_string()),
                    Just("value".to_string()),
                    Just("messages".to_string()),
                    Just("statuses".to_string()),
                    Just("messaging".to_string()),
                    Just("message".to_string()),
                    Just("type".to_string()),
                    Just("id".to_string()),
                    Just("from".to_string()),
                    Just("text".to_string()),
                    Just("chat".to_string()),
                    Just("update_id".to_string()),
                    Just("event".to_string()),
                    Just("data".to_string()),
                    Just("timestamp".to_string()),
                    Just("sender".to_string()),
                    "[a-z_]{1,10}",
                ],
                inner,
                0..6,
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn arbitrary_bytes(source in prop::sample::select(Source::ALL.to_vec()), body in prop::collection::vec(any::<u8>(), 0..512), query in proptest::option::of("[ -~]{0,40}")) {
        run(source, &body, query.as_deref());
    }

    #[test]
    fn arbitrary_json(source in prop::sample::select(Source::ALL.to_vec()), value in json_value()) {
        run(source, value.to_string().as_bytes(), Some("data.id=1&type=payment"));
    }

    #[test]
    fn fixtures_with_a_byte_changed(pick in any::<prop::sample::Index>(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let fixtures = fixture_bodies();
        prop_assume!(!fixtures.is_empty());
        let (source, body) = &fixtures[pick.index(fixtures.len())];
        let mut body = body.clone();
        if !body.is_empty() {
            let i = at.index(body.len());
            body[i] = byte;
        }
        run(*source, &body, Some("data.id=1"));
    }
}

#[test]
fn deeply_nested_json_is_refused_without_overflow() {
    let nested = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    for source in Source::ALL {
        run(source, nested.as_bytes(), None);
    }
}
