// Events: one search box (an event id, a platform message id, or a conversation id), recent
// events, and one event's page: the normalized JSON, the raw webhook as stored, its state at
// every destination and every delivery attempt.

import * as api from "./api.js";
import { badge, clear, el, failed, fmtTime, json, table } from "./ui.js";

function found(events, heading) {
  return el(
    "div",
    { class: "panel", id: "event-results" },
    el("h2", {}, heading),
    table(
      [
        { title: "Event", value: (f) => el("a", { href: `#/events/${encodeURIComponent(f.event.id)}` }, f.event.id) },
        { title: "Kind", value: (f) => f.event.kind },
        { title: "Tenant", value: (f) => f.event.tenant_id },
        { title: "Channel", value: (f) => f.event.channel_id || "—" },
        { title: "Message", value: (f) => (f.event.message ? f.event.message.id : f.event.status ? `status of ${f.event.status.message_id}` : "—") },
        { title: "Conversation", value: (f) => (f.event.conversation ? f.event.conversation.id : "—") },
        { title: "Received", value: (f) => fmtTime(f.event.received_at) },
      ],
      events,
      { empty: "No event matches.", class: "events", key: (f) => f.event.id },
    ),
  );
}

/** A JSON body indented, any other text as it is. */
function pretty(body) {
  try {
    return JSON.stringify(JSON.parse(body), null, 2);
  } catch (e) {
    return body;
  }
}

/** What the box holds: an event id, else a message id, else a conversation id. */
async function search(text, out) {
  const q = text.trim();
  if (!q) return;
  if (/^evt_[0-9A-Za-z]+$/.test(q)) {
    location.hash = `#/events/${encodeURIComponent(q)}`;
    return;
  }
  clear(out).append(el("p", { class: "muted" }, "Searching…"));
  const byMessage = await api.get(`/events${api.query({ message_id: q, limit: 50 })}`);
  if (byMessage.events.length) {
    clear(out).append(found(byMessage.events, `Events of platform message ${q}`));
    return;
  }
  const byConversation = await api.get(`/events${api.query({ conversation_id: q, limit: 50 })}`);
  clear(out).append(found(byConversation.events, byConversation.events.length ? `Events of conversation ${q}` : `Nothing found for ${q}`));
}

/** The events of the last hour, oldest first, a page at a time. */
async function recent(out, cursor) {
  const page = await api.get(`/events${api.query({ from: "1h", limit: 50, cursor })}`);
  const box = found(page.events, cursor ? "Events of the last hour (continued)" : "Events of the last hour, oldest first");
  if (page.next_cursor) {
    box.append(el("button", { type: "button", class: "quiet", id: "events-more", onclick: () => recent(out, page.next_cursor).catch((e) => failed("The next page could not be read", e)) }, "Next page"));
  }
  clear(out).append(box);
}

export async function render(main, ctx, arg) {
  main.append(el("h1", {}, "Events"));
  const input = el("input", { id: "event-search", type: "search", placeholder: "An event id (evt_…), a platform message id, or a conversation id", spellcheck: "false", autocomplete: "off" });
  const form = el("form", { class: "search panel", id: "event-search-form" }, input, el("button", { type: "submit" }, "Find"));
  const out = el("div", { id: "event-view" });
  main.append(form, out);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      await search(input.value, out);
    } catch (err) {
      clear(out);
      failed("The search failed", err);
    }
  });
  if (arg) {
    input.value = arg;
    await show(arg, out);
  } else {
    await recent(out);
  }
}

async function show(id, out) {
  let view;
  try {
    view = await api.get(`/events/${api.seg(id)}`);
  } catch (e) {
    clear(out).append(el("p", { class: "error" }, e.status === 404 ? `No event ${id} (or it aged out of the stream).` : `The event could not be read: ${e.describe ? e.describe() : e}`));
    return;
  }
  const ev = view.event || {};
  const rawBox = el("div", { id: "raw-webhook" }, el("p", { class: "muted" }, "No raw webhook is known for this event."));
  clear(out).append(
    el(
      "div",
      { class: "panel", id: "event-detail" },
      el("h2", {}, el("code", {}, view.event_id), " ", badge(ev.kind || "event", "")),
      el(
        "p",
        { class: "muted" },
        `Tenant ${view.tenant_id} · channel ${ev.channel_id || "—"} · ${ev.source || ""} · received ${fmtTime(ev.received_at)} · stored ${fmtTime(view.stored_at)} as ${view.subject} #${view.seq}`,
      ),
      el("h3", {}, "Destinations"),
      table(
        [
          { title: "Destination", value: (d) => d.destination },
          { title: "State", value: (d) => badge(d.state) },
          { title: "Attempts", num: true, value: (d) => String(d.attempts) },
          { title: "Last status", value: (d) => (d.last_status ? String(d.last_status) : d.last_error || "—") },
          { title: "Next attempt", value: (d) => fmtTime(d.next_attempt_at) },
          { title: "Dead letter", value: (d) => d.dlq_reason || "—" },
        ],
        view.destinations || [],
        { empty: "No destination takes this event.", class: "event-destinations", key: (d) => d.destination },
      ),
      el("h3", {}, "Attempts"),
      table(
        [
          { title: "Destination", value: (a) => a.destination },
          { title: "#", num: true, value: (a) => String(a.attempt) },
          { title: "At", value: (a) => fmtTime(a.at) },
          { title: "Outcome", value: (a) => badge(a.outcome) },
          { title: "Answer", value: (a) => (a.status ? String(a.status) : a.error || "—") },
          { title: "Duration", num: true, value: (a) => `${Math.round(a.duration_ms)} ms` },
          { title: "Body (first KiB)", value: (a) => (a.body ? el("code", {}, a.body + (a.body_truncated ? "…" : "")) : "—") },
        ],
        view.attempts || [],
        { empty: "No attempt recorded yet.", class: "attempts" },
      ),
      el("div", { class: "split" }, el("div", {}, el("h3", {}, "Normalized event"), json(ev)), el("div", {}, el("h3", {}, "Raw webhook"), rawBox)),
    ),
  );
  const seq = view.raw && view.raw.seq;
  if (seq) {
    try {
      const raw = await api.get(`/raw/${api.seg(String(seq))}`);
      clear(rawBox).append(
        el("p", { class: "muted" }, `${raw.subject} #${raw.seq} · stored ${fmtTime(raw.stored_at)}`),
        table(
          [
            { title: "Header", value: (h) => h[0] },
            { title: "Value", value: (h) => el("code", {}, h[1].join(", ")) },
          ],
          Object.entries(raw.headers || {}),
          { class: "raw-headers" },
        ),
        json(raw.body !== undefined ? pretty(raw.body) : `(not UTF-8; base64) ${raw.body_base64 || ""}`),
      );
    } catch (e) {
      clear(rawBox).append(el("p", { class: "muted" }, e.status === 404 ? `Raw webhook #${seq} aged out of HOOKLINE_RAW.` : `The raw webhook could not be read: ${e.describe ? e.describe() : e}`));
    }
  }
}
