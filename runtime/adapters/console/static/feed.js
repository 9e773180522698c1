// The live feed: GET /feed read with fetch() streaming (text/event-stream), so the token goes in the
// Authorization header (EventSource cannot send one). Reconnects with a growing delay.
import { headers } from "./api.js";

export function openFeed({ onStatus, onState, onUnauthorized }) {
  const control = new AbortController();
  let delay = 500;

  async function once() {
    const resp = await fetch("/feed", { headers: headers({ Accept: "text/event-stream" }), cache: "no-store",
      credentials: "omit", signal: control.signal });
    if (resp.status === 401) { onUnauthorized(); return false; }
    if (!resp.ok || !resp.body) throw new Error(`feed answered ${resp.status}`);
    onState("live");
    delay = 500;
    const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return true;
      buffer += value;
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        let event = "message", data = "";
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) event = line.slice(6).trim();
          else if (line.startsWith("data:")) data += line.slice(5).trim();
        }
        if (event === "status" && data) onStatus(JSON.parse(data));
      }
    }
  }

  (async () => {
    while (!control.signal.aborted) {
      try {
        if ((await once()) === false) return;
      } catch (err) {
        if (control.signal.aborted) return;
      }
      onState("reconnecting");
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, 8000);
    }
  })();

  return () => control.abort();
}
