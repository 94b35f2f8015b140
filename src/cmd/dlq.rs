//! `hookline dlq list|show|redrive|purge`: the dead letters, by stage, reason, time, channel,
//! tenant or source.

use hookline_operations::dlq::{self, DlqFilter};
use hookline_shared::config::Config;

pub enum DlqAction {
    List { json: bool },
    Show { seq: u64 },
    Redrive { dry_run: bool },
    Purge { dry_run: bool, yes: bool },
}

fn age(seconds: i64) -> String {
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

pub async fn run(config: Config, action: DlqAction, filter: DlqFilter) -> anyhow::Result<()> {
    config.require_nats_url()?;
    let client = hookline_shared::jetstream::connect(&config.nats, "hookline-dlq").await?;
    let js = async_nats::jetstream::new(client.clone());
    match action {
        DlqAction::List { json } => {
            let letters = dlq::list(&js, &filter).await?;
            if json {
                for l in &letters {
                    println!("{}", serde_json::to_string(l)?);
                }
            } else {
                println!("{:>8}  {:<9}  {:<20}  {:>8}  {:>6}  {:<6}  subject", "seq", "stage", "reason", "attempts", "age", "last");
                for l in &letters {
                    println!(
                        "{:>8}  {:<9}  {:<20}  {:>8}  {:>6}  {:<6}  {}",
                        l.seq,
                        l.stage,
                        l.reason,
                        l.attempts,
                        age(l.age_s),
                        l.last_status.as_deref().unwrap_or("-"),
                        l.subject
                    );
                }
                println!("{} dead letter(s)", letters.len());
            }
        }
        DlqAction::Show { seq } => match dlq::show(&js, seq).await? {
            Some(detail) => println!("{}", serde_json::to_string_pretty(&detail)?),
            None => anyhow::bail!("no dead letter with sequence {seq}"),
        },
        DlqAction::Redrive { dry_run } => {
            let s = dlq::redrive(&js, &filter, dry_run).await?;
            if dry_run {
                println!("would re-drive {} dead letter(s)", s.selected);
            } else {
                println!("re-drove {} of {} dead letter(s); {} left in the DLQ", s.redriven, s.selected, s.failed);
                if s.failed > 0 {
                    anyhow::bail!("{} dead letter(s) could not be re-driven", s.failed);
                }
            }
        }
        DlqAction::Purge { dry_run, yes } => {
            if !dry_run && !yes {
                let n = dlq::purge(&js, &filter, true).await?;
                anyhow::bail!("this would delete {n} dead letter(s): add --yes to do it, or --dry-run to only count");
            }
            let n = dlq::purge(&js, &filter, dry_run).await?;
            println!("{} {n} dead letter(s)", if dry_run { "would purge" } else { "purged" });
        }
    }
    let _ = client.flush().await;
    Ok(())
}
