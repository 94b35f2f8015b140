//! `hookline normalize`: prints the events of one raw payload as JSON lines. Exit 0 for zero or
//! more events, 2 (with the reason on stderr) for a payload that cannot be parsed, 1 when the
//! file cannot be read.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use hookline_normalizer::{normalize, EventContext, RawInput};
use hookline_shared::{timefmt, Source};

pub fn run(source: Source, content_type: Option<String>, query: Option<String>, file: Option<PathBuf>) -> ExitCode {
    let mut body = Vec::new();
    let read = match &file {
        Some(path) => std::fs::read(path).map(|b| body = b),
        None => std::io::stdin().read_to_end(&mut body).map(|_| ()),
    };
    if let Err(e) = read {
        let from = file.as_ref().map_or("standard input".to_string(), |p| p.display().to_string());
        eprintln!("hookline normalize: cannot read {from}: {e}");
        return ExitCode::FAILURE;
    }
    let context = EventContext {
        tenant_id: String::new(),
        channel_id: String::new(),
        platform: String::new(),
        received_at: timefmt::now_rfc3339(),
        raw: None,
    };
    let input = RawInput { source, body: &body, content_type: content_type.as_deref(), query: query.as_deref(), context: &context };
    match normalize(&input) {
        Ok(events) => {
            let mut out = std::io::stdout().lock();
            for event in events {
                match serde_json::to_string(&event) {
                    Ok(line) => {
                        if writeln!(out, "{line}").is_err() {
                            return ExitCode::FAILURE;
                        }
                    }
                    Err(e) => {
                        eprintln!("hookline normalize: cannot serialize an event: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("hookline normalize: {} ({})", e, e.code());
            ExitCode::from(2)
        }
    }
}
