//! `hookline replay raw|events`: re-runs raw webhooks through the normalizer, or events through
//! the forwarder, with `replay: true` and the same ids. A dry run counts; on a terminal a
//! progress line; a summary at the end.

use std::io::{IsTerminal, Write};

use hookline_operations::replay::{replay, ReplayOptions, ReplayStream};
use hookline_operations::selection::Selection;
use hookline_shared::config::Config;

pub async fn run(
    config: Config,
    stream: ReplayStream,
    selection: Selection,
    dry_run: bool,
    rate_per_s: Option<u32>,
    destination: Option<String>,
) -> anyhow::Result<()> {
    config.require_nats_url()?;
    let client = hookline_shared::jetstream::connect(&config.nats, "hookline-replay").await?;
    let js = async_nats::jetstream::new(client.clone());
    let options = ReplayOptions { stream, selection, dry_run, rate_per_s, destination };
    let tty = std::io::stderr().is_terminal();
    let mut progress = |done: u64| {
        if tty && done % 100 == 0 {
            eprint!("\rreplayed {done}");
            let _ = std::io::stderr().flush();
        }
    };
    let summary = replay(&js, &options, &mut progress).await?;
    if tty {
        eprintln!();
    }
    let _ = client.flush().await;
    let verb = if dry_run { "would replay" } else { "replayed" };
    println!(
        "{verb} {} {} message(s) as {} event(s){}; run {}",
        summary.selected,
        match stream {
            ReplayStream::Raw => "raw",
            ReplayStream::Events => "event",
        },
        summary.events,
        if summary.unparseable > 0 { format!(", {} unparseable (already in the DLQ)", summary.unparseable) } else { String::new() },
        summary.run_id
    );
    Ok(())
}
