// The shell: login, the navigation bar, and the page router (`#/page/arg`). Each page module
// exports `render(main, ctx, arg)`, which may return a function that stops its timers.

import * as api from "./api.js";
import { clear, el, flash, hideFlash } from "./ui.js";
import * as overview from "./overview.js";
import * as channels from "./channels.js";
import * as destinations from "./destinations.js";
import * as events from "./events.js";
import * as dlq from "./dlq.js";
import * as replay from "./replay.js";

const pages = { overview, channels, destinations, events, dlq, replay };
const ctx = { scope: null };
let stopPage = null;

function $(id) {
  return document.getElementById(id);
}

function leavePage() {
  if (stopPage) {
    try {
      stopPage();
    } catch (e) {
      console.warn("stopping the page failed", e);
    }
  }
  stopPage = null;
}

function showLogin(message) {
  leavePage();
  api.forgetToken();
  ctx.scope = null;
  clear($("main"));
  hideFlash();
  $("shell").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  $("token").value = "";
  $("token").focus();
}

function describeScope(scope) {
  if (!scope) return "";
  const who = scope.tenant ? `tenant ${scope.tenant}` : "admin";
  return scope.read_only ? `${who} (read-only)` : who;
}

/** Checks a token against the API; the scope it carries, or an ApiError. */
async function whoIs(token) {
  const answer = await api.get("/overview", { token });
  return answer.scope || { tenant: null, read_only: false };
}

async function signIn(event) {
  event.preventDefault();
  const token = $("token").value.trim();
  if (!token) return;
  $("login-submit").disabled = true;
  try {
    const scope = await whoIs(token);
    api.setToken(token);
    ctx.scope = scope;
    $("token").value = "";
    enter();
  } catch (e) {
    $("login-error").textContent = e.status === 401 ? "This token is not accepted." : `Cannot sign in: ${e.describe ? e.describe() : e}`;
  } finally {
    $("login-submit").disabled = false;
  }
}

function enter() {
  $("login").hidden = true;
  $("shell").hidden = false;
  $("who").textContent = describeScope(ctx.scope);
  document.body.dataset.scope = ctx.scope && ctx.scope.tenant ? "tenant" : "admin";
  // A read-only token sees no control that would change something (the API refuses them too).
  document.body.dataset.readonly = ctx.scope && ctx.scope.read_only ? "true" : "false";
  if (!location.hash || location.hash === "#" || location.hash === "#/") location.hash = "#/overview";
  else route();
}

async function route() {
  if (!ctx.scope) return;
  const [, name = "overview", ...rest] = location.hash.split("/");
  const page = pages[name] ? name : "overview";
  const arg = rest.length ? decodeURIComponent(rest.join("/")) : null;
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.page === page);
  leavePage();
  hideFlash();
  const main = clear($("main"));
  main.dataset.page = page;
  document.title = `${$("nav").querySelector(`a[data-page="${page}"]`).textContent} · hookline console`;
  try {
    const stop = await pages[page].render(main, ctx, arg);
    if (typeof stop === "function") stopPage = stop;
  } catch (e) {
    if (e.status !== 401) {
      main.append(el("p", { class: "error" }, `This page could not be shown: ${e.describe ? e.describe() : e}`));
    }
  }
}

async function start() {
  api.onUnauthorized(() => showLogin("The API refused the token (expired, revoked, or wrong): sign in again."));
  $("login-form").addEventListener("submit", signIn);
  $("logout").addEventListener("click", () => showLogin("Signed out."));
  window.addEventListener("hashchange", route);
  const stored = api.token();
  if (!stored) return showLogin("");
  try {
    ctx.scope = await whoIs(stored);
    enter();
  } catch (e) {
    showLogin(e.status === 401 ? "The API refused the token: sign in again." : `Cannot reach the API: ${e.describe ? e.describe() : e}`);
  }
}

start().catch((e) => flash(`The console failed to start: ${e}`, true));
