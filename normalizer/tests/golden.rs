//! Golden tests: every fixture payload under `tests/fixtures/<source>/` (the platforms'
//! published examples) against its expected events, checked in beside it as
//! `<case>.events.json` (or `<case>.error.txt` holding the expected error code), compared field
//! by field; every event is also validated against the committed JSON Schema.
//!
//! A new fixture's expectation is written with `HOOKLINE_BLESS=1 cargo test -p
//! hookline-normalizer --test golden` and then reviewed like code.

use std::path::{Path, PathBuf};

use hookline_normalizer::{normalize, EventContext, RawInput};
use hookline_shared::event::RawRef;
use hookline_shared::Source;
use serde_json::Value;

fn fixtures(source: Source) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(source.as_str())
}

fn bless() -> bool {
    std::env::var_os("HOOKLINE_BLESS").is_some()
}

fn schema_validator() -> jsonschema::Validator {
    let text = include_str!("../../schema/normalized-event.v1.json");
    let schema: Value = serde_json::from_str(text).expect("schema is JSON");
    jsonschema::validator_for(&schema).expect("schema compiles")
}

/// Paths where `actual` and `expected` differ, for a readable failure.
fn diff(path: &str, actual: &Value, expected: &Value, out: &mut Vec<String>) {
    match (actual, expected) {
        (Value::Object(a), Value::Object(e)) => {
            for (k, ev) in e {
                match a.get(k) {
                    Some(av) => diff(&format!("{path}.{k}"), av, ev, out),
                    None => out.push(format!("{path}.{k}: missing, expected {ev}")),
                }
            }
            for (k, av) in a {
                if !e.contains_key(k) {
                    out.push(format!("{path}.{k}: unexpected {av}"));
                }
            }
        }
        (Value::Array(a), Value::Array(e)) => {
            if a.len() != e.len() {
                out.push(format!("{path}: {} items, expected {}", a.len(), e.len()));
            }
            for (i, (av, ev)) in a.iter().zip(e).enumerate() {
                diff(&format!("{path}[{i}]"), av, ev, out);
            }
        }
        _ if actual != expected => out.push(format!("{path}: {actual}, expected {expected}")),
        _ => {}
    }
}

fn context(source: Source) -> EventContext {
    EventContext {
        tenant_id: "tenant-1".into(),
        channel_id: "channel-1".into(),
        platform: source.platforms()[0].into(),
        received_at: "2026-01-01T00:00:00Z".into(),
        raw: Some(RawRef { subject: format!("hookline.raw.{source}.channel-1"), seq: 1, index: None }),
    }
}

fn check_source(source: Source) {
    let dir = fixtures(source);
    let validator = schema_validator();
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            (name.ends_with(".json") && !name.ends_with(".events.json")) || name.ends_with(".form")
        })
        .collect();
    cases.sort();
    assert!(!cases.is_empty(), "no fixtures for {source}");
    let mut failures = Vec::new();
    for case in &cases {
        let name = case.file_name().and_then(|n| n.to_str()).unwrap_or("").to_string();
        let stem = name.trim_end_matches(".json").trim_end_matches(".form").to_string();
        let body = std::fs::read(case).expect("read fixture");
        let query = std::fs::read_to_string(dir.join(format!("{stem}.query"))).ok().map(|q| q.trim().to_string());
        let content_type = if name.ends_with(".form") { "application/x-www-form-urlencoded" } else { "application/json" };
        let ctx = context(source);
        let input = RawInput {
            source,
            body: &body,
            content_type: Some(content_type),
            query: query.as_deref().filter(|q| !q.is_empty()),
            context: &ctx,
        };
        let events_path = dir.join(format!("{stem}.events.json"));
        let error_path = dir.join(format!("{stem}.error.txt"));
        match normalize(&input) {
            Ok(events) => {
                let actual = serde_json::to_value(&events).expect("events serialize");
                for (i, event) in actual.as_array().into_iter().flatten().enumerate() {
                    for error in validator.iter_errors(event) {
                        failures.push(format!("{source}/{stem}[{i}]: schema: {error} at {}", error.instance_path));
                    }
                }
                if error_path.exists() {
                    failures.push(format!("{source}/{stem}: expected the error in {}, got {} events", error_path.display(), events.len()));
                    continue;
                }
                match std::fs::read_to_string(&events_path) {
                    Ok(text) if !bless() => {
                        let expected: Value = serde_json::from_str(&text).expect("expected events are JSON");
                        let mut out = Vec::new();
                        diff("", &actual, &expected, &mut out);
                        failures.extend(out.into_iter().map(|d| format!("{source}/{stem}: {d}")));
                    }
                    _ if bless() => {
                        let pretty = serde_json::to_string_pretty(&actual).expect("pretty");
                        std::fs::write(&events_path, pretty + "\n").expect("write expected events");
                    }
                    _ => failures
                        .push(format!("{source}/{stem}: no {}; write it with HOOKLINE_BLESS=1 and review it", events_path.display())),
                }
            }
            Err(e) => match std::fs::read_to_string(&error_path) {
                Ok(expected) if expected.trim() == e.code() => {}
                Ok(expected) => failures.push(format!("{source}/{stem}: error {} ({e}), expected {}", e.code(), expected.trim())),
                Err(_) => failures.push(format!("{source}/{stem}: failed with {} ({e})", e.code())),
            },
        }
    }
    assert!(failures.is_empty(), "{} golden failures:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn whatsapp() {
    check_source(Source::Whatsapp);
}

#[test]
fn dialog360() {
    check_source(Source::Dialog360);
}

#[test]
fn messenger() {
    check_source(Source::Messenger);
}

#[test]
fn instagram() {
    check_source(Source::Instagram);
}

#[test]
fn telegram() {
    check_source(Source::Telegram);
}

#[test]
fn twilio() {
    check_source(Source::Twilio);
}

#[test]
fn tawkto() {
    check_source(Source::Tawkto);
}

#[test]
fn mercadopago() {
    check_source(Source::Mercadopago);
}

#[test]
fn webchat() {
    check_source(Source::Webchat);
}
