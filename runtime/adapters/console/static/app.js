// The console: sign in with the admin token, then live panels from the feed, lists fetched on change.
import { api, token } from "./api.js";
import { $, throttled } from "./dom.js";
import { DryRun } from "./dryrun.js";
import { openFeed } from "./feed.js";
import { DeadLetters, Devices } from "./lists.js";
import { LivePanels, loadDatastreams, loadEvents } from "./panels.js";

let closeFeed = null;
let view = null;

function signedOut(message = "") {
  if (closeFeed) closeFeed();
  closeFeed = null;
  token.clear();
  $("console").hidden = true;
  $("sign-out").hidden = true;
  $("sign-in").hidden = false;
  $("connection").textContent = "";
  $("sign-in-error").textContent = message;
  $("token").value = "";
  $("token").focus();
}

async function signIn(value) {
  token.set(value);
  try {
    await api("GET", "/status");
  } catch (err) {
    signedOut(err.status === 401 ? "That token was refused (401). Check it and try again." : `The admin API answered: ${err.message}`);
    return;
  }
  $("sign-in").hidden = true;
  $("console").hidden = false;
  $("sign-out").hidden = false;
  $("sign-in-error").textContent = "";
  start();
}

// The panels are made once (they hold the page's event handlers); each sign-in opens a new feed.
function build() {
  const dryrun = new DryRun();
  const v = { panels: new LivePanels(), dryrun, devices: new Devices(),
    deadletters: new DeadLetters({ onTryDryRun: (detail) => dryrun.open(detail) }) };
  for (const button of document.querySelectorAll("[data-verb]")) button.addEventListener("click", () => control(button.dataset.verb));
  return v;
}

function start() {
  view = view || build();
  const { panels, dryrun, deadletters, devices } = view;
  const refresh = {
    events: throttled(() => loadEvents().catch(report), 1000),
    deadletters: throttled(() => deadletters.load().catch(report), 2000),
    devices: throttled(() => devices.load().catch(report), 3000),
  };
  let last = null;
  let streams = null; // unknown until asked; false when GET /datastreams is not there
  let ticks = 0;
  closeFeed = openFeed({
    onUnauthorized: () => signedOut("The token is no longer accepted (401). Sign in again."),
    onState: (state) => { $("connection").textContent = state === "live" ? "live" : "connection lost; reconnecting…"; },
    onStatus: (status) => {
      panels.update(status);
      dryrun.setListeners(listenerKeys(status));
      const c = status.counters || {};
      if (!last || last.state !== status.state || last.since !== status.since
        || last.deviceErrors !== status.deviceErrorEvents) refresh.events();
      if (!last || last.dead !== c.deadLettered) refresh.deadletters();
      if (!last || last.done !== (c.processed ?? 0) + (c.failed ?? 0) || last.devices !== status.deviceCount) refresh.devices();
      deadletters.checkReplays().catch(report);
      if (streams === null || (streams && ticks % 5 === 0)) loadDatastreams().then((ok) => { streams = ok; });
      ticks += 1;
      last = { state: status.state, since: status.since, dead: c.deadLettered,
        done: (c.processed ?? 0) + (c.failed ?? 0), devices: status.deviceCount, deviceErrors: status.deviceErrorEvents };
    },
  });
}

// The solution's listeners (the running ones are only there while Running; the dry run works in every state).
function listenerKeys(status) {
  return status.solutionListeners || (status.listeners || []).map((l) => l.key);
}

async function control(verb) {
  const note = $("control-message");
  note.textContent = "";
  note.dataset.result = "";
  try {
    const answer = await api("POST", `/control/${verb}`);
    note.textContent = `${verb}: accepted (${answer.state})`;
    note.dataset.result = "accepted";
  } catch (err) {
    note.textContent = `${verb} refused: ${err.code}: ${err.message}`;
    note.dataset.result = "refused";
  }
}

function report(err) {
  if (err && err.status === 401) signedOut("The token is no longer accepted (401). Sign in again.");
  else $("connection").textContent = `last request failed: ${err && err.message ? err.message : err}`;
}

$("sign-in-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const value = $("token").value.trim();
  if (value) signIn(value);
});
$("sign-out").addEventListener("click", () => signedOut());

if (token.get()) signIn(token.get());
else $("token").focus();
