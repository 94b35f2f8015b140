// Dead letters: filters, the list, one letter's headers and body, and re-drive or purge of the
// letters a filter selects (or of one letter), each counted first (a dry run) and confirmed by
// the operator with the count and the filter named.

import * as api from "./api.js";
import { clear, confirmAction, el, failed, field, flash, fmtAge, json, table, toRfc3339, values } from "./ui.js";

const REASONS = ["", "invalid_json", "missing_field", "invalid_field", "unsupported_payload", "invalid_form", "invalid_headers", "rejected_4xx", "attempts_exhausted", "age_exhausted", "invalid_event"];

function filterForm(initial) {
  return el(
    "form",
    { class: "panel row", id: "dlq-filter" },
    field("Stage", { name: "stage", options: [["", "any"], ["normalize", "normalize"], ["forward", "forward"]], value: initial.stage || "" }, "select"),
    field("Reason", { name: "reason", options: REASONS.map((r) => [r, r || "any"]), value: initial.reason || "" }, "select"),
    field("Tenant", { name: "tenant", value: initial.tenant || "", size: 12 }),
    field("Channel", { name: "channel", value: initial.channel || "", size: 14 }),
    field("Destination", { name: "destination", value: initial.destination || "", size: 12 }),
    field("From (2h, 7d, a date)", { name: "from", value: initial.from || "", size: 12 }),
    field("To", { name: "to", value: initial.to || "", size: 12 }),
    el("button", { type: "submit" }, "Apply"),
  );
}

/** The filter as the re-drive and purge routes take it (`DlqFilter`). */
function actionFilter(f) {
  const selection = {};
  if (f.tenant) selection.tenant = f.tenant;
  if (f.channel) selection.channel = f.channel;
  const from = toRfc3339(f.from, "from");
  const to = toRfc3339(f.to, "to");
  if (from) selection.from = from;
  if (to) selection.to = to;
  const out = { selection };
  for (const k of ["stage", "reason", "destination"]) if (f[k]) out[k] = f[k];
  if (f.seqs) out.seqs = f.seqs;
  if (f.seqs) out.selection = { ...selection, from_seq: Math.min(...f.seqs), to_seq: Math.max(...f.seqs) };
  return out;
}

function describe(f) {
  const parts = [];
  if (f.seqs) parts.push(`dead letter #${f.seqs.join(", #")}`);
  for (const k of ["stage", "reason", "tenant", "channel", "destination", "from", "to"]) if (f[k]) parts.push(`${k} = ${f[k]}`);
  return parts.length ? parts : ["every dead letter"];
}

/** Counts first, asks, then acts: `what` is "redrive" or "purge". */
async function act(what, f, reload) {
  let body;
  try {
    body = actionFilter(f);
  } catch (e) {
    failed("The filter is not valid", e.message);
    return;
  }
  try {
    const dry = await api.post(`/dlq/${what}`, { ...body, dry_run: true });
    const count = what === "redrive" ? dry.selected : dry.purged;
    if (!count) {
      flash(`No dead letter matches: nothing to ${what === "redrive" ? "re-drive" : "purge"}.`);
      return;
    }
    const ok = await confirmAction({
      title: what === "redrive" ? `Re-drive ${count} dead letter${count === 1 ? "" : "s"}?` : `Purge ${count} dead letter${count === 1 ? "" : "s"}?`,
      text:
        what === "redrive"
          ? `Each is published again on the subject it failed on (raw for the normalize stage, events for the forward stage), then removed from HOOKLINE_DLQ. ${count} match:`
          : `They are deleted from HOOKLINE_DLQ for good. ${count} match:`,
      items: describe(f),
      ok: what === "redrive" ? `Re-drive ${count}` : `Purge ${count}`,
    });
    if (!ok) return;
    const done = await api.post(`/dlq/${what}`, { ...body, dry_run: false });
    if (what === "redrive") flash(`Re-driven: ${done.redriven} of ${done.selected}${done.failed ? `; ${done.failed} failed and stay in the DLQ` : ""}.`, done.failed > 0);
    else flash(`Purged ${done.purged} dead letter${done.purged === 1 ? "" : "s"}.`);
    await reload();
  } catch (e) {
    failed(`The ${what === "redrive" ? "re-drive" : "purge"} failed`, e);
  }
}

async function detail(seq, box) {
  try {
    const d = await api.get(`/dlq/${api.seg(String(seq))}`);
    clear(box).append(
      el(
        "div",
        { class: "panel", id: "dlq-detail" },
        el("h2", {}, `Dead letter #${d.letter.seq}: ${d.letter.reason}`),
        el("p", {}, d.letter.detail || ""),
        el("div", { class: "split" }, table([{ title: "Header", value: (h) => h[0] }, { title: "Value", value: (h) => el("code", {}, h[1]) }], d.headers || [], { class: "dlq-headers" }), el("div", {}, el("h3", {}, "Body"), json(d.body))),
      ),
    );
  } catch (e) {
    failed("The dead letter could not be read", e);
  }
}

export async function render(main, ctx, arg) {
  main.append(el("h1", {}, "Dead letters"));
  const initial = arg ? Object.fromEntries(new URLSearchParams(arg)) : {};
  const form = filterForm(initial);
  const actions = el("div", { class: "row write", id: "dlq-actions" });
  const list = el("div", { id: "dlq-list" });
  const box = el("div");
  main.append(form, actions, list, box);
  let current = {};
  const load = async () => {
    current = values(form);
    const q = { ...current, limit: 200 };
    try {
      q.from = toRfc3339(current.from, "from");
      q.to = toRfc3339(current.to, "to");
    } catch (e) {
      failed("The filter is not valid", e.message);
      return;
    }
    const letters = await api.get(`/dlq${api.query(q)}`);
    clear(box);
    clear(list).append(
      table(
        [
          { title: "#", num: true, value: (l) => el("a", { href: "#", onclick: (e) => { e.preventDefault(); detail(l.seq, box); } }, String(l.seq)) },
          { title: "Stage", value: (l) => l.stage },
          { title: "Reason", value: (l) => l.reason },
          { title: "Detail", value: (l) => l.detail },
          { title: "Attempts", num: true, value: (l) => l.attempts || "—" },
          { title: "Last answer", value: (l) => l.last_status || "—" },
          { title: "Tenant", value: (l) => l.tenant || "—" },
          { title: "Channel", value: (l) => l.channel || "—" },
          { title: "Destination", value: (l) => l.destination || "—" },
          { title: "Age", value: (l) => fmtAge(l.age_s) },
          {
            title: "",
            value: (l) =>
              el(
                "div",
                { class: "actions" },
                el("button", { type: "button", class: "small quiet write", onclick: () => act("redrive", { seqs: [l.seq] }, load) }, "Re-drive"),
                el("button", { type: "button", class: "small danger write", onclick: () => act("purge", { seqs: [l.seq] }, load) }, "Purge"),
              ),
          },
        ],
        letters,
        { empty: "No dead letter matches.", class: "dead-letters", key: (l) => String(l.seq) },
      ),
    );
    if (letters.length >= 200) list.append(el("p", { class: "muted" }, "The first 200 are shown; re-drive and purge take every match."));
  };
  clear(actions).append(
    el("button", { type: "button", id: "dlq-redrive", onclick: () => act("redrive", current, load) }, "Re-drive the matching…"),
    el("button", { type: "button", id: "dlq-purge", class: "danger", onclick: () => act("purge", current, load) }, "Purge the matching…"),
  );
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    load().catch((err) => failed("The dead letters could not be read", err));
  });
  await load();
  if (initial.seq) await detail(initial.seq, box);
}
