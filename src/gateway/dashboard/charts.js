// A line chart of the last minutes on a <canvas>, drawn by hand: no
// library, nothing fetched. Points are [timeMs, value].

const PAD = { left: 44, right: 8, top: 8, bottom: 18 };

export class LineChart {
  constructor(canvas, { color = "#2a7ab0", spanMs = 10 * 60 * 1000, unit = "" } = {}) {
    this.canvas = canvas;
    this.color = color;
    this.spanMs = spanMs;
    this.unit = unit;
    this.points = [];
  }

  /** Adds a point and forgets the ones older than the span. */
  push(timeMs, value) {
    this.points.push([timeMs, value]);
    const oldest = timeMs - this.spanMs;
    while (this.points.length && this.points[0][0] < oldest) this.points.shift();
    this.draw(timeMs);
  }

  draw(nowMs) {
    const canvas = this.canvas;
    // Draw at the element's real size so lines stay sharp.
    const ratio = window.devicePixelRatio || 1;
    const width = Math.max(200, Math.round(canvas.clientWidth * ratio));
    const height = Math.max(100, Math.round(canvas.clientHeight * ratio));
    if (canvas.width !== width) canvas.width = width;
    if (canvas.height !== height) canvas.height = height;
    const g = canvas.getContext("2d");
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    const w = width / ratio;
    const h = height / ratio;
    g.clearRect(0, 0, w, h);
    const max = niceCeiling(Math.max(1, ...this.points.map((p) => p[1])));
    const x = (t) => PAD.left + ((t - (nowMs - this.spanMs)) / this.spanMs) * (w - PAD.left - PAD.right);
    const y = (v) => h - PAD.bottom - (v / max) * (h - PAD.top - PAD.bottom);
    g.font = "11px system-ui, sans-serif";
    g.fillStyle = "#6b7885";
    g.strokeStyle = "#dde3e8";
    g.lineWidth = 1;
    for (const v of [0, max / 2, max]) {
      g.beginPath();
      g.moveTo(PAD.left, y(v));
      g.lineTo(w - PAD.right, y(v));
      g.stroke();
      g.fillText(formatValue(v) + this.unit, 4, y(v) + 4);
    }
    const minutes = Math.round(this.spanMs / 60000);
    g.fillText(`-${minutes} min`, PAD.left, h - 4);
    g.fillText("now", w - PAD.right - 22, h - 4);
    if (this.points.length < 1) return;
    g.strokeStyle = this.color;
    g.lineWidth = 2;
    g.beginPath();
    this.points.forEach(([t, v], i) => (i ? g.lineTo(x(t), y(v)) : g.moveTo(x(t), y(v))));
    g.stroke();
    const [, last] = this.points[this.points.length - 1];
    g.fillStyle = this.color;
    g.fillText(formatValue(last) + this.unit, w - PAD.right - 60, PAD.top + 10);
  }
}

function niceCeiling(v) {
  const step = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) if (v <= m * step) return m * step;
  return 10 * step;
}

function formatValue(v) {
  return Number.isInteger(v) ? String(v) : v.toFixed(1);
}
