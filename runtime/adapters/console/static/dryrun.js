// The dry-run panel: POST /pipeline/test, then each stage in order with its output or where it stopped.
import { api } from "./api.js";
import { $, el, short } from "./dom.js";

export class DryRun {
  constructor() {
    $("dryrun-form").addEventListener("submit", (ev) => { ev.preventDefault(); this.run(); });
  }

  setListeners(keys) {
    const select = $("dr-listener");
    const have = [...select.options].map((o) => o.value).join("\n");
    if (have === keys.join("\n")) return;
    const current = select.value;
    select.replaceChildren(...keys.map((k) => el("option", { value: k, text: k })));
    if (keys.includes(current)) select.value = current;
  }

  // A dead letter's "try in the dry run": its listener, address, headers and payload go into the form.
  open(detail) {
    const select = $("dr-listener");
    if (detail.listener && ![...select.options].some((o) => o.value === detail.listener)) {
      select.append(el("option", { value: detail.listener, text: detail.listener }));
    }
    if (detail.listener) select.value = detail.listener;
    $("dr-topic").value = detail.topic || "";
    $("dr-path").value = detail.path || "";
    $("dr-method").value = "";
    $("dr-headers").value = Object.entries(detail.headers || {}).map(([k, v]) => `${k}: ${v}`).join("\n");
    const binary = detail.payloadText === null || detail.payloadText === undefined;
    $("dr-base64").checked = binary && Boolean(detail.payload);
    $("dr-payload").value = binary ? (detail.payload || "") : detail.payloadText;
    $("dryrun").scrollIntoView({ block: "start" });
    $("dr-payload").focus();
    return this.run();
  }

  async run() {
    const message = $("dryrun-message");
    message.textContent = "";
    const headers = {};
    for (const line of $("dr-headers").value.split("\n")) {
      const at = line.indexOf(":");
      if (at > 0) headers[line.slice(0, at).trim()] = line.slice(at + 1).trim();
    }
    const body = { listener: $("dr-listener").value, headers };
    const topic = $("dr-topic").value.trim(), path = $("dr-path").value.trim(), method = $("dr-method").value.trim();
    if (topic) body.topic = topic;
    if (path) body.path = path;
    if (method) body.method = method;
    if ($("dr-base64").checked) body.payloadBase64 = $("dr-payload").value.trim();
    else body.payload = $("dr-payload").value;
    const button = $("dr-run");
    button.disabled = true;
    try {
      this.show(await api("POST", "/pipeline/test", body));
    } catch (err) {
      message.textContent = `The dry run was refused: ${err.code}: ${err.message}`;
      $("dryrun-result").replaceChildren();
    } finally {
      button.disabled = false;
    }
  }

  show(answer) {
    const items = answer.stages.map((s, i) => el("li", { class: `stage ${s.ok ? "ok" : "stopped"}`, dataset: { stage: s.stage, ok: String(s.ok) } },
      el("h3", {}, el("span", { class: "n", text: `${i + 1}` }), ` ${s.stage} `,
        el("span", { class: `pill ${s.ok ? "ok" : "failed"}`, text: s.ok ? "ok" : "stopped here" })),
      s.ok ? describe(s.stage, s.output) : el("p", { class: "error" }, el("code", { text: s.error.code }), ` ${s.error.message}`)));
    const summary = el("p", { class: answer.ok ? "summary ok" : "summary failed", id: "dryrun-summary" },
      el("strong", { text: answer.status }), ` · device ${answer.deviceId ?? "–"} · message ${answer.messageId ?? "–"} · `,
      el("span", { class: "muted", text: `side effects: ${answer.sideEffects}` }));
    const extras = [];
    if (answer.warnings?.length) extras.push(el("ul", { class: "warnings" }, answer.warnings.map((w) => el("li", { text: w }))));
    if (answer.logs?.length) extras.push(el("pre", { class: "logs", text: answer.logs.join("\n") }));
    $("dryrun-result").replaceChildren(summary, el("ol", { class: "stages" }, items), ...extras);
  }
}

function table(rows, head) {
  if (!rows.length) return el("p", { class: "muted", text: "nothing" });
  return el("table", { class: "inner" }, el("thead", {}, el("tr", {}, head.map((h) => el("th", { scope: "col", text: h })))),
    el("tbody", {}, rows.map((r) => el("tr", {}, r.map((c) => el("td", { text: typeof c === "string" ? c : JSON.stringify(c) }))))));
}

function describe(stage, out) {
  switch (stage) {
    case "planner":
      return el("p", { text: `device ${out.deviceId}, message ${out.messageId}, route ${out.route} (configuration ${out.deviceConfiguration})` });
    case "sentinel":
      return el("p", { text: `passed: ${out.sentinels.join(", ")}` });
    case "inputtranslator":
      return table(out.fields.map((f) => [f.key, f.type, f.value]), ["field", "type", "value"]);
    case "workflow":
      return el("div", {}, out.workflows.length ? out.workflows.map((w) => el("div", { class: "wf" },
        el("p", { text: `workflow ${w.workflow} (${w.scriptCalls} script call(s))` }),
        table([...Object.entries(w.attributes).map(([k, c]) => ["attribute", k, c.from, c.to]),
          ...Object.entries(w.stateMachines).map(([k, c]) => ["state machine", k, c.from, c.to])], ["", "key", "from", "to"]),
        w.outputCommands.length ? el("p", { text: `output commands: ${w.outputCommands.map((c) => `${c.key} ${JSON.stringify(c.fields)}`).join("; ")}` }) : null))
        : el("p", { class: "muted", text: "no workflow on this route" }), el("p", { class: "muted", text: "device state not saved" }));
    case "outputtranslator":
      return table(out.messages.map((m) => [m.messageKey, m.contentType, m.transmitters.join(", ") || "none", short(m.payload ?? m.payloadBase64 ?? "", 200)]),
        ["outgoing message", "content type", "transmitters", "payload"]);
    case "transmitter":
      return table(out.wouldSend.map((m) => [m.transmitter, m.transmitterType, m.messageKey, m.topic || m.pathAndQuery || "", short(m.payload ?? m.payloadBase64 ?? "", 120)]),
        ["would send with", "type", "message", "topic / path", "payload"]);
    default:
      return el("pre", { text: JSON.stringify(out, null, 1) });
  }
}
