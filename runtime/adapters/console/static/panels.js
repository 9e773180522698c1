// The live panels drawn from each status event of the feed: instance, counters and chart, listeners;
// and the two small lists fetched on change: events and data streams.
import { api } from "./api.js";
import { RateChart } from "./chart.js";
import { $, ago, duration, el, replaceRows, setText, when } from "./dom.js";

const COUNTERS = [["received", "Received"], ["processed", "Processed"], ["failed", "Failed"],
  ["deadLettered", "Dead-lettered"], ["refused", "Refused"]];

export class LivePanels {
  constructor() {
    this.prev = null;
    this.chart = new RateChart($("chart"), $("chart-legend"), [
      { key: "received", label: "received/s", cls: "s-received" },
      { key: "processed", label: "processed/s", cls: "s-processed" },
      { key: "failed", label: "failed/s", cls: "s-failed" },
    ]);
    this.counterNodes = new Map();
    $("counters").replaceChildren(...COUNTERS.map(([key, label]) => {
      const dd = el("dd", { id: `counter-${key}`, text: "0" });
      this.counterNodes.set(key, dd);
      return el("div", {}, el("dt", { text: label }), dd);
    }));
  }

  update(status) {
    const now = new Date(status.at || Date.now()).getTime();
    const prev = this.prev;
    const dt = prev ? Math.max(0.001, (now - prev.t) / 1000) : 0;
    this.instance(status, now);
    const c = status.counters || {};
    for (const [key] of COUNTERS) {
      const node = this.counterNodes.get(key);
      const text = (c[key] ?? 0).toLocaleString();
      if (node.textContent !== text) node.textContent = text;
    }
    if (prev) {
      const rate = (k) => Math.max(0, ((c[k] ?? 0) - (prev.counters[k] ?? 0)) / dt);
      this.chart.push({ received: rate("received"), processed: rate("processed"), failed: rate("failed") });
    }
    this.listeners(status, prev, dt);
    this.prev = { t: now, counters: { ...c }, byListener: { ...(status.byListener || {}) } };
  }

  instance(s, now) {
    setText("instance-id", `instance ${s.instanceId}`);
    const state = $("state");
    setText("state", s.state);
    state.dataset.state = s.state;
    setText("state-reason", s.reason ? `(${s.reason})` : "");
    const sol = s.solution;
    setText("solution", sol ? `${sol.name || sol.key} (${sol.key}) version ${sol.version ?? "–"}${sol.fromCache ? ", last good copy" : ""}` : "none loaded");
    setText("uptime", s.startedAt ? `${duration((now - new Date(s.startedAt).getTime()) / 1000)} (since ${when(s.startedAt)})` : "–");
    setText("since", `${when(s.since)} (${ago(s.since, now)})`);
    const lr = s.lastReload;
    setText("last-reload", lr ? `${when(lr.at)}: ${lr.ok ? "ok" : `failed: ${lr.error}`}` : "never");
    setText("input-port", s.inputCommandPort ? `port ${s.inputCommandPort}` : "closed");
  }

  listeners(s, prev, dt) {
    const by = s.byListener || {};
    const rows = (s.listeners || []).map((l) => {
      const count = by[l.key] ?? 0;
      const rate = prev ? Math.max(0, (count - (prev.byListener[l.key] ?? 0)) / dt) : 0;
      return el("tr", { dataset: { listener: l.key } },
        el("th", { scope: "row", text: l.key }), el("td", { text: l.type }), el("td", { text: l.port ?? "–" }),
        el("td", {}, el("span", { class: `pill ${l.state}`, text: l.state })),
        el("td", { text: count.toLocaleString() }), el("td", { text: rate.toFixed(1) }));
    });
    replaceRows($("listener-rows"), rows, "no listener is running (the data plane runs only while Running)", 6);
  }
}

export async function loadEvents() {
  const events = await api("GET", "/events?limit=15");
  // a state transition, or a device error raised or cleared (kind "deviceError")
  const rows = events.map((e) => el("li", { dataset: { kind: e.kind || "state" } },
    el("time", { datetime: e.at, text: when(e.at) }), " ",
    el("strong", { text: e.kind === "deviceError" ? `${e.deviceId}: ${e.code} ${e.action}` : `${e.from || "–"} → ${e.to}` }),
    e.kind === "deviceError" ? ` (${e.source})` : "", e.reason ? ` ${e.reason}` : ""));
  $("event-rows").replaceChildren(...rows);
}

// Rows the stream's database refused: the running total, and those still kept aside (to look at and queue
// again with GET /datastreams/{key}/rejected and POST .../rejected/requeue), with the database's last reason.
function rejected(d) {
  const total = d.rejected ?? 0;
  const kept = d.rejectedKept ?? 0;
  return el("td", { class: kept ? "error" : null, title: d.lastRejection || null,
    text: kept ? `${total.toLocaleString()} (${kept.toLocaleString()} kept)` : total.toLocaleString() });
}

// Data streams: the panel shows only when GET /datastreams answers 200.
export async function loadDatastreams() {
  let streams;
  try {
    streams = await api("GET", "/datastreams");
  } catch {
    $("datastreams").hidden = true;
    return false;
  }
  if (!Array.isArray(streams)) { $("datastreams").hidden = true; return false; }
  $("datastreams").hidden = false;
  replaceRows($("datastream-rows"), streams.map((d) => el("tr", {},
    el("th", { scope: "row", text: d.name ? `${d.name} (${d.key})` : d.key }), el("td", { text: d.type ?? "–" }),
    el("td", { text: (d.depth ?? 0).toLocaleString() }), rejected(d), el("td", { text: when(d.lastWriteAt) }),
    el("td", { class: d.lastError ? "error" : "muted", text: d.lastError || "none" }))), "no data stream", 6);
  return true;
}
