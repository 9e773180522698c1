// A small SVG line chart of message rates (no library): one polyline per series, a y axis with its maximum.
const NS = "http://www.w3.org/2000/svg";
const W = 600, H = 160, PAD = 34;

function svg(tag, attrs) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  return node;
}

export class RateChart {
  // series: [{key, label, cls}]; window: samples kept (one a second)
  constructor(container, legend, series, window = 300) {
    this.series = series;
    this.window = window;
    this.samples = [];
    this.root = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "rate-chart", "aria-hidden": "true", focusable: "false" });
    container.replaceChildren(this.root);
    legend.replaceChildren(...series.map((s) => {
      const item = document.createElement("span");
      item.className = `key ${s.cls}`;
      item.textContent = s.label;
      return item;
    }));
    this.draw(); // the axes at once, the lines from the second sample
  }

  push(sample) {
    this.samples.push(sample);
    if (this.samples.length > this.window) this.samples.shift();
    this.draw();
  }

  draw() {
    const n = this.window;
    let max = 1;
    for (const s of this.samples) for (const { key } of this.series) max = Math.max(max, s[key] || 0);
    max = niceCeil(max);
    const x = (i) => PAD + ((W - PAD - 4) * i) / (n - 1);
    const y = (v) => H - 18 - ((H - 28) * v) / max;
    const nodes = [
      svg("line", { x1: PAD, y1: y(0), x2: W - 4, y2: y(0), class: "axis" }),
      svg("line", { x1: PAD, y1: y(max), x2: W - 4, y2: y(max), class: "grid" }),
      svg("line", { x1: PAD, y1: y(max / 2), x2: W - 4, y2: y(max / 2), class: "grid" }),
      label(4, y(max) + 4, fmt(max)), label(4, y(max / 2) + 4, fmt(max / 2)), label(4, y(0) + 4, "0"),
      label(PAD, H - 2, `${Math.round(n / 60)} min ago`), label(W - 30, H - 2, "now"),
    ];
    const offset = n - this.samples.length;
    for (const { key, cls } of this.series) {
      const points = this.samples.map((s, i) => `${x(offset + i).toFixed(1)},${y(s[key] || 0).toFixed(1)}`);
      if (points.length > 1) nodes.push(svg("polyline", { points: points.join(" "), class: `line ${cls}` }));
    }
    this.root.replaceChildren(...nodes);
  }
}

function label(xPos, yPos, text) {
  const t = svg("text", { x: xPos, y: yPos, class: "tick" });
  t.textContent = text;
  return t;
}

function niceCeil(v) {
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

function fmt(v) {
  return v >= 1000 ? `${(v / 1000).toFixed(v >= 10000 ? 0 : 1)}k` : String(Math.round(v * 10) / 10);
}
