//! `hookline events show|find`: one event with its raw webhook's place, its state at every
//! destination and every delivery attempt; or events by platform message id, conversation,
//! channel, tenant, kind and time. Readable by default, `--json` for tools.

use hookline_operations::lookup::{self, EventView, FindQuery};
use hookline_shared::config::Config;

pub enum EventsAction {
    Show { event_id: String, json: bool },
    Find { query: FindQuery, json: bool },
}

/// Every tenant: operator commands act as an admin (scoped tokens are an API matter).
const TENANT: Option<&str> = None;

pub async fn run(config: Config, action: EventsAction) -> anyhow::Result<()> {
    config.require_nats_url()?;
    let client = hookline_shared::jetstream::connect(&config.nats, "hookline-events").await?;
    let js = async_nats::jetstream::new(client.clone());
    match action {
        EventsAction::Show { event_id, json } => match lookup::event(&js, &event_id, TENANT).await? {
            Some(view) if json => println!("{}", serde_json::to_string_pretty(&view)?),
            Some(view) => print_event(&view),
            None => anyhow::bail!("no event {event_id:?} (never stored, or older than the streams keep)"),
        },
        EventsAction::Find { query, json } => {
            query.validate().map_err(|(name, message)| anyhow::anyhow!("--{}: {message}", name.replace('_', "-")))?;
            let page = lookup::find(&js, &query, TENANT).await?;
            if json {
                for found in &page.events {
                    println!("{}", serde_json::to_string(found)?);
                }
            } else {
                println!("{:>8}  {:<36}  {:<10}  {:<12}  {:<20}  message", "seq", "event id", "kind", "tenant", "received at");
                for found in &page.events {
                    let e = &found.event;
                    let text = |p: &str| e.pointer(p).and_then(|v| v.as_str()).unwrap_or("-").to_string();
                    let message =
                        e.pointer("/message/id").or_else(|| e.pointer("/status/message_id")).and_then(|v| v.as_str()).unwrap_or("-");
                    println!(
                        "{:>8}  {:<36}  {:<10}  {:<12}  {:<20}  {message}",
                        found.seq,
                        text("/id"),
                        text("/kind"),
                        text("/tenant_id"),
                        text("/received_at")
                    );
                }
                println!("{} event(s)", page.events.len());
            }
            if let Some(cursor) = &page.next_cursor {
                eprintln!("more may match: add --cursor {cursor}");
            }
        }
    }
    let _ = client.flush().await;
    Ok(())
}

fn print_event(view: &EventView) {
    let e = &view.event;
    let text = |p: &str| e.pointer(p).and_then(|v| v.as_str()).unwrap_or("-").to_string();
    println!("event      {}", view.event_id);
    println!(
        "kind       {} from {} ({}), tenant {}, channel {}",
        text("/kind"),
        text("/source"),
        text("/platform"),
        view.tenant_id,
        text("/channel_id")
    );
    println!("received   {}", text("/received_at"));
    println!("stored     HOOKLINE_EVENTS seq {} on {}, {}", view.seq, view.subject, view.stored_at);
    match &view.raw {
        Some(raw) => println!(
            "raw        HOOKLINE_RAW seq {} on {} (GET /api/v1/raw/{})",
            raw["seq"],
            raw["subject"].as_str().unwrap_or("-"),
            raw["seq"]
        ),
        None => println!("raw        -"),
    }
    println!();
    println!("{:<24}  {:<14}  {:>8}  {:<6}  detail", "destination", "state", "attempts", "last");
    for d in &view.destinations {
        let last = d.last_status.map(|s| s.to_string()).unwrap_or_else(|| "-".to_string());
        let detail = match (d.state, &d.next_attempt_at, &d.dlq_reason, &d.last_error) {
            ("retrying", Some(next), _, _) => format!("next attempt at {next}"),
            ("dead_lettered", _, Some(reason), _) => reason.clone(),
            (_, _, _, Some(error)) => error.clone(),
            ("waiting", ..) if d.paused => "paused".to_string(),
            _ => String::new(),
        };
        println!("{:<24}  {:<14}  {:>8}  {:<6}  {detail}", d.destination, d.state, d.attempts, last);
    }
    if !view.attempts.is_empty() {
        println!();
        println!("{:<24}  {:>3}  {:<30}  {:<14}  {:>10}  answer", "destination", "#", "at", "outcome", "ms");
        for a in &view.attempts {
            let answer = match (&a.status, &a.error) {
                (Some(s), _) => {
                    let body: String = a.body.as_deref().unwrap_or("").chars().take(60).filter(|c| !c.is_control()).collect();
                    format!("{s} {body}")
                }
                (None, Some(e)) => e.clone(),
                (None, None) => "-".to_string(),
            };
            let outcome = serde_json::to_value(a.outcome).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
            println!("{:<24}  {:>3}  {:<30}  {:<14}  {:>10.1}  {answer}", a.destination, a.attempt, a.at, outcome, a.duration_ms);
        }
    }
}
