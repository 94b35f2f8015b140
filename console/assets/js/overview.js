// Overview: per stage and per destination the rate, the lag, the dead letters by reason and the
// breaker state, sampled every few seconds; rates come from successive samples (here, in the
// browser), and the graphs show the last minutes of them.

import * as api from "./api.js";
import { badge, clear, el, fmtNum, fmtRate, svg, table } from "./ui.js";

const EVERY_MS = 3000;
const KEEP = 100; // samples: five minutes at three seconds

/** Per-second rate of `value(sample)` between the last two samples. */
function rate(samples, value) {
  if (samples.length < 2) return null;
  const a = samples[samples.length - 2];
  const b = samples[samples.length - 1];
  const va = value(a);
  const vb = value(b);
  if (va === null || vb === null || va === undefined || vb === undefined) return null;
  const dt = (b.t - a.t) / 1000;
  return dt > 0 ? Math.max(0, (vb - va) / dt) : null;
}

/** The series of rates of `value` over the samples kept. */
function rates(samples, value) {
  const out = [];
  for (let i = 1; i < samples.length; i++) out.push(rate([samples[i - 1], samples[i]], value));
  return out;
}

const stream = (s, name) => (s.data.streams || []).find((x) => x.name === name);
const stage = (s, name) => (s.data.stages || []).find((x) => x.consumer === name);
const dest = (s, id) => (s.data.destinations || []).find((x) => x.id === id);
const lag = (c) => (c ? (c.num_pending || 0) + (c.num_ack_pending || 0) : null);

/** A small line chart of several series (numbers or null), scaled to the largest value. */
function chart(title, series, unit) {
  const W = 600;
  const H = 130;
  const pad = { l: 44, r: 8, t: 10, b: 18 };
  const max = Math.max(1, ...series.flatMap((s) => s.values.filter((v) => v !== null)));
  const n = Math.max(2, ...series.map((s) => s.values.length));
  const x = (i) => pad.l + ((W - pad.l - pad.r) * i) / (n - 1);
  const y = (v) => H - pad.b - ((H - pad.t - pad.b) * v) / max;
  const node = svg("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", role: "img", "aria-label": title });
  node.append(svg("line", { class: "axis", x1: pad.l, y1: H - pad.b, x2: W - pad.r, y2: H - pad.b }));
  node.append(svg("line", { class: "axis", x1: pad.l, y1: pad.t, x2: pad.l, y2: H - pad.b }));
  node.append(svg("text", { class: "tick", x: 2, y: pad.t + 8 }, `${max < 10 ? max.toFixed(1) : Math.round(max)}${unit}`));
  node.append(svg("text", { class: "tick", x: 2, y: H - pad.b }, `0`));
  node.append(svg("text", { class: "tick", x: pad.l, y: H - 4 }, `${Math.round(((n - 1) * EVERY_MS) / 60000) || "<1"} min ago`));
  node.append(svg("text", { class: "tick", x: W - pad.r - 24, y: H - 4 }, "now"));
  series.forEach((s, k) => {
    const offset = n - s.values.length;
    const points = s.values.map((v, i) => (v === null ? null : `${x(i + offset).toFixed(1)},${y(v).toFixed(1)}`)).filter(Boolean);
    if (points.length) node.append(svg("polyline", { class: `series-${k % 6}`, points: points.join(" ") }));
  });
  return el(
    "div",
    { class: "panel" },
    el("h3", {}, title),
    node,
    el("div", { class: "legend" }, series.map((s, k) => el("span", { class: `series-${k % 6}` }, s.name))),
  );
}

/** The breaker's entry as the forwarders write it (`{state, since_ms, next_probe_at_ms}`). */
function breaker(b) {
  if (!b) return "closed";
  const parts = [b.state === "tripped" ? "open" : String(b.state || "?")];
  if (b.since_ms) parts.push(`since ${new Date(b.since_ms).toLocaleTimeString()}`);
  if (b.next_probe_at_ms) parts.push(`next probe ${new Date(b.next_probe_at_ms).toLocaleTimeString()}`);
  return parts.join(" · ");
}

function card(label, value, sub) {
  return el("div", { class: "card" }, el("div", { class: "label" }, label), el("div", { class: "value" }, value), el("div", { class: "sub" }, sub || ""));
}

function draw(root, samples, ctx) {
  const last = samples[samples.length - 1];
  const d = last.data;
  const admin = !(ctx.scope && ctx.scope.tenant);
  const parts = [];
  parts.push(el("p", { class: "muted" }, `Updated ${new Date(last.t).toLocaleTimeString()} · every ${EVERY_MS / 1000} s`));
  if (admin) {
    const raw = stream(last, "HOOKLINE_RAW");
    const events = stream(last, "HOOKLINE_EVENTS");
    const dlqs = stream(last, "HOOKLINE_DLQ");
    const normalizer = stage(last, "normalizer");
    parts.push(
      el(
        "div",
        { class: "grid", id: "stages" },
        card("Ingest", fmtRate(rate(samples, (s) => stream(s, "HOOKLINE_RAW")?.last_seq)), raw ? `${fmtNum(raw.messages)} raw webhooks kept · last seq ${fmtNum(raw.last_seq)}` : "HOOKLINE_RAW missing"),
        card("Normalizer", normalizer ? `${fmtNum(lag(normalizer))} behind` : "—", normalizer ? `${fmtRate(rate(samples, (s) => stage(s, "normalizer")?.ack_floor_stream_seq))} · ${fmtNum(normalizer.num_redelivered)} redelivered` : "no consumer yet"),
        card("Events", fmtRate(rate(samples, (s) => stream(s, "HOOKLINE_EVENTS")?.last_seq)), events ? `${fmtNum(events.messages)} events kept · last seq ${fmtNum(events.last_seq)}` : "HOOKLINE_EVENTS missing"),
        card("Dead letters", fmtNum(dlqs ? dlqs.messages : d.dead_letters.total), "in HOOKLINE_DLQ"),
      ),
    );
    parts.push(
      el(
        "div",
        { class: "split" },
        chart(
          "Throughput",
          [
            { name: "ingest (raw/s)", values: rates(samples, (s) => stream(s, "HOOKLINE_RAW")?.last_seq) },
            { name: "normalized (raw/s)", values: rates(samples, (s) => stage(s, "normalizer")?.ack_floor_stream_seq) },
            { name: "events stored (/s)", values: rates(samples, (s) => stream(s, "HOOKLINE_EVENTS")?.last_seq) },
          ],
          "/s",
        ),
        chart(
          "Lag",
          [
            { name: "normalizer", values: samples.map((s) => lag(stage(s, "normalizer"))) },
            ...d.destinations.slice(0, 5).map((x) => ({ name: x.id, values: samples.map((s) => lag(dest(s, x.id)?.consumer)) })),
          ],
          "",
        ),
      ),
    );
  } else {
    parts.push(
      el(
        "div",
        { class: "split" },
        chart("Deliveries per destination", d.destinations.slice(0, 6).map((x) => ({ name: x.id, values: rates(samples, (s) => dest(s, x.id)?.consumer?.delivered_consumer_seq) })), "/s"),
        chart("Lag per destination", d.destinations.slice(0, 6).map((x) => ({ name: x.id, values: samples.map((s) => lag(dest(s, x.id)?.consumer)) })), ""),
      ),
    );
  }
  parts.push(el("h2", {}, "Destinations"));
  parts.push(
    table(
      [
        { title: "Destination", value: (x) => el("span", {}, x.id, x.name ? el("span", { class: "muted" }, ` · ${x.name}`) : "") },
        { title: "Tenant", value: (x) => x.tenant_id || "every tenant" },
        { title: "State", value: (x) => badge(x.state) },
        { title: "Deliveries", num: true, value: (x) => fmtRate(rate(samples, (s) => dest(s, x.id)?.consumer?.delivered_consumer_seq)) },
        { title: "Pending", num: true, value: (x) => fmtNum(x.consumer ? x.consumer.num_pending : null) },
        { title: "In flight", num: true, value: (x) => fmtNum(x.consumer ? x.consumer.num_ack_pending : null) },
        { title: "Redelivered", num: true, value: (x) => fmtNum(x.consumer ? x.consumer.num_redelivered : null) },
        { title: "Breaker", value: (x) => breaker(x.breaker) },
      ],
      d.destinations,
      { empty: "No destination yet.", class: "destinations", key: (x) => x.id },
    ),
  );
  parts.push(el("h2", {}, "Dead letters by reason and destination"));
  const dl = d.dead_letters;
  parts.push(
    table(
      [
        { title: "Stage", value: (r) => r.stage },
        { title: "Reason", value: (r) => el("a", { href: `#/dlq/${new URLSearchParams({ stage: r.stage, reason: r.reason, ...(r.destination ? { destination: r.destination } : {}) })}` }, r.reason) },
        { title: "Destination", value: (r) => r.destination || "—" },
        { title: "Dead letters", num: true, value: (r) => fmtNum(r.count) },
      ],
      dl.by_reason,
      { empty: "No dead letter.", class: "dead-letters" },
    ),
  );
  if (dl.truncated) parts.push(el("p", { class: "muted" }, `Counted over the oldest ${fmtNum(dl.counted)} dead letters only.`));
  clear(root).append(...parts);
}

export async function render(main, ctx) {
  main.append(el("h1", {}, "Overview"));
  const root = el("div", { id: "overview" });
  main.append(root);
  const samples = [];
  let timer = null;
  let stopped = false;
  const tick = async () => {
    try {
      const data = await api.get("/overview");
      if (stopped) return;
      samples.push({ t: Date.now(), data });
      if (samples.length > KEEP) samples.shift();
      draw(root, samples, ctx);
    } catch (e) {
      if (stopped || e.status === 401) return;
      root.prepend(el("p", { class: "error" }, `The overview could not be read: ${e.describe ? e.describe() : e}`));
    }
    if (!stopped) timer = setTimeout(tick, EVERY_MS);
  };
  await tick();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
