// Replay: a selection of raw webhooks (normalized again) or of events (delivered again), its
// dry-run count, then the run with its progress, confirmed by the operator first.

import * as api from "./api.js";
import { clear, confirmAction, el, failed, field, flash, fmtNum, toRfc3339, values } from "./ui.js";

const SOURCES = ["", "whatsapp", "messenger", "instagram", "telegram", "twilio", "dialog360", "tawkto", "mercadopago", "webchat"];

function options(v) {
  const selection = {};
  const from = toRfc3339(v.from, "from");
  const to = toRfc3339(v.to, "to");
  if (from) selection.from = from;
  if (to) selection.to = to;
  for (const k of ["from_seq", "to_seq"]) if (v[k]) selection[k] = Number(v[k]);
  for (const k of ["channel", "tenant", "source"]) if (v[k]) selection[k] = v[k];
  const out = { stream: v.stream || "raw", selection };
  if (v.rate_per_s) out.rate_per_s = Number(v.rate_per_s);
  if (v.destination && out.stream === "events") out.destination = v.destination;
  return out;
}

function describe(v) {
  const parts = [`stream ${v.stream === "events" ? "HOOKLINE_EVENTS (events delivered again)" : "HOOKLINE_RAW (webhooks normalized again)"}`];
  for (const k of ["from", "to", "from_seq", "to_seq", "channel", "tenant", "source", "destination", "rate_per_s"]) if (v[k]) parts.push(`${k} = ${v[k]}`);
  return parts;
}

export async function render(main, ctx) {
  main.append(el("h1", {}, "Replay"));
  if (ctx.scope && ctx.scope.read_only) main.append(el("p", { class: "muted" }, "This token is read-only: it cannot replay."));
  const form = el(
    "form",
    { class: "panel write", id: "replay-form" },
    el(
      "div",
      { class: "row" },
      field("Stream", { name: "stream", options: [["raw", "raw webhooks (normalize again)"], ["events", "events (deliver again)"]] }, "select"),
      field("From (2h, 7d, a date)", { name: "from", size: 14 }),
      field("To", { name: "to", size: 14 }),
      field("From seq", { name: "from_seq", type: "number", min: 1, size: 8 }),
      field("To seq", { name: "to_seq", type: "number", min: 1, size: 8 }),
    ),
    el(
      "div",
      { class: "row" },
      field("Channel", { name: "channel", size: 14 }),
      field("Tenant", { name: "tenant", size: 12, value: ctx.scope && ctx.scope.tenant ? ctx.scope.tenant : "" }),
      field("Source", { name: "source", options: SOURCES.map((s) => [s, s || "any"]) }, "select"),
      field("Destination (events only)", { name: "destination", size: 12 }),
      field("At most per second", { name: "rate_per_s", type: "number", min: 1, size: 8 }),
      el("button", { type: "submit", id: "replay-count" }, "Count (dry run)"),
    ),
  );
  const out = el("div", { id: "replay-out" });
  main.append(form, out);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const v = values(form);
    let body;
    try {
      body = options(v);
    } catch (err) {
      failed("The selection is not valid", err.message);
      return;
    }
    clear(out).append(el("p", { class: "muted" }, "Counting…"));
    try {
      const dry = await api.post("/replay", { ...body, dry_run: true });
      const run = el("button", { type: "button", id: "replay-run", disabled: dry.selected === 0 }, `Replay ${fmtNum(dry.selected)}…`);
      clear(out).append(
        el(
          "div",
          { class: "panel" },
          el("h2", {}, `${fmtNum(dry.selected)} ${body.stream === "raw" ? "raw webhooks" : "events"} selected`),
          el("p", {}, body.stream === "raw" ? `They would give ${fmtNum(dry.events)} events${dry.unparseable ? ` (${fmtNum(dry.unparseable)} do not parse)` : ""}.` : `${fmtNum(dry.events)} events would be published again.`),
          run,
        ),
      );
      run.addEventListener("click", () => start(body, v, dry, out));
    } catch (err) {
      clear(out);
      failed("The selection could not be counted", err);
    }
  });
}

async function start(body, v, dry, out) {
  const ok = await confirmAction({
    title: `Replay ${fmtNum(dry.selected)} ${body.stream === "raw" ? "raw webhooks" : "events"}?`,
    text: "The events are published again with \"replay\": true and their ids, and delivered again to the destinations that take them.",
    items: describe(v),
    ok: `Replay ${fmtNum(dry.selected)}`,
  });
  if (!ok) return;
  const bar = el("div");
  const label = el("p", {}, "Starting…");
  const heading = el("h2", {}, "Replay running");
  clear(out).append(el("div", { class: "panel", id: "replay-progress" }, heading, el("div", { class: "progress" }, bar), label));
  try {
    const started = await api.post("/replays", body);
    for (;;) {
      const run = await api.get(`/replays/${api.seg(started.run_id)}`);
      const total = Math.max(1, run.total || dry.selected);
      bar.style.width = `${Math.min(100, (100 * run.read) / total).toFixed(1)}%`;
      label.textContent = `${fmtNum(run.read)} of ${fmtNum(total)} read · ${run.state}`;
      if (run.state === "done") {
        bar.style.width = "100%";
        heading.textContent = "Replay done";
        const s = run.summary;
        label.textContent = `Done: ${fmtNum(s.selected)} selected, ${fmtNum(s.events)} events published${s.unparseable ? `, ${fmtNum(s.unparseable)} unparseable` : ""} (run ${s.run_id}).`;
        flash("Replay finished.");
        return;
      }
      if (run.state === "failed" || run.state === "abandoned") {
        heading.textContent = run.state === "failed" ? "Replay failed" : "Replay abandoned (its setup-api process stopped)";
        label.textContent = `Failed after ${fmtNum(run.read)}: ${run.error || "unknown error"}`;
        flash("The replay failed.", true);
        return;
      }
      await new Promise((r) => setTimeout(r, 500));
    }
  } catch (e) {
    failed("The replay failed", e);
  }
}
