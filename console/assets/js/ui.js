// DOM helpers. Every value from the API reaches the page as text (textContent, attributes set
// one by one): no HTML is ever built from data.

const SVG_NS = "http://www.w3.org/2000/svg";

function apply(node, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "text") node.textContent = String(v);
    else if (k === "class") node.setAttribute("class", v);
    else if (k.startsWith("on") && typeof v === "function") node.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (k === "value") node.value = v;
    else if (k === "checked" || k === "disabled" || k === "selected" || k === "required") node[k] = Boolean(v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
}

function append(node, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

/** `el("td", {class: "num"}, "12")`: an element with attributes and children (text or nodes). */
export function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  apply(node, attrs);
  return append(node, children);
}

export function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  apply(node, attrs);
  return append(node, children);
}

export function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
  return node;
}

/** A table: `columns` are `{title, value(row) → text or node, num?}`. */
export function table(columns, rows, options = {}) {
  if (!rows.length) return el("p", { class: "empty" }, options.empty || "Nothing here.");
  return el(
    "table",
    { class: options.class },
    el("thead", {}, el("tr", {}, columns.map((c) => el("th", { class: c.num ? "num" : undefined }, c.title)))),
    el(
      "tbody",
      {},
      rows.map((r) => {
        const tr = el("tr", { dataset: options.key ? { key: options.key(r) } : undefined }, columns.map((c) => el("td", { class: c.num ? "num" : undefined }, c.value(r))));
        if (options.onRow) tr.addEventListener("click", () => options.onRow(r, tr));
        return tr;
      }),
    ),
  );
}

export const badge = (text, kind) => el("span", { class: `badge ${kind || text}` }, text);

export function json(value) {
  return el("pre", { class: "json" }, typeof value === "string" ? value : JSON.stringify(value, null, 2));
}

export function fmtTime(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso) : d.toLocaleString();
}

export function fmtAge(seconds) {
  if (seconds === undefined || seconds === null) return "—";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.round(s / 60)} min`;
  if (s < 86400) return `${(s / 3600).toFixed(1)} h`;
  return `${(s / 86400).toFixed(1)} d`;
}

export function ago(iso) {
  if (!iso) return "never";
  const t = new Date(iso).getTime();
  return Number.isNaN(t) ? String(iso) : `${fmtAge((Date.now() - t) / 1000)} ago`;
}

export const fmtNum = (n) => (n === undefined || n === null ? "—" : Number(n).toLocaleString());
export const fmtRate = (r) => (r === undefined || r === null || Number.isNaN(r) ? "—" : `${r < 10 ? r.toFixed(1) : Math.round(r)}/s`);

let flashTimer = null;

/** A short message under the navigation bar. */
export function flash(message, bad = false) {
  const box = document.getElementById("flash");
  box.textContent = message;
  box.className = bad ? "flash bad" : "flash";
  box.hidden = false;
  clearTimeout(flashTimer);
  flashTimer = setTimeout(() => (box.hidden = true), bad ? 12000 : 6000);
}

export function hideFlash() {
  document.getElementById("flash").hidden = true;
}

/** Shows an error of the API (or any) in the flash box. */
export function failed(what, e) {
  flash(`${what}: ${e && e.describe ? e.describe() : e}`, true);
}

/**
 * Asks before something destructive: the dialog names what will be touched. Resolves true when
 * the operator confirms.
 */
export function confirmAction({ title, text, items = [], ok = "Confirm" }) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-text").textContent = text;
  const list = clear(document.getElementById("confirm-list"));
  for (const item of items) list.append(el("li", {}, item));
  const okButton = document.getElementById("confirm-ok");
  const cancel = document.getElementById("confirm-cancel");
  okButton.textContent = ok;
  return new Promise((resolve) => {
    const done = (answer) => {
      okButton.removeEventListener("click", yes);
      cancel.removeEventListener("click", no);
      dialog.removeEventListener("cancel", no);
      if (dialog.open) dialog.close();
      resolve(answer);
    };
    const yes = () => done(true);
    const no = () => done(false);
    okButton.addEventListener("click", yes);
    cancel.addEventListener("click", no);
    dialog.addEventListener("cancel", no);
    dialog.showModal();
    cancel.focus();
  });
}

/** A labelled input: `field("Tenant", {name: "tenant_id"})`. */
export function field(label, attrs = {}, tag = "input") {
  const { options, ...rest } = attrs;
  const input = el(tag, rest);
  if (tag === "select" && options) {
    for (const o of options) {
      const [value, text] = Array.isArray(o) ? o : [o, o];
      input.append(el("option", { value }, text));
    }
    if (rest.value !== undefined) input.value = rest.value;
  }
  return el("label", {}, label, input);
}

/** The values of a form's named fields, trimmed; empty ones left out. */
export function values(form) {
  const out = {};
  for (const input of form.querySelectorAll("[name]")) {
    if (input.type === "checkbox") out[input.name] = input.checked;
    else if (input.value.trim() !== "") out[input.name] = input.value.trim();
  }
  return out;
}

/** `15m`, `2h`, `7d` ago, or a date as typed, as RFC 3339; undefined when empty. Throws on nonsense. */
export function toRfc3339(text, name) {
  if (!text) return undefined;
  const age = /^(\d+)\s*([smhd])$/.exec(text);
  if (age) {
    const unit = { s: 1, m: 60, h: 3600, d: 86400 }[age[2]];
    return new Date(Date.now() - Number(age[1]) * unit * 1000).toISOString();
  }
  const d = new Date(text);
  if (Number.isNaN(d.getTime())) throw new Error(`${name}: expected a date (2026-12-01T10:00:00Z) or an age (15m, 2h, 7d)`);
  return d.toISOString();
}

/** Copies text to the clipboard; says so. */
export async function copy(text) {
  try {
    await navigator.clipboard.writeText(text);
    flash("Copied to the clipboard.");
  } catch (e) {
    flash("The browser refused the clipboard: select the text and copy it by hand.", true);
  }
}

/** A random Standard Webhooks secret: `whsec_` + base64 of 32 random bytes. */
export function newSigningSecret() {
  const bytes = new Uint8Array(32);
  crypto.getRandomValues(bytes);
  return `whsec_${btoa(String.fromCharCode(...bytes))}`;
}
