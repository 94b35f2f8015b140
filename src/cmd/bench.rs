//! `hookline bench ingest|baseline|e2e`: load against ingest (its own nats-server, or a URL), the
//! same load against the thinnest possible path for a ratio, and end to end with N processes per
//! worker role and an optional fault, reported with a ledger; `e2e --ordering conversation`
//! compares an ordered destination with its unordered twin. `--json` prints one object per run;
//! `--plot FILE.svg` draws the timeline.

use std::net::SocketAddr;
use std::time::Duration;

use hookline_bench::plot::{svg, Series};
use hookline_bench::report::{print_e2e, IngestReport};
use hookline_bench::runs::{self, Fault, LoadOptions};

pub struct BenchLoad {
    pub concurrency: usize,
    pub rate: Option<f64>,
    pub duration_s: f64,
    pub requests: u64,
    pub json: bool,
    pub plot: Option<std::path::PathBuf>,
    pub fsync: hookline_shared::servers::Fsync,
}

impl BenchLoad {
    fn options(&self) -> anyhow::Result<LoadOptions> {
        if self.concurrency == 0 || self.concurrency > 4096 {
            anyhow::bail!("--concurrency must be 1 to 4096");
        }
        if !(0.1..=3600.0).contains(&self.duration_s) {
            anyhow::bail!("--duration-s must be 0.1 to 3600");
        }
        Ok(LoadOptions {
            concurrency: self.concurrency,
            rate: self.rate,
            duration: Duration::from_secs_f64(self.duration_s),
            max_requests: self.requests,
            binary: None,
            fsync: self.fsync,
        })
    }
}

fn write_plot(path: &std::path::Path, content: &str) -> anyhow::Result<()> {
    std::fs::write(path, content).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    eprintln!("plot written to {}", path.display());
    Ok(())
}

fn load_plot(title: &str, r: &hookline_bench::load::LoadResult) -> String {
    svg(
        title,
        "seconds",
        &[
            Series {
                name: "requests/s answered 200",
                colour: "#1f77b4",
                points: r.timeline.iter().map(|s| (s.second as f64, s.ok as f64)).collect(),
            },
            Series {
                name: "p99 latency (ms)",
                colour: "#d62728",
                points: r.timeline.iter().map(|s| (s.second as f64, s.p99_ms)).collect(),
            },
        ],
    )
}

pub async fn ingest(load: BenchLoad, url: Option<SocketAddr>) -> anyhow::Result<()> {
    let opts = load.options()?;
    let result = runs::ingest(&opts, url).await.map_err(anyhow::Error::msg)?;
    let report = IngestReport::new("ingest", &result, None);
    if load.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        report.print();
    }
    if let Some(path) = &load.plot {
        write_plot(path, &load_plot("hookline ingest", &result))?;
    }
    Ok(())
}

pub async fn baseline(load: BenchLoad) -> anyhow::Result<()> {
    let opts = load.options()?;
    let base = runs::baseline(&opts).await.map_err(anyhow::Error::msg)?;
    let ingest = runs::ingest(&opts, None).await.map_err(anyhow::Error::msg)?;
    let report = IngestReport::new("ingest", &ingest, Some(&base));
    if load.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        IngestReport::new("baseline", &base, None).print();
        report.print();
    }
    if let Some(path) = &load.plot {
        write_plot(path, &load_plot("hookline ingest", &ingest))?;
    }
    Ok(())
}

pub async fn e2e(
    load: BenchLoad,
    normalizers: usize,
    forwarders: usize,
    fault: Option<Fault>,
    destinations: usize,
    attempts_log: bool,
) -> anyhow::Result<()> {
    let opts = load.options()?;
    if normalizers == 0 || forwarders == 0 || normalizers > 16 || forwarders > 16 {
        anyhow::bail!("--normalizers and --forwarders must be 1 to 16");
    }
    if destinations == 0 || destinations > 16 {
        anyhow::bail!("--destinations must be 1 to 16");
    }
    let report = runs::e2e(&opts, normalizers, forwarders, fault, destinations, attempts_log).await.map_err(anyhow::Error::msg)?;
    if load.json {
        let mut value = serde_json::to_value(&report)?;
        if let Some(o) = value.as_object_mut() {
            o.insert("requests_per_second".into(), report.load.requests_per_second.into());
            o.insert("p50_ms".into(), report.load.p50_ms.into());
            o.insert("p99_ms".into(), report.load.p99_ms.into());
            o.insert("lost".into(), report.ledger.lost.into());
        }
        println!("{}", serde_json::to_string(&value)?);
    } else {
        print_e2e(&report);
    }
    if let Some(path) = &load.plot {
        let content = svg(
            "hookline end to end",
            "seconds",
            &[
                Series {
                    name: "events delivered (total)",
                    colour: "#2ca02c",
                    points: report.lag.iter().map(|s| (s.second, s.delivered as f64)).collect(),
                },
                Series {
                    name: "consumer lag (messages)",
                    colour: "#ff7f0e",
                    points: report.lag.iter().map(|s| (s.second, (s.normalizer_pending + s.forwarder_pending) as f64)).collect(),
                },
            ],
        );
        write_plot(path, &content)?;
    }
    if report.ledger.lost > 0 {
        anyhow::bail!("{} event(s) of webhooks answered 200 were neither delivered nor dead-lettered", report.ledger.lost);
    }
    Ok(())
}

/// The shape of `e2e --ordering conversation`.
pub struct Conversations {
    pub conversations: usize,
    pub messages: usize,
    pub fail_ratio: Option<f64>,
    pub destinations: usize,
}

/// `e2e --ordering conversation`: an ordered destination and its unordered twin in one run.
pub async fn ordered(
    load: BenchLoad,
    normalizers: usize,
    forwarders: usize,
    fault: Option<Fault>,
    shape: Conversations,
) -> anyhow::Result<()> {
    let base = load.options()?;
    if normalizers == 0 || forwarders == 0 || normalizers > 16 || forwarders > 16 {
        anyhow::bail!("--normalizers and --forwarders must be 1 to 16");
    }
    if shape.conversations == 0 || shape.conversations > 100_000 || shape.messages == 0 || shape.messages > 10_000 {
        anyhow::bail!("--conversations must be 1 to 100000 and --messages 1 to 10000");
    }
    if shape.fail_ratio.is_some_and(|r| !(0.0..1.0).contains(&r)) {
        anyhow::bail!("--fail-ratio must be at least 0 and below 1");
    }
    if shape.destinations != 1 {
        anyhow::bail!("--destinations does not go with --ordering conversation (its two destinations are ordered and unordered)");
    }
    let kill_forwarder = match fault {
        None => false,
        Some(Fault::ForwarderKill) => true,
        Some(other) => anyhow::bail!("--ordering conversation takes --fault forwarder-kill only (and --fail-ratio), not {other:?}"),
    };
    let opts = hookline_bench::ordered::OrderedOptions {
        conversations: shape.conversations,
        messages: shape.messages,
        concurrency: base.concurrency,
        normalizers,
        forwarders,
        fail_ratio: shape.fail_ratio,
        kill_forwarder,
        max_duration: base.duration.max(Duration::from_secs(1)),
        binary: None,
        fsync: base.fsync,
    };
    let report = hookline_bench::ordered::run(&opts).await.map_err(anyhow::Error::msg)?;
    if load.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "ordered delivery: {} conversations x {} messages, {} answered 200 in {:.1} s; {} dead-lettered",
            report.conversations, report.messages_per_conversation, report.answered_200, report.sending_s, report.dead_lettered
        );
        for f in [&report.ordered, &report.unordered] {
            println!(
                "  {:<10} {:>8.0} events/s delivered  {}/{} messages ({} missing)  out of order: {} deliveries in {} conversations  adjacent repeats: {}",
                f.destination, f.events_per_second, f.delivered, f.expected, f.missing, f.out_of_order, f.conversations_out_of_order, f.adjacent_repeats
            );
        }
        println!("  ordered / unordered: {:.2}", report.ratio);
        for n in &report.notes {
            println!("  note: {n}");
        }
    }
    if report.ordered.missing > 0 || report.ordered.out_of_order > 0 {
        anyhow::bail!(
            "the ordered destination missed {} messages and got {} out of order",
            report.ordered.missing,
            report.ordered.out_of_order
        );
    }
    Ok(())
}

/// `bench lookup`: lookups by event id and by message id among `events` stored events.
pub async fn lookup(
    events: u64,
    samples: usize,
    max_fill_s: u64,
    fsync: hookline_shared::servers::Fsync,
    json: bool,
) -> anyhow::Result<()> {
    if !(1_000..=10_000_000).contains(&events) {
        anyhow::bail!("--events must be 1000 to 10000000");
    }
    if !(1..=100_000).contains(&samples) {
        anyhow::bail!("--samples must be 1 to 100000");
    }
    let opts = hookline_bench::lookup::LookupOptions { events, samples, max_fill: Duration::from_secs(max_fill_s), fsync };
    let r = hookline_bench::lookup::run(&opts).await.map_err(anyhow::Error::msg)?;
    if json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "lookup: {} events stored ({} asked) with {} index entries and {} attempt records, filled in {:.0} s ({:.0} events/s)",
            r.events_stored, r.events_asked, r.index_entries, r.attempt_records, r.fill_s, r.fill_events_per_s
        );
        for (what, t) in [("by event id (events show)", &r.by_event_id), ("by message id (events find)", &r.by_message_id)] {
            println!(
                "  {what}: {} lookups, {} found, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                t.samples, t.found, t.p50_ms, t.p99_ms, t.max_ms
            );
        }
    }
    if r.by_event_id.found < r.by_event_id.samples || r.by_message_id.found < r.by_message_id.samples {
        anyhow::bail!("some stored events were not found");
    }
    Ok(())
}

/// The baseline server, run by `bench baseline` as a child process.
pub async fn serve_baseline(nats: String, listen: SocketAddr) -> anyhow::Result<()> {
    let client = async_nats::connect(hookline_shared::jetstream::server_addrs(&nats).map_err(anyhow::Error::msg)?).await?;
    let js = async_nats::jetstream::new(client);
    js.get_or_create_stream(async_nats::jetstream::stream::Config {
        name: "HOOKLINE_BASELINE".into(),
        subjects: vec![hookline_bench::baseline::SUBJECT.into()],
        ..Default::default()
    })
    .await?;
    let listener = tokio::net::TcpListener::bind(listen).await?;
    hookline_bench::baseline::serve(listener, js).await;
    Ok(())
}
