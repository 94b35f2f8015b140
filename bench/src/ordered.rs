//! `hookline bench e2e --ordering conversation`: conversations of WhatsApp messages, each message
//! sent only once the previous one of its conversation was answered 200, delivered at the same
//! time to two destinations: `ordered` (`ordering = "conversation"`) and its unordered twin
//! `unordered`. Each sink's arrival order is checked, per conversation, against the order the
//! messages were sent in (read from the message ids this run wrote, not from anything hookline
//! adds), and the two destinations' delivered events per second are compared.

use bytes::Bytes;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hookline_shared::destination::Ordering;
use hookline_shared::servers::Fsync;
use hookline_shared::Source;

use crate::load::send;
use crate::procs::{http_get, http_post, secret_for, wait_http_ok, Stack};
use crate::workload::{self, Template, Webhook};

#[derive(Debug, Clone)]
pub struct OrderedOptions {
    pub conversations: usize,
    /// Messages per conversation.
    pub messages: usize,
    /// Requests in flight at once (over all conversations).
    pub concurrency: usize,
    pub normalizers: usize,
    pub forwarders: usize,
    /// Both targets answer 500 to this share of deliveries, at random, while the messages are sent.
    pub fail_ratio: Option<f64>,
    /// SIGKILL one forwarder once a third of the messages were answered 200, and start it again.
    pub kill_forwarder: bool,
    /// Sending stops after this, whatever is left.
    pub max_duration: Duration,
    pub binary: Option<std::path::PathBuf>,
    pub fsync: Fsync,
}

/// What one destination got.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OrderFigures {
    pub destination: String,
    /// Messages answered 200 by ingest (each must arrive).
    pub expected: u64,
    /// Distinct messages received (of those expected).
    pub delivered: u64,
    pub missing: u64,
    /// Every 2xx delivery, repeats included.
    pub deliveries: u64,
    /// A message delivered again right after itself (the at-least-once window).
    pub adjacent_repeats: u64,
    /// Deliveries that came after a later message of their conversation.
    pub out_of_order: u64,
    pub conversations_out_of_order: u64,
    /// Distinct messages delivered per second, from the first send to the last new delivery.
    pub events_per_second: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct OrderedReport {
    pub conversations: usize,
    pub messages_per_conversation: usize,
    pub answered_200: u64,
    pub sending_s: f64,
    pub ordered: OrderFigures,
    pub unordered: OrderFigures,
    /// Ordered events per second against unordered ones.
    pub ratio: f64,
    pub dead_lettered: u64,
    pub notes: Vec<String>,
}

/// A connection to ingest, kept for the next request.
type Connection = hyper::client::conn::http1::SendRequest<http_body_util::Full<Bytes>>;

const PHONE: &str = "16505551234";
const TEXT: &str = "Does it come in another color?";

fn message_id(c: usize, k: usize) -> String {
    format!("wamid.o{c}.m{k}")
}

/// (conversation, message number) of a message id this run wrote.
fn parse_message_id(id: &str) -> Option<(usize, usize)> {
    let rest = id.strip_prefix("wamid.o")?;
    let (c, k) = rest.split_once(".m")?;
    Some((c.parse().ok()?, k.parse().ok()?))
}

fn webhook(t: &Template, c: usize, k: usize, public_url: &str, now: i64) -> Webhook {
    let body = t.body.replace(&t.id_in_body, &message_id(c, k)).replace(PHONE, &format!("1555{c:07}")).replace(TEXT, &format!("m{k}"));
    let path = format!("/webhooks/{}", t.channel_id);
    let url = format!("{public_url}{path}");
    let mut headers = hookline_ingest::sign::signature_headers(t.source, &secret_for(t.source), body.as_bytes(), &url, now);
    headers.push(("Content-Type".into(), t.content_type.into()));
    Webhook { path, headers, body: Bytes::from(body), event_ids: Vec::new() }
}

/// Checks one sink's arrival order against the send order.
pub fn check_order(destination: &str, sequence: &[(String, String)], expected: &HashSet<(usize, usize)>) -> OrderFigures {
    let mut figures = OrderFigures { destination: destination.to_string(), expected: expected.len() as u64, ..Default::default() };
    let mut seen: HashSet<(usize, usize)> = HashSet::new();
    // Per conversation: the highest message number received, and the last one.
    let mut state: HashMap<usize, (usize, usize)> = HashMap::new();
    let mut disordered: HashSet<usize> = HashSet::new();
    for (_, id) in sequence {
        let Some((c, k)) = parse_message_id(id) else { continue };
        figures.deliveries += 1;
        seen.insert((c, k));
        match state.get_mut(&c) {
            None => {
                state.insert(c, (k, k));
            }
            Some((max, last)) => {
                if k == *last {
                    figures.adjacent_repeats += 1;
                } else if k < *max {
                    figures.out_of_order += 1;
                    disordered.insert(c);
                }
                *max = (*max).max(k);
                *last = k;
            }
        }
    }
    figures.delivered = expected.iter().filter(|m| seen.contains(m)).count() as u64;
    figures.missing = figures.expected - figures.delivered;
    figures.conversations_out_of_order = disordered.len() as u64;
    figures
}

/// Runs it.
pub async fn run(opts: &OrderedOptions) -> Result<OrderedReport, String> {
    let template = workload::templates()?
        .into_iter()
        .find(|t| t.source == Source::Whatsapp && t.body.contains(TEXT))
        .ok_or("the WhatsApp text fixture is missing")?;
    let mut stack = Stack::start(opts.binary.as_deref(), false, opts.fsync, false)?;
    stack.write_channels(std::slice::from_ref(&template)).await?;
    let ingest_port = stack.spawn_ingest()?;
    let (ordered_port, unordered_port) = (stack.spawn_sink()?, stack.spawn_sink()?);
    let url = |port: u16| format!("http://127.0.0.1:{port}/events");
    stack
        .write_destination_specs(&[
            ("ordered".into(), url(ordered_port), Ordering::Conversation),
            ("unordered".into(), url(unordered_port), Ordering::None),
        ])
        .await?;
    for n in 0..opts.normalizers {
        stack.spawn_normalizer(n)?;
    }
    for n in 0..opts.forwarders {
        stack.spawn_forwarder(n, None)?;
    }
    wait_http_ok(&format!("http://127.0.0.1:{ingest_port}/readyz"), Duration::from_secs(30)).await?;
    for port in [ordered_port, unordered_port] {
        wait_http_ok(&format!("http://127.0.0.1:{port}/healthz"), Duration::from_secs(30)).await?;
    }
    let notes: Arc<Mutex<Vec<String>>> = Arc::default();
    let note = |s: String| notes.lock().unwrap_or_else(|p| p.into_inner()).push(s);
    if let Some(ratio) = opts.fail_ratio {
        for port in [ordered_port, unordered_port] {
            let body = format!(r#"{{"status":500,"ratio":{ratio}}}"#);
            if http_post(&format!("http://127.0.0.1:{port}/_sink/fail"), &body).await.is_none_or(|(s, _)| s != 200) {
                return Err("cannot make the sinks fail".into());
            }
        }
        note(format!("both targets answer 500 to {:.0} % of deliveries at random while messages are sent", ratio * 100.0));
    }
    // Give the forwarders a moment to set up both destinations' consumers (they start from the
    // destinations' creation time, so nothing is missed either way).
    tokio::time::sleep(Duration::from_millis(500)).await;

    let stack = Arc::new(Mutex::new(stack));
    let started = Instant::now();
    let deadline = started + opts.max_duration;
    let total = (opts.conversations * opts.messages) as u64;
    let answered = Arc::new(AtomicU64::new(0));
    let accepted: Arc<Mutex<HashSet<(usize, usize)>>> = Arc::default();
    let pool: Arc<Mutex<Vec<Option<Connection>>>> = Arc::new(Mutex::new((0..opts.concurrency.max(1)).map(|_| None).collect()));
    let permits = Arc::new(tokio::sync::Semaphore::new(opts.concurrency.max(1)));
    let target = SocketAddr::from(([127, 0, 0, 1], ingest_port));
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut senders = Vec::new();
    for c in 0..opts.conversations {
        let (template, answered, accepted, pool, permits) =
            (template.clone(), answered.clone(), accepted.clone(), pool.clone(), permits.clone());
        let messages = opts.messages;
        senders.push(tokio::spawn(async move {
            for k in 0..messages {
                let hook = webhook(&template, c, k, "http://localhost:8080", now);
                // The next message of a conversation goes only once this one was answered 200.
                loop {
                    if Instant::now() > deadline {
                        return;
                    }
                    let Ok(_permit) = permits.acquire().await else { return };
                    let mut sender = pool.lock().unwrap_or_else(|p| p.into_inner()).pop().flatten();
                    let status = send(&mut sender, target, &hook).await;
                    pool.lock().unwrap_or_else(|p| p.into_inner()).push(sender);
                    if status == 200 {
                        answered.fetch_add(1, AtomicOrdering::Relaxed);
                        accepted.lock().unwrap_or_else(|p| p.into_inner()).insert((c, k));
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }));
    }
    // The fault: one forwarder SIGKILLed once a third was answered, started again a second later.
    let injector = {
        let (stack, answered, notes) = (stack.clone(), answered.clone(), notes.clone());
        let kill = opts.kill_forwarder;
        tokio::spawn(async move {
            if !kill {
                return;
            }
            while answered.load(AtomicOrdering::Relaxed) < total / 3 {
                if Instant::now() > deadline {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // The process that delivers the ordered destination: the holder of its lease.
            let owner = lease_holder(&stack).await;
            let killed = {
                let mut s = stack.lock().unwrap_or_else(|p| p.into_inner());
                let owner_at = owner.and_then(|pid| s.roles.iter().position(|r| r.pid() == pid));
                match owner_at.or_else(|| s.roles.iter().position(|r| r.name.starts_with("forwarder"))) {
                    Some(i) => {
                        let name = s.roles[i].name.clone();
                        s.kill_role(i);
                        s.roles.remove(i);
                        Some((name, owner_at.is_some()))
                    }
                    None => None,
                }
            };
            let at = started.elapsed().as_secs_f64();
            tokio::time::sleep(Duration::from_secs(1)).await;
            let Some((name, was_owner)) = killed else {
                notes.lock().unwrap_or_else(|p| p.into_inner()).push("no forwarder to kill".into());
                return;
            };
            let n: usize = name.rsplit('-').next().and_then(|x| x.parse().ok()).unwrap_or(0);
            let restarted = stack.lock().unwrap_or_else(|p| p.into_inner()).spawn_forwarder(n, None);
            let whose = if was_owner { "the ordered destination's owner" } else { "not known to own the ordered destination" };
            notes.lock().unwrap_or_else(|p| p.into_inner()).push(format!(
                "{name} ({whose}) SIGKILLed at {at:.1} s, started again 1 s later ({})",
                restarted.err().unwrap_or_else(|| "ok".into())
            ));
        })
    };
    for s in senders {
        let _ = s.await;
    }
    let sending_s = started.elapsed().as_secs_f64();
    let _ = injector.await;
    if opts.fail_ratio.is_some() {
        for port in [ordered_port, unordered_port] {
            let _ = http_post(&format!("http://127.0.0.1:{port}/_sink/fail"), r#"{"status":0}"#).await;
        }
        note(format!("targets answer 200 again from {sending_s:.1} s"));
    }
    let expected = std::mem::take(&mut *accepted.lock().unwrap_or_else(|p| p.into_inner()));

    // Drain: until both sinks have every message, or nothing new for 30 s (2 minutes at most).
    let mut last: BTreeMap<u16, (u64, Duration)> = BTreeMap::new();
    let drain_started = Instant::now();
    loop {
        let mut done = true;
        let mut moved = false;
        for port in [ordered_port, unordered_port] {
            let unique = unique(port).await;
            let entry = last.entry(port).or_insert((0, started.elapsed()));
            if unique > entry.0 {
                *entry = (unique, started.elapsed());
                moved = true;
            }
            done &= unique >= expected.len() as u64;
        }
        if done {
            break;
        }
        let since_last = last.values().map(|(_, at)| *at).max().unwrap_or_default();
        if !moved && started.elapsed().saturating_sub(since_last) > Duration::from_secs(30)
            || drain_started.elapsed() > Duration::from_secs(120)
        {
            note("drain stopped: nothing new for 30 s, or 2 minutes".into());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut figures = Vec::new();
    for (name, port) in [("ordered", ordered_port), ("unordered", unordered_port)] {
        let sequence: Vec<(String, String)> = match http_get(&format!("http://127.0.0.1:{port}/_sink/sequence")).await {
            Some((200, body)) => serde_json::from_slice(&body).map_err(|e| format!("sink sequence: {e}"))?,
            other => return Err(format!("sink {name}: /_sink/sequence answered {:?}", other.map(|(s, _)| s))),
        };
        let mut f = check_order(name, &sequence, &expected);
        let span = last.get(&port).map_or(0.0, |(_, at)| at.as_secs_f64()).max(1e-9);
        f.events_per_second = f.delivered as f64 / span;
        figures.push(f);
    }
    let dead_lettered = dead_letters(&stack).await;
    let unordered = figures.pop().unwrap_or_default();
    let ordered = figures.pop().unwrap_or_default();
    let ratio = if unordered.events_per_second > 0.0 { ordered.events_per_second / unordered.events_per_second } else { 0.0 };
    let notes = std::mem::take(&mut *notes.lock().unwrap_or_else(|p| p.into_inner()));
    Ok(OrderedReport {
        conversations: opts.conversations,
        messages_per_conversation: opts.messages,
        answered_200: answered.load(AtomicOrdering::Relaxed),
        sending_s,
        ordered,
        unordered,
        ratio,
        dead_lettered,
        notes,
    })
}

async fn unique(port: u16) -> u64 {
    match http_get(&format!("http://127.0.0.1:{port}/_sink/stats")).await {
        Some((200, body)) => serde_json::from_slice::<serde_json::Value>(&body).ok().and_then(|v| v["unique"].as_u64()).unwrap_or(0),
        _ => 0,
    }
}

/// The pid of the forwarder holding the ordered destination's lease (its value is `<pid>-<random>`).
async fn lease_holder(stack: &Arc<Mutex<Stack>>) -> Option<u32> {
    let url = stack.lock().unwrap_or_else(|p| p.into_inner()).url();
    let client = async_nats::connect(hookline_shared::jetstream::server_addrs(&url).ok()?).await.ok()?;
    let js = async_nats::jetstream::new(client);
    let store = js.get_key_value(hookline_shared::names::ORDER_LEASES_BUCKET).await.ok()?;
    let value = store.get("ordered").await.ok()??;
    std::str::from_utf8(&value).ok()?.split('-').next()?.parse().ok()
}

async fn dead_letters(stack: &Arc<Mutex<Stack>>) -> u64 {
    let url = stack.lock().unwrap_or_else(|p| p.into_inner()).url();
    let Ok(addrs) = hookline_shared::jetstream::server_addrs(&url) else { return 0 };
    let Ok(client) = async_nats::connect(addrs).await else { return 0 };
    let js = async_nats::jetstream::new(client);
    match js.get_stream(hookline_shared::names::DLQ_STREAM).await {
        Ok(mut s) => s.info().await.map(|i| i.state.messages).unwrap_or(0),
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(ids: &[(usize, usize)]) -> Vec<(String, String)> {
        ids.iter().map(|(c, k)| (format!("conv{c}"), message_id(*c, *k))).collect()
    }

    #[test]
    fn message_ids_round_trip() {
        assert_eq!(parse_message_id(&message_id(12, 7)), Some((12, 7)));
        assert_eq!(parse_message_id("wamid.other"), None);
    }

    #[test]
    fn the_check_counts_disorder_and_allows_only_adjacent_repeats() {
        let expected: HashSet<_> = [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)].into_iter().collect();
        // In order, one adjacent repeat, conversations interleaved.
        let good = check_order("d", &seq(&[(0, 0), (1, 0), (0, 1), (0, 1), (1, 1), (0, 2)]), &expected);
        assert_eq!((good.delivered, good.missing, good.out_of_order, good.adjacent_repeats), (5, 0, 0, 1));
        // 0/1 after 0/2; 1/0 again after 1/1 (a repeat that is not adjacent); 1/1 missing is not.
        let bad = check_order("d", &seq(&[(0, 0), (0, 2), (0, 1), (1, 0), (1, 1), (1, 0)]), &expected);
        assert_eq!((bad.out_of_order, bad.conversations_out_of_order, bad.adjacent_repeats), (2, 2, 0));
        let partial = check_order("d", &seq(&[(0, 0), (0, 1)]), &expected);
        assert_eq!((partial.delivered, partial.missing), (2, 3));
    }
}
