// Channels: the list with each webhook URL (to copy) and when its last webhook arrived; create
// (by hand or with a platform helper), rotate a secret, delete.

import * as api from "./api.js";
import { ago, clear, confirmAction, copy, el, failed, field, flash, json, table, values } from "./ui.js";

const SOURCES = ["whatsapp", "messenger", "instagram", "telegram", "twilio", "dialog360", "tawkto", "mercadopago", "webchat"];

/** The platform helpers and their fields (docs/setup-api.md, "Platform helpers"). */
const HELPERS = {
  manual: { title: "By hand (any source)", fields: [["source", "Source", "select"], ["secret", "Secret", "password"], ["verify_token", "Verify token (Meta, optional)", "password"], ["platform", "Platform (optional)"]] },
  telegram: { title: "Telegram (setWebhook)", fields: [["bot_token", "Bot token", "password"], ["secret_token", "Secret token (optional: generated)", "password"]] },
  whatsapp: { title: "WhatsApp Cloud API", fields: [["app_secret", "App secret", "password"], ["access_token", "Access token", "password"], ["waba_id", "WABA id"], ["phone_number_id", "Phone number id"], ["verify_token", "Verify token (optional)", "password"]] },
  messenger: { title: "Messenger", fields: [["app_id", "App id"], ["app_secret", "App secret", "password"], ["page_id", "Page id"], ["page_access_token", "Page access token", "password"], ["verify_token", "Verify token (optional)", "password"]] },
  instagram: { title: "Instagram", fields: [["app_id", "App id"], ["app_secret", "App secret", "password"], ["page_id", "Page id"], ["page_access_token", "Page access token", "password"], ["verify_token", "Verify token (optional)", "password"]] },
  twilio: { title: "Twilio (SMS, WhatsApp)", fields: [["account_sid", "Account SID"], ["auth_token", "Auth token", "password"], ["phone_number_sid", "Phone number SID"], ["platform", "Platform", "select-twilio"]] },
  tawkto: { title: "Tawk.to (paste)", fields: [["secret", "Secret (optional: generated)", "password"]] },
  mercadopago: { title: "Mercado Pago (paste)", fields: [["secret", "Secret (optional: generated)", "password"]] },
};

function input(name, label, kind) {
  if (kind === "select") return field(label, { name, options: SOURCES }, "select");
  if (kind === "select-twilio") return field(label, { name, options: ["sms", "whatsapp"] }, "select");
  return field(label, { name, type: kind === "password" ? "password" : "text", autocomplete: "off", spellcheck: "false" });
}

function createForm(ctx, done) {
  const helper = field("How", { name: "_helper", options: Object.entries(HELPERS).map(([k, h]) => [k, h.title]) }, "select");
  const specific = el("div", { class: "row" });
  const common = el(
    "div",
    { class: "row" },
    field("Tenant", { name: "tenant_id", value: ctx.scope && ctx.scope.tenant ? ctx.scope.tenant : "", required: true }),
    field("Name (optional)", { name: "name" }),
  );
  const result = el("div");
  const fill = () => {
    clear(specific).append(...HELPERS[helper.querySelector("select").value].fields.map(([n, l, k]) => input(n, l, k)));
  };
  helper.querySelector("select").addEventListener("change", fill);
  fill();
  const submit = el("button", { type: "submit" }, "Create channel");
  const form = el("form", { class: "panel write", id: "create-channel" }, el("h2", {}, "New channel"), el("div", { class: "row" }, helper), common, specific, el("div", { class: "row" }, submit), result);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const v = values(form);
    const how = v._helper || "manual";
    delete v._helper;
    submit.disabled = true;
    clear(result);
    try {
      if (how === "manual") {
        const channel = await api.post("/channels", v);
        flash(`Channel ${channel.id} created.`);
        result.append(el("p", {}, "Point the platform at ", el("code", {}, channel.webhook_url)));
      } else {
        const answer = await api.post(`/integrations/${api.seg(how)}/setup`, v);
        flash(`Channel ${answer.channel.id} created and ${how} set up.`);
        if (answer.paste) {
          result.append(
            el("h3", {}, "Paste this into the platform's console (the secret is shown this once)"),
            json(answer.paste),
          );
        } else {
          result.append(el("h3", {}, `What ${how} said`), json(answer.platform || {}));
        }
      }
      for (const i of form.querySelectorAll("input[type=password]")) i.value = "";
      done();
    } catch (err) {
      failed("The channel was not created", err);
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}

function rotateForm(channel, done) {
  const form = el(
    "form",
    { class: "panel", id: "rotate-channel" },
    el("h2", {}, `Rotate the secret of ${channel.id}`),
    el(
      "div",
      { class: "row" },
      field("New secret", { name: "secret", type: "password", autocomplete: "off", required: true }),
      field("The old secret keeps verifying for (seconds)", { name: "previous_valid_for_s", type: "number", min: 0, value: 86400 }),
      el("button", { type: "submit" }, "Rotate"),
      el("button", { type: "button", class: "quiet", onclick: () => form.remove() }, "Cancel"),
    ),
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const v = values(form);
    const body = { secret: v.secret };
    if (v.previous_valid_for_s !== undefined) body.previous_valid_for_s = Number(v.previous_valid_for_s);
    const ok = await confirmAction({
      title: "Rotate this channel's secret?",
      text: "Webhooks signed with the old secret keep verifying only until the grace period ends.",
      items: [`channel ${channel.id} (${channel.platform}, tenant ${channel.tenant_id})`, `old secret valid for ${body.previous_valid_for_s ?? 86400} s more`],
      ok: "Rotate the secret",
    });
    if (!ok) return;
    try {
      const c = await api.post(`/channels/${api.seg(channel.id)}/rotate-secret`, body);
      flash(`Secret of ${c.id} rotated; the old one verifies until ${c.previous_secret_expires_at || "now"}.`);
      form.remove();
      done();
    } catch (err) {
      failed("The secret was not rotated", err);
    }
  });
  return form;
}

async function lastWebhook(channel, cell) {
  try {
    const a = await api.get(`/channels/${api.seg(channel.id)}/activity`);
    cell.textContent = a.last_webhook_at ? ago(a.last_webhook_at) : "never";
    if (a.last_webhook_at) cell.title = a.last_webhook_at;
  } catch (e) {
    cell.textContent = "—";
  }
}

export async function render(main, ctx) {
  main.append(el("h1", {}, "Channels"));
  const list = el("div", { id: "channel-list" });
  const below = el("div");
  const load = async () => {
    const page = await api.get(`/channels${api.query({ limit: 200 })}`);
    const rows = page.channels || [];
    clear(list).append(
      table(
        [
          { title: "Channel", value: (c) => el("span", {}, el("code", {}, c.id), c.name ? el("div", { class: "muted" }, c.name) : "") },
          { title: "Tenant", value: (c) => c.tenant_id },
          { title: "Platform", value: (c) => `${c.platform}${c.source !== c.platform ? ` (${c.source})` : ""}${c.default ? " · default" : ""}` },
          { title: "Webhook URL", value: (c) => el("div", { class: "url" }, el("code", {}, c.webhook_url), el("button", { type: "button", class: "small quiet copy", onclick: () => copy(c.webhook_url) }, "Copy")) },
          {
            title: "Last webhook",
            value: (c) => {
              const cell = el("span", { class: "last-webhook" }, "…");
              lastWebhook(c, cell);
              return cell;
            },
          },
          {
            title: "",
            value: (c) =>
              el(
                "div",
                { class: "actions" },
                el("button", { type: "button", class: "small quiet rotate write", onclick: () => { const old = document.getElementById("rotate-channel"); if (old) old.remove(); below.prepend(rotateForm(c, load)); } }, "Rotate secret"),
                el("button", { type: "button", class: "small danger delete write", onclick: () => remove(c, load) }, "Delete"),
              ),
          },
        ],
        rows,
        { empty: "No channel yet: create one below.", class: "channels", key: (c) => c.id },
      ),
    );
    if (page.next_cursor) list.append(el("p", { class: "muted" }, "Only the first 200 channels are shown."));
  };
  main.append(list, below, createForm(ctx, () => load().catch((e) => failed("The list could not be read", e))));
  await load();
}

async function remove(channel, reload) {
  const ok = await confirmAction({
    title: `Delete channel ${channel.id}?`,
    text: "Ingest will answer 404 to its webhooks within a second. Its stored webhooks and events stay in JetStream.",
    items: [`channel ${channel.id}${channel.name ? ` (${channel.name})` : ""}`, `tenant ${channel.tenant_id}, platform ${channel.platform}`, `webhook URL ${channel.webhook_url}`],
    ok: "Delete the channel",
  });
  if (!ok) return;
  try {
    await api.del(`/channels/${api.seg(channel.id)}`);
    flash(`Channel ${channel.id} deleted.`);
    await reload();
  } catch (e) {
    failed("The channel was not deleted", e);
  }
}
