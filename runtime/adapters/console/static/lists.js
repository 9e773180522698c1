// The two paged lists: dead letters (newest first; replay; try in the dry run) and devices (by id, filter).
// Pages come from the server (limit/offset), so 10,000 of either cost one page of rows.
import { api } from "./api.js";
import { $, ago, el, replaceRows, short, when } from "./dom.js";

const DL_PAGE = 25;
const DEV_PAGE = 50;

export class DeadLetters {
  constructor({ onTryDryRun }) {
    this.offset = 0;
    this.onTryDryRun = onTryDryRun;
    this.pendingReplays = new Map(); // replay message id -> dead letter id
    $("dl-newer").addEventListener("click", () => { this.offset = Math.max(0, this.offset - DL_PAGE); this.load(); });
    $("dl-older").addEventListener("click", () => { this.offset += DL_PAGE; this.load(); });
  }

  async load() {
    const page = await api("GET", `/deadletters?limit=${DL_PAGE}&offset=${this.offset}`);
    if (!page.length && this.offset > 0) { this.offset = Math.max(0, this.offset - DL_PAGE); return this.load(); }
    const rows = page.map((d) => this.row(d));
    replaceRows($("deadletter-rows"), rows, "no dead letters", 9);
    $("dl-newer").disabled = this.offset === 0;
    $("dl-older").disabled = page.length < DL_PAGE;
    $("dl-page").textContent = page.length ? `${this.offset + 1}–${this.offset + page.length}` : "";
  }

  row(d) {
    const [code, ...rest] = String(d.error || "").split(": ");
    const payload = el("button", { type: "button", class: "link", "aria-label": `Show the payload of dead letter ${d.id}`,
      text: "show", onclick: (ev) => this.showPayload(ev.currentTarget, d.id) });
    return el("tr", { dataset: { id: d.id } },
      el("td", {}, el("time", { datetime: d.receivedAt, title: when(d.receivedAt), text: ago(d.receivedAt) })),
      el("td", { text: d.listener || "–" }), el("td", { text: d.deviceId || "–" }), el("td", { text: d.messageId || "–" }),
      el("td", {}, el("span", { class: "pill failed", text: d.stage || "–" })),
      el("td", {}, el("code", { text: code || "–" })),
      el("td", { class: "reason", text: short(rest.join(": ") || code, 200) }),
      el("td", { class: "payload-cell" }, payload),
      el("td", { class: "actions" },
        el("button", { type: "button", class: "replay", "aria-label": `Replay dead letter ${d.id}`, text: "Replay",
          onclick: (ev) => this.replay(ev.currentTarget, d) }),
        el("button", { type: "button", class: "try", "aria-label": `Try dead letter ${d.id} again in the dry run`,
          text: "Try in dry run", onclick: () => this.tryDryRun(d.id) }),
        d.replayedAt ? el("span", { class: "muted", text: ` replayed ${ago(d.replayedAt)}` }) : null));
  }

  async showPayload(button, id) {
    const detail = await api("GET", `/deadletters/${encodeURIComponent(id)}`);
    const text = detail.payloadText ?? decode(detail.payload);
    const where = detail.topic ? `topic ${detail.topic}` : detail.path ? `path ${detail.path}` : "";
    button.replaceWith(el("div", { class: "payload" }, where ? el("div", { class: "muted", text: where }) : null,
      el("pre", { tabindex: "0", "aria-label": `Payload of dead letter ${id}`, text: short(text, 2000) })));
  }

  async replay(button, d) {
    const note = $("deadletter-message");
    button.disabled = true;
    try {
      const answer = await api("POST", `/deadletters/${encodeURIComponent(d.id)}/replay`);
      this.pendingReplays.set(answer.messageId, { id: d.id, tries: 0 });
      note.textContent = `Replay of ${d.id} accepted as message ${answer.messageId}; waiting for its record…`;
      note.dataset.result = "pending";
      await this.checkReplays();
    } catch (err) {
      note.textContent = `Replay of ${d.id} refused: ${err.code}: ${err.message}`;
      note.dataset.result = "refused";
    } finally {
      button.disabled = false;
    }
  }

  // Called on each feed tick while replays are pending: finds their message records.
  async checkReplays() {
    if (!this.pendingReplays.size) return;
    const records = await api("GET", "/messages?limit=200");
    const note = $("deadletter-message");
    for (const [messageId, pending] of this.pendingReplays) {
      const rec = records.find((r) => r.id === messageId);
      pending.tries += 1;
      if (rec && rec.status !== "PendingExecution") {
        this.pendingReplays.delete(messageId);
        note.textContent = `Replay of ${pending.id}: ${rec.status}${rec.error ? ` (${rec.error})` : ""}`;
        note.dataset.result = rec.status;
        await this.load(); // the row now says when it was replayed
      } else if (pending.tries > 30) {
        this.pendingReplays.delete(messageId);
        note.textContent = `Replay of ${pending.id}: no record yet for message ${messageId}`;
      }
    }
  }

  async tryDryRun(id) {
    const detail = await api("GET", `/deadletters/${encodeURIComponent(id)}`);
    this.onTryDryRun(detail);
  }
}

function decode(b64) {
  if (!b64) return "";
  const bytes = Uint8Array.from(atob(b64), (ch) => ch.charCodeAt(0));
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    return `base64: ${b64}`;
  }
}

export class Devices {
  constructor() {
    this.offset = 0;
    this.total = 0;
    this.filter = "";
    let timer = null;
    $("device-filter").addEventListener("input", (ev) => {
      clearTimeout(timer);
      timer = setTimeout(() => { this.filter = ev.target.value.trim(); this.offset = 0; this.load(); }, 250);
    });
    $("dev-prev").addEventListener("click", () => { this.offset = Math.max(0, this.offset - DEV_PAGE); this.load(); });
    $("dev-next").addEventListener("click", () => { this.offset += DEV_PAGE; this.load(); });
  }

  async load() {
    const q = this.filter ? `&q=${encodeURIComponent(this.filter)}` : "";
    const { data, resp } = await api("GET", `/devices?limit=${DEV_PAGE}&offset=${this.offset}${q}`, undefined, { raw: true });
    this.total = Number(resp.headers.get("X-Total-Count") || data.length);
    const now = Date.now();
    replaceRows($("device-rows"), data.map((d) => el("tr", { dataset: { device: d.deviceId } },
      el("th", { scope: "row" }, d.deviceId, d.name && d.name !== d.deviceId ? el("div", { class: "muted", text: d.name }) : null),
      el("td", { text: d.deviceConfiguration }),
      el("td", { class: "kv" }, pairs(d.attributes)),
      el("td", { class: "kv" }, pairs(d.stateMachines)),
      el("td", {}, el("time", { datetime: d.lastSeen || "", title: when(d.lastSeen), text: ago(d.lastSeen, now) })),
      el("td", { class: "kv" }, errors(d.propertyBag)))), this.filter ? "no device matches" : "no devices", 6);
    $("dev-prev").disabled = this.offset === 0;
    $("dev-next").disabled = this.offset + data.length >= this.total;
    $("dev-page").textContent = data.length
      ? `${(this.offset + 1).toLocaleString()}–${(this.offset + data.length).toLocaleString()} of ${this.total.toLocaleString()}`
      : "";
  }
}

function pairs(obj) {
  const entries = Object.entries(obj || {});
  if (!entries.length) return el("span", { class: "muted", text: "–" });
  return entries.slice(0, 8).map(([k, v]) => el("div", {}, el("span", { class: "k", text: k }), " ", short(v, 60)))
    .concat(entries.length > 8 ? [el("div", { class: "muted", text: `+${entries.length - 8} more` })] : []);
}

function errors(bag) {
  const active = (bag || {})["_system.errors"] || {};
  const entries = Object.entries(active);
  if (!entries.length) return el("span", { class: "muted", text: "none" });
  return entries.map(([code, e]) => el("div", { class: "error" }, el("code", { text: code }),
    ` ×${e.count ?? 1}${e.details ? `: ${short(e.details, 60)}` : ""}`));
}
