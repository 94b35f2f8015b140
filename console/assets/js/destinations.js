// Destinations: the list with each one's state (active, paused, tripped), create, pause and
// resume, a test delivery, delete.

import * as api from "./api.js";
import { badge, clear, confirmAction, el, failed, field, flash, json, newSigningSecret, table, values } from "./ui.js";

function createForm(ctx, done) {
  const secret = field("Signing secret (whsec_…)", { name: "signing_secret", type: "password", autocomplete: "off", required: true });
  const generate = el("button", { type: "button", class: "quiet", onclick: () => { secret.querySelector("input").value = newSigningSecret(); secret.querySelector("input").type = "text"; } }, "Generate");
  const submit = el("button", { type: "submit" }, "Create destination");
  const form = el(
    "form",
    { class: "panel write", id: "create-destination" },
    el("h2", {}, "New destination"),
    el(
      "div",
      { class: "row" },
      field("Id (optional)", { name: "id" }),
      field(ctx.scope && ctx.scope.tenant ? "Tenant" : "Tenant (empty: every tenant)", { name: "tenant_id", value: ctx.scope && ctx.scope.tenant ? ctx.scope.tenant : "" }),
      field("Name (optional)", { name: "name" }),
      field("Ordering", { name: "ordering", options: [["none", "none"], ["conversation", "per conversation"]] }, "select"),
    ),
    el("div", { class: "row" }, field("URL", { name: "url", type: "url", size: 48, required: true }), secret, generate),
    field("Filter (JSON, optional): {\"kind\": [\"message\"], \"match\": {...}}", { name: "filter", spellcheck: "false" }, "textarea"),
    el("div", { class: "row" }, submit),
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const v = values(form);
    if (v.filter) {
      try {
        v.filter = JSON.parse(v.filter);
      } catch (err) {
        failed("The filter is not JSON", err.message);
        return;
      }
    }
    submit.disabled = true;
    try {
      const d = await api.post("/destinations", v);
      flash(`Destination ${d.id} created: the forwarders start delivering to it within a second.`);
      secret.querySelector("input").value = "";
      secret.querySelector("input").type = "password";
      done();
    } catch (err) {
      failed("The destination was not created", err);
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}

export async function render(main, ctx) {
  main.append(el("h1", {}, "Destinations"));
  const list = el("div", { id: "destination-list" });
  const result = el("div", { id: "test-result" });
  const load = async () => {
    const page = await api.get(`/destinations${api.query({ limit: 200 })}`);
    const rows = page.destinations || [];
    clear(list).append(
      table(
        [
          { title: "Destination", value: (d) => el("span", {}, el("code", {}, d.id), d.name ? el("div", { class: "muted" }, d.name) : "") },
          { title: "Tenant", value: (d) => d.tenant_id || "every tenant" },
          { title: "URL", value: (d) => el("code", {}, d.url) },
          { title: "Ordering", value: (d) => d.ordering },
          { title: "Filter", value: (d) => (d.filter && Object.keys(d.filter).length ? el("code", {}, JSON.stringify(d.filter)) : "every event") },
          { title: "State", value: (d) => badge(d.state) },
          {
            title: "",
            value: (d) =>
              el(
                "div",
                { class: "actions" },
                d.paused
                  ? el("button", { type: "button", class: "small resume write", onclick: () => act(d, "resume", load) }, "Resume")
                  : el("button", { type: "button", class: "small quiet pause write", onclick: () => act(d, "pause", load) }, "Pause"),
                el("button", { type: "button", class: "small quiet test write", onclick: () => test(d, result) }, "Test"),
                el("button", { type: "button", class: "small danger delete write", onclick: () => remove(d, load) }, "Delete"),
              ),
          },
        ],
        rows,
        { empty: "No destination yet: create one below.", class: "destinations", key: (d) => d.id },
      ),
    );
  };
  main.append(list, result, createForm(ctx, () => load().catch((e) => failed("The list could not be read", e))));
  await load();
}

async function act(d, what, reload) {
  if (what === "pause") {
    const ok = await confirmAction({
      title: `Pause ${d.id}?`,
      text: "Nothing is sent to it while it is paused; its events wait in JetStream (none is dead-lettered) until it is resumed.",
      items: [`destination ${d.id} → ${d.url}`],
      ok: "Pause",
    });
    if (!ok) return;
  }
  try {
    await api.post(`/destinations/${api.seg(d.id)}/${what}`);
    flash(`Destination ${d.id} ${what === "pause" ? "paused" : "resumed"}.`);
    await reload();
  } catch (e) {
    failed(`The destination was not ${what}d`, e);
  }
}

async function test(d, box) {
  clear(box).append(el("p", { class: "muted" }, `Sending a test event to ${d.url}…`));
  try {
    const r = await api.post(`/destinations/${api.seg(d.id)}/test`);
    clear(box).append(
      el(
        "div",
        { class: "panel" },
        el("h3", {}, `Test of ${d.id}: `, badge(r.success ? "delivered" : "failed", r.success ? "ok" : "bad")),
        el("p", {}, r.status ? `The target answered ${r.status} in ${r.duration_ms} ms.` : `No answer after ${r.duration_ms} ms: ${r.connection_error ? `${r.connection_error.reason}: ${r.connection_error.message}` : "unknown error"}.`),
        r.body_excerpt ? json(r.body_excerpt) : "",
      ),
    );
  } catch (e) {
    clear(box);
    failed("The test was not sent", e);
  }
}

async function remove(d, reload) {
  const ok = await confirmAction({
    title: `Delete destination ${d.id}?`,
    text: "The forwarders stop delivering to it and delete its consumer: its pending events and scheduled retries are dropped for it.",
    items: [`destination ${d.id}${d.name ? ` (${d.name})` : ""} → ${d.url}`, `tenant ${d.tenant_id || "every tenant"}`],
    ok: "Delete the destination",
  });
  if (!ok) return;
  try {
    await api.del(`/destinations/${api.seg(d.id)}`);
    flash(`Destination ${d.id} deleted.`);
    await reload();
  } catch (e) {
    failed("The destination was not deleted", e);
  }
}
