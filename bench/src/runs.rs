//! The runs: `ingest` (hookline's ingest under load), `baseline` (the thinnest path, same load),
//! and `e2e` (ingest → normalizer → forwarder → sink, with N processes per worker role and an
//! optional fault), each reported with figures and, for e2e, a ledger.

use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::PullConsumer;
use hookline_shared::names;
use sink_view::SinkStatsView;

use crate::load::{self, LoadResult, LoadSpec};
use crate::procs::{cpu_seconds, http_get, http_post, rss_mib, secret_for, wait_http_ok, Stack};
use crate::workload::{self, Template};

mod sink_view {
    //! The sink's `/_sink/stats` answer, read as JSON from the sink process.
    use serde::Deserialize;

    #[derive(Debug, Clone, Default, Deserialize)]
    pub struct Latency {
        pub p50: f64,
        pub p99: f64,
    }

    #[derive(Debug, Clone, Default, Deserialize)]
    pub struct SinkStatsView {
        pub unique: u64,
        pub duplicates: u64,
        pub bad_signature: u64,
        pub latency_ms: Option<Latency>,
    }
}

#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub concurrency: usize,
    pub rate: Option<f64>,
    pub duration: Duration,
    pub max_requests: u64,
    /// The `hookline` binary to run roles with (default: this executable).
    pub binary: Option<std::path::PathBuf>,
    /// The nats-server's fsync policy: `Always` (what hookline ships) or `Lazy` (its default).
    pub fsync: hookline_shared::servers::Fsync,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    /// SIGKILL the nats-server, restart it a few seconds later.
    NatsKill,
    /// SIGKILL a normalizer every few seconds, and start it again.
    NormalizerKill,
    /// SIGKILL a forwarder every few seconds, and start it again.
    ForwarderKill,
    /// The target answers 500 during the middle third of the run.
    Target500,
    /// On a 3-node cluster with streams replicated three times, SIGKILL one node and restart it.
    ClusterNodeKill,
    /// The nats-server's store on a filesystem that forgets unsynced writes: SIGKILL the server,
    /// drop what it did not fsync (a power cut), then mount again and restart it (the reboot).
    PowerCut,
}

impl std::str::FromStr for Fault {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "nats-kill" => Ok(Fault::NatsKill),
            "normalizer-kill" => Ok(Fault::NormalizerKill),
            "forwarder-kill" => Ok(Fault::ForwarderKill),
            "target-500" => Ok(Fault::Target500),
            "cluster-node-kill" => Ok(Fault::ClusterNodeKill),
            "power-cut" => Ok(Fault::PowerCut),
            other => Err(format!(
                "unknown fault {other:?}: expected nats-kill, cluster-node-kill, power-cut, normalizer-kill, forwarder-kill or target-500"
            )),
        }
    }
}

fn spec(opts: &LoadOptions, target: SocketAddr) -> LoadSpec {
    LoadSpec { target, concurrency: opts.concurrency, rate: opts.rate, duration: opts.duration, max_requests: opts.max_requests }
}

fn progress_line(label: &'static str) -> impl Fn(u64, u64) + Sync {
    use std::io::{IsTerminal, Write};
    let tty = std::io::stderr().is_terminal();
    move |sent, second| {
        if tty {
            eprint!("\r{label}: {second:>3} s, {sent} sent");
            let _ = std::io::stderr().flush();
        }
    }
}

fn end_progress() {
    use std::io::IsTerminal;
    if std::io::stderr().is_terminal() {
        eprintln!();
    }
}

/// hookline's ingest with its own nats-server, or the ingest at `url`.
pub async fn ingest(opts: &LoadOptions, url: Option<SocketAddr>) -> Result<LoadResult, String> {
    let templates = workload::templates()?;
    let (_stack, target, public) = match url {
        Some(addr) => (None, addr, format!("http://{addr}")),
        None => {
            let mut stack = Stack::start(opts.binary.as_deref(), false, opts.fsync, false)?;
            stack.write_channels(&templates).await?;
            let port = stack.spawn_ingest()?;
            wait_http_ok(&format!("http://127.0.0.1:{port}/readyz"), Duration::from_secs(30)).await?;
            (Some(stack), SocketAddr::from(([127, 0, 0, 1], port)), "http://localhost:8080".to_string())
        }
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let t = templates.clone();
    let make = move |n| workload::webhook(&t, n, &public, &|s| secret_for(s), now);
    let result = load::run(&spec(opts, target), make, false, &progress_line("ingest")).await;
    end_progress();
    Ok(result)
}

/// The baseline server with its own nats-server.
pub async fn baseline(opts: &LoadOptions) -> Result<LoadResult, String> {
    let templates = workload::templates()?;
    let mut stack = Stack::start(opts.binary.as_deref(), false, opts.fsync, false)?;
    stack.write_channels(&templates).await?;
    let port = stack.spawn_baseline()?;
    wait_http_ok(&format!("http://127.0.0.1:{port}/ready"), Duration::from_secs(30)).await?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let t = templates.clone();
    let make = move |n| workload::webhook(&t, n, "http://localhost:8080", &|s| secret_for(s), now);
    let result = load::run(&spec(opts, SocketAddr::from(([127, 0, 0, 1], port))), make, false, &progress_line("baseline")).await;
    end_progress();
    Ok(result)
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct LagSample {
    pub second: f64,
    pub normalizer_pending: u64,
    pub forwarder_pending: u64,
    pub delivered: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Ledger {
    pub sent: u64,
    pub answered_200: u64,
    /// Events of webhooks answered 200.
    pub expected_events: u64,
    pub delivered: u64,
    pub in_dlq: u64,
    pub duplicates: u64,
    /// Deliveries the sink refused for a bad signature (must be 0).
    pub bad_signatures: u64,
    pub lost: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct E2eReport {
    pub fault: Option<Fault>,
    pub normalizers: usize,
    pub forwarders: usize,
    /// Destinations, each receiving every event.
    pub destinations: usize,
    /// Whether the delivery log and the lookup index were written.
    pub attempts_log: bool,
    /// Records stored in HOOKLINE_ATTEMPTS and HOOKLINE_INDEX at the end.
    pub attempt_records: u64,
    pub index_entries: u64,
    /// Per destination: events received and the ingest→sink latency there.
    pub per_destination: Vec<DestinationFigures>,
    /// Raw webhooks in HOOKLINE_RAW at the end: at least every one answered 200, unless the
    /// store lost some (0 when the stream itself is gone).
    pub raw_stored: u64,
    pub load: LoadResult,
    pub ledger: Ledger,
    /// Events delivered per second, from the first request to the last delivery.
    pub delivered_per_second: f64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub lag: Vec<LagSample>,
    /// Peak resident memory per role, MiB.
    pub rss_mib: BTreeMap<String, f64>,
    /// CPU seconds used by each role (all its processes, restarts included) and nats-server.
    pub cpu_s: BTreeMap<String, f64>,
    /// CPU milliseconds of the pipeline (nats-server, ingest, normalizers, forwarders; not the
    /// sink or the load) per delivery: steadier than throughput on a shared machine.
    pub cpu_ms_per_event: f64,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DestinationFigures {
    pub destination: String,
    pub delivered: u64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
}

/// The fewest unique events any of the sinks has: what every destination has received.
async fn min_unique(ports: &[u16]) -> u64 {
    let mut least = u64::MAX;
    for port in ports {
        least = least.min(sink_stats(*port).await.map_or(0, |s| s.unique));
    }
    if least == u64::MAX {
        0
    } else {
        least
    }
}

/// The event ids every sink received.
async fn delivered_everywhere(ports: &[u16]) -> HashSet<String> {
    let mut delivered: Option<HashSet<String>> = None;
    for port in ports {
        let ids: HashSet<String> = match http_get(&format!("http://127.0.0.1:{port}/_sink/ids")).await {
            Some((200, body)) => serde_json::from_slice::<Vec<String>>(&body).unwrap_or_default().into_iter().collect(),
            _ => HashSet::new(),
        };
        delivered = Some(match delivered {
            Some(all) => all.intersection(&ids).cloned().collect(),
            None => ids,
        });
    }
    delivered.unwrap_or_default()
}

async fn sink_stats(port: u16) -> Option<SinkStatsView> {
    let (_, body) = http_get(&format!("http://127.0.0.1:{port}/_sink/stats")).await?;
    serde_json::from_slice(&body).ok()
}

/// What the destinations' consumers still hold.
async fn forward_pending(js: &async_nats::jetstream::Context, destinations: usize) -> u64 {
    if destinations == 1 {
        return pending(js, names::EVENTS_STREAM, names::FORWARDER_CONSUMER).await;
    }
    let mut total = 0;
    for i in 1..=destinations {
        total += pending(js, names::EVENTS_STREAM, &hookline_shared::destination::consumer_name(&format!("d{i}"))).await;
    }
    total
}

async fn pending(js: &async_nats::jetstream::Context, stream: &str, consumer: &str) -> u64 {
    let Ok(s) = js.get_stream(stream).await else { return 0 };
    let Ok(mut c) = s.get_consumer::<async_nats::jetstream::consumer::pull::Config>(consumer).await else { return 0 };
    let c: &mut PullConsumer = &mut c;
    c.info().await.map(|i| i.num_pending + i.num_ack_pending as u64).unwrap_or(0)
}

/// For a run that lost events: where each lost event is (stored in `HOOKLINE_EVENTS` or not, by
/// its id) and what the consumers hold, so that a failure says which stage kept it.
async fn explain_lost(js: &async_nats::jetstream::Context, lost: &[&String], destinations: usize) -> Vec<String> {
    let mut notes = Vec::new();
    let wanted: HashSet<&str> = lost.iter().take(20).map(|s| s.as_str()).collect();
    let mut found: BTreeMap<String, u64> = BTreeMap::new();
    if let Ok(mut stream) = js.get_stream(names::EVENTS_STREAM).await {
        let (first, last) = stream.info().await.map(|i| (i.state.first_sequence, i.state.last_sequence)).unwrap_or((1, 0));
        // Bounded: a long run's stream is read from its last 50,000 messages.
        let first = first.max(last.saturating_sub(50_000));
        if first > 1 {
            notes.push(format!("(lost events looked for in {} from {first} to {last} only)", names::EVENTS_STREAM));
        }
        for seq in first..=last {
            let Ok(msg) = stream.get_raw_message(seq).await else { continue };
            let id = serde_json::from_slice::<serde_json::Value>(&msg.payload)
                .ok()
                .and_then(|v| v.get("id").and_then(|x| x.as_str()).map(str::to_string));
            if let Some(id) = id.filter(|id| wanted.contains(id.as_str())) {
                found.insert(id, seq);
            }
        }
    }
    for id in lost.iter().take(20) {
        match found.get(id.as_str()) {
            Some(seq) => notes.push(format!("lost {id}: stored in {} at {seq}, not delivered", names::EVENTS_STREAM)),
            None => notes.push(format!("lost {id}: not in {}", names::EVENTS_STREAM)),
        }
    }
    let mut consumers = vec![(names::RAW_STREAM, names::NORMALIZER_CONSUMER.to_string())];
    if destinations == 1 {
        consumers.push((names::EVENTS_STREAM, names::FORWARDER_CONSUMER.to_string()));
    } else {
        for i in 1..=destinations {
            consumers.push((names::EVENTS_STREAM, hookline_shared::destination::consumer_name(&format!("d{i}"))));
        }
    }
    for (stream, consumer) in consumers {
        let Ok(s) = js.get_stream(stream).await else { continue };
        let Ok(mut c) = s.get_consumer::<async_nats::jetstream::consumer::pull::Config>(&consumer).await else {
            notes.push(format!("consumer {consumer}: not found"));
            continue;
        };
        let c: &mut PullConsumer = &mut c;
        if let Ok(i) = c.info().await {
            notes.push(format!(
                "consumer {consumer} on {stream}: delivered stream seq {}, ack floor stream seq {}, pending {}, ack pending {}, redelivered {}",
                i.delivered.stream_sequence, i.ack_floor.stream_sequence, i.num_pending, i.num_ack_pending, i.num_redelivered
            ));
        }
    }
    for stream in [names::RAW_STREAM, names::EVENTS_STREAM] {
        if let Ok(mut s) = js.get_stream(stream).await {
            if let Ok(i) = s.info().await {
                notes.push(format!(
                    "{stream}: {} messages, sequences {} to {}",
                    i.state.messages, i.state.first_sequence, i.state.last_sequence
                ));
            }
        }
    }
    notes
}

/// Ids in the DLQ: event ids of forward-stage letters; normalize-stage letters counted by raw body.
async fn dlq_event_ids(js: &async_nats::jetstream::Context) -> Result<HashSet<String>, String> {
    let mut ids = HashSet::new();
    let Ok(mut stream) = js.get_stream(names::DLQ_STREAM).await else { return Ok(ids) };
    let last = stream.info().await.map_err(|e| e.to_string())?.state.last_sequence;
    for seq in 1..=last {
        if let Ok(msg) = stream.get_raw_message(seq).await {
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&msg.payload) {
                if let Some(id) = v.get("id").and_then(|x| x.as_str()) {
                    ids.insert(id.to_string());
                }
            }
        }
    }
    Ok(ids)
}

/// Ingest, `normalizers` and `forwarders` processes and a sink, under load, with a fault.
/// `destinations`: 1, the destination `default` (`forwarder.target_url`); more, that many
/// destinations in the bucket, each receiving every event at a sink of its own.
pub async fn e2e(
    opts: &LoadOptions,
    normalizers: usize,
    forwarders: usize,
    fault: Option<Fault>,
    destinations: usize,
    attempts_log: bool,
) -> Result<E2eReport, String> {
    let destinations = destinations.max(1);
    let templates: Vec<Template> = workload::templates()?;
    let mut stack =
        Stack::start(opts.binary.as_deref(), fault == Some(Fault::ClusterNodeKill), opts.fsync, fault == Some(Fault::PowerCut))?;
    stack.attempts_log = attempts_log;
    stack.write_channels(&templates).await?;
    let ingest_port = stack.spawn_ingest()?;
    let mut sink_ports = Vec::new();
    for _ in 0..destinations {
        sink_ports.push(stack.spawn_sink()?);
    }
    let sink_port = sink_ports[0];
    let target = format!("http://127.0.0.1:{sink_port}/events");
    // One destination: `default`; more: the bucket's, and no default.
    let default_target = if destinations == 1 { Some(target.clone()) } else { None };
    if destinations > 1 {
        let urls: Vec<String> = sink_ports.iter().map(|p| format!("http://127.0.0.1:{p}/events")).collect();
        stack.write_destinations(&urls).await?;
    }
    for n in 0..normalizers {
        stack.spawn_normalizer(n)?;
    }
    for n in 0..forwarders {
        stack.spawn_forwarder(n, default_target.as_deref())?;
    }
    wait_http_ok(&format!("http://127.0.0.1:{ingest_port}/readyz"), Duration::from_secs(30)).await?;
    for port in &sink_ports {
        wait_http_ok(&format!("http://127.0.0.1:{port}/healthz"), Duration::from_secs(30)).await?;
    }
    let client = async_nats::ConnectOptions::new()
        .max_reconnects(None)
        .connect(hookline_shared::jetstream::server_addrs(&stack.url())?)
        .await
        .map_err(|e| e.to_string())?;
    let js = async_nats::jetstream::new(client);

    let started = Instant::now();
    let stack = Arc::new(Mutex::new(stack));
    let stop = tokio_util::sync::CancellationToken::new();
    let lag: Arc<Mutex<Vec<LagSample>>> = Arc::default();
    let rss: Arc<Mutex<BTreeMap<String, f64>>> = Arc::default();
    let notes: Arc<Mutex<Vec<String>>> = Arc::default();
    // CPU seconds by process: its role and the last reading.
    let cpu: Arc<Mutex<BTreeMap<u32, (String, f64)>>> = Arc::default();

    // Sampler: consumer lag, deliveries and memory, twice a second.
    let sampler = {
        let (js, stack, stop, lag, rss, cpu) = (js.clone(), stack.clone(), stop.clone(), lag.clone(), rss.clone(), cpu.clone());
        let sink_ports = sink_ports.clone();
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                let sample = LagSample {
                    second: started.elapsed().as_secs_f64(),
                    normalizer_pending: pending(&js, names::RAW_STREAM, names::NORMALIZER_CONSUMER).await,
                    forwarder_pending: forward_pending(&js, destinations).await,
                    delivered: min_unique(&sink_ports).await,
                };
                lag.lock().unwrap_or_else(|p| p.into_inner()).push(sample);
                let (roles, servers): (Vec<(String, u32)>, Vec<u32>) = {
                    let s = stack.lock().unwrap_or_else(|p| p.into_inner());
                    (s.roles.iter().map(|r| (r.name.clone(), r.pid())).collect(), s.nats.iter().filter_map(|n| n.pid()).collect())
                };
                {
                    let mut used = cpu.lock().unwrap_or_else(|p| p.into_inner());
                    let named = roles.iter().map(|(n, p)| (n.split('-').next().unwrap_or(n).to_string(), *p));
                    for (role, pid) in named.chain(servers.iter().map(|p| ("nats-server".to_string(), *p))) {
                        if let Some(seconds) = cpu_seconds(pid) {
                            used.insert(pid, (role, seconds));
                        }
                    }
                }
                {
                    let mut peak = rss.lock().unwrap_or_else(|p| p.into_inner());
                    for (name, pid) in roles {
                        let role = name.split('-').next().unwrap_or(&name).to_string();
                        let m = rss_mib(pid);
                        let entry = peak.entry(role).or_insert(0.0);
                        *entry = entry.max(m);
                    }
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };

    // Fault injector.
    let injector = {
        let (stack, stop, notes) = (stack.clone(), stop.clone(), notes.clone());
        let third = opts.duration / 3;
        let default_target = default_target.clone();
        tokio::spawn(async move {
            let note = |s: String| notes.lock().unwrap_or_else(|p| p.into_inner()).push(s);
            let Some(fault) = fault else { return };
            tokio::time::sleep(third).await;
            match fault {
                Fault::NatsKill | Fault::ClusterNodeKill => {
                    let node = if fault == Fault::ClusterNodeKill { 1 } else { 0 };
                    if let Some(n) = stack.lock().unwrap_or_else(|p| p.into_inner()).nats.get_mut(node) {
                        n.kill();
                    }
                    note(format!("nats-server node {} SIGKILLed at {:.1} s", node + 1, started.elapsed().as_secs_f64()));
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    let restarted = tokio::task::block_in_place(|| {
                        stack.lock().unwrap_or_else(|p| p.into_inner()).nats.get_mut(node).map(|n| n.restart())
                    });
                    let outcome = match restarted {
                        Some(Ok(())) => "ok".to_string(),
                        Some(Err(e)) => e.to_string(),
                        None => "no such node".to_string(),
                    };
                    note(format!("nats-server node {} restarted at {:.1} s: {outcome}", node + 1, started.elapsed().as_secs_f64()));
                }
                Fault::PowerCut => {
                    let cut = tokio::task::block_in_place(|| stack.lock().unwrap_or_else(|p| p.into_inner()).cut_power());
                    match cut {
                        Ok(bytes) => note(format!(
                            "power cut at {:.1} s: nats-server SIGKILLed, {bytes} unsynced bytes of its store forgotten",
                            started.elapsed().as_secs_f64()
                        )),
                        Err(e) => note(format!("power cut failed: {e}")),
                    }
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    let rebooted = tokio::task::block_in_place(|| stack.lock().unwrap_or_else(|p| p.into_inner()).reboot());
                    note(format!(
                        "rebooted at {:.1} s: {}",
                        started.elapsed().as_secs_f64(),
                        rebooted.err().unwrap_or_else(|| "store mounted again, nats-server restarted".into())
                    ));
                }
                Fault::NormalizerKill | Fault::ForwarderKill => {
                    let prefix = if fault == Fault::NormalizerKill { "normalizer" } else { "forwarder" };
                    let mut kills = 0;
                    while !stop.is_cancelled() && started.elapsed() < third * 2 {
                        {
                            let mut s = stack.lock().unwrap_or_else(|p| p.into_inner());
                            if let Some(i) = s.roles.iter().position(|r| r.name.starts_with(prefix)) {
                                let name = s.roles[i].name.clone();
                                s.kill_role(i);
                                s.roles.remove(i);
                                let n: usize = name.rsplit('-').next().and_then(|x| x.parse().ok()).unwrap_or(0);
                                let restarted = if prefix == "normalizer" {
                                    s.spawn_normalizer(n)
                                } else {
                                    s.spawn_forwarder(n, default_target.as_deref())
                                };
                                if let Err(e) = restarted {
                                    note(format!("cannot restart {name}: {e}"));
                                }
                                kills += 1;
                            }
                        }
                        tokio::time::sleep(Duration::from_secs(2)).await;
                    }
                    note(format!("{prefix} processes SIGKILLed and restarted {kills} times"));
                }
                Fault::Target500 => {
                    let body = format!(r#"{{"status":500,"for_s":{}}}"#, third.as_secs_f64());
                    let ok = http_post(&format!("http://127.0.0.1:{sink_port}/_sink/fail"), &body).await.is_some_and(|(s, _)| s == 200);
                    note(format!(
                        "target answers 500 for {:.0} s from {:.1} s (set: {ok})",
                        third.as_secs_f64(),
                        started.elapsed().as_secs_f64()
                    ));
                }
            }
        })
    };

    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let t = templates.clone();
    let make = move |n| workload::webhook(&t, n, "http://localhost:8080", &|s| secret_for(s), now);
    let load_result = load::run(&spec(opts, SocketAddr::from(([127, 0, 0, 1], ingest_port))), make, true, &progress_line("e2e")).await;
    end_progress();
    let _ = injector.await;

    // Drain: until every expected event is delivered or dead-lettered, or nothing moves for 20 s.
    let expected: HashSet<String> = load_result.accepted_event_ids.iter().cloned().collect();
    let mut last_progress = (Instant::now(), 0u64);
    let mut last_delivery_at = started.elapsed();
    let mut counts_met_early = false;
    loop {
        let delivered = min_unique(&sink_ports).await;
        let dlq = dlq_event_ids(&js).await.map(|d| d.len() as u64).unwrap_or(0);
        if delivered > last_progress.1 {
            last_progress = (Instant::now(), delivered);
            last_delivery_at = started.elapsed();
        }
        // The counts include events of webhooks stored but not answered 200 (the client gave up
        // during a fault), so they only say when to compare the ids, which decide.
        if delivered + dlq >= expected.len() as u64 {
            let at_all = delivered_everywhere(&sink_ports).await;
            let dlq_ids = dlq_event_ids(&js).await.unwrap_or_default();
            let missing = expected.iter().filter(|id| !at_all.contains(*id) && !dlq_ids.contains(*id)).count();
            if missing == 0 {
                break;
            }
            if !counts_met_early {
                counts_met_early = true;
                notes.lock().unwrap_or_else(|p| p.into_inner()).push(format!(
                    "at {:.1} s as many events arrived as expected, but {missing} of the webhooks answered 200 were not in yet (the others came from webhooks stored but not answered 200): draining on",
                    started.elapsed().as_secs_f64()
                ));
            }
        }
        // Stalled: stop only when the consumers hold nothing more (a message whose ack was lost
        // comes back after its ack_wait), or after two minutes in all.
        if last_progress.0.elapsed() > Duration::from_secs(20) {
            let held = pending(&js, names::RAW_STREAM, names::NORMALIZER_CONSUMER).await + forward_pending(&js, destinations).await;
            if held == 0 || last_progress.0.elapsed() > Duration::from_secs(120) {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.cancel();
    let _ = sampler.await;

    let delivered_ids = delivered_everywhere(&sink_ports).await;
    let mut deliveries_total = 0u64;
    for port in &sink_ports {
        deliveries_total += sink_stats(*port).await.map_or(0, |s| s.unique);
    }
    let dlq_ids = dlq_event_ids(&js).await?;
    let stats = sink_stats(sink_port).await.unwrap_or_default();
    let stored = |name: &'static str| {
        let js = js.clone();
        async move {
            match js.get_stream(name).await {
                Ok(mut s) => s.info().await.map(|i| i.state.messages).unwrap_or(0),
                Err(_) => 0,
            }
        }
    };
    let raw_stored = stored(names::RAW_STREAM).await;
    let attempt_records = stored(names::ATTEMPTS_STREAM).await;
    let index_entries = stored(names::INDEX_STREAM).await;
    let mut per_destination = Vec::new();
    for (i, port) in sink_ports.iter().enumerate() {
        let s = sink_stats(*port).await.unwrap_or_default();
        per_destination.push(DestinationFigures {
            destination: if destinations == 1 { "default".to_string() } else { format!("d{}", i + 1) },
            delivered: s.unique,
            latency_p50_ms: s.latency_ms.as_ref().map_or(0.0, |l| l.p50),
            latency_p99_ms: s.latency_ms.as_ref().map_or(0.0, |l| l.p99),
        });
    }
    let delivered = expected.iter().filter(|id| delivered_ids.contains(*id)).count() as u64;
    let in_dlq = expected.iter().filter(|id| !delivered_ids.contains(*id) && dlq_ids.contains(*id)).count() as u64;
    let ledger = Ledger {
        sent: load_result.sent,
        answered_200: load_result.answered_200,
        expected_events: expected.len() as u64,
        delivered,
        in_dlq,
        duplicates: stats.duplicates,
        bad_signatures: stats.bad_signature,
        lost: expected.len() as u64 - delivered - in_dlq,
    };
    if ledger.lost > 0 {
        let lost: Vec<&String> = expected.iter().filter(|id| !delivered_ids.contains(*id) && !dlq_ids.contains(*id)).collect();
        let explained = explain_lost(&js, &lost, destinations).await;
        notes.lock().unwrap_or_else(|p| p.into_inner()).extend(explained);
    }
    let span = last_delivery_at.as_secs_f64().max(1e-9);
    let mut cpu_s: BTreeMap<String, f64> = BTreeMap::new();
    for (role, seconds) in cpu.lock().unwrap_or_else(|p| p.into_inner()).values() {
        *cpu_s.entry(role.clone()).or_insert(0.0) += seconds;
    }
    let pipeline_cpu: f64 = cpu_s.iter().filter(|(role, _)| role.as_str() != "sink").map(|(_, s)| s).sum();
    let report = E2eReport {
        cpu_ms_per_event: if deliveries_total > 0 { pipeline_cpu * 1000.0 / deliveries_total as f64 } else { 0.0 },
        cpu_s,
        fault,
        normalizers,
        forwarders,
        delivered_per_second: deliveries_total as f64 / span,
        destinations,
        attempts_log,
        attempt_records,
        index_entries,
        per_destination,
        raw_stored,
        latency_p50_ms: stats.latency_ms.as_ref().map_or(0.0, |l| l.p50),
        latency_p99_ms: stats.latency_ms.as_ref().map_or(0.0, |l| l.p99),
        lag: std::mem::take(&mut *lag.lock().unwrap_or_else(|p| p.into_inner())),
        rss_mib: std::mem::take(&mut *rss.lock().unwrap_or_else(|p| p.into_inner())),
        notes: std::mem::take(&mut *notes.lock().unwrap_or_else(|p| p.into_inner())),
        load: load_result,
        ledger,
    };
    Ok(report)
}
