// A live line chart on a canvas: a few series over the last N samples, with its own axis.
// Small enough that the console needs no charting library.

export class LineChart {
  constructor(canvas, series, capacity = 60) {
    this.canvas = canvas;
    this.series = series; // [{label, color}]
    this.capacity = capacity;
    this.points = series.map(() => []);
  }

  push(values) {
    values.forEach((v, i) => {
      const p = this.points[i];
      p.push(v);
      if (p.length > this.capacity) p.shift();
    });
    this.draw();
  }

  draw() {
    const c = this.canvas;
    const ratio = window.devicePixelRatio || 1;
    const width = c.clientWidth || 600;
    const height = c.clientHeight || 200;
    c.width = width * ratio;
    c.height = height * ratio;
    const g = c.getContext('2d');
    g.scale(ratio, ratio);
    g.clearRect(0, 0, width, height);
    const pad = {l: 56, r: 8, t: 8, b: 20};
    const max = Math.max(1, ...this.points.flat());
    const top = niceCeil(max);
    const style = getComputedStyle(c);
    g.font = `11px ${style.fontFamily}`;
    g.fillStyle = style.color;
    g.strokeStyle = 'rgba(128,128,128,0.25)';
    g.lineWidth = 1;
    for (let i = 0; i <= 4; i++) {
      const y = pad.t + ((height - pad.t - pad.b) * i) / 4;
      g.beginPath();
      g.moveTo(pad.l, y);
      g.lineTo(width - pad.r, y);
      g.stroke();
      g.fillText(short(top * (1 - i / 4)), 4, y + 4);
    }
    const span = this.capacity - 1;
    this.series.forEach((s, i) => {
      const p = this.points[i];
      g.strokeStyle = s.color;
      g.lineWidth = 2;
      g.beginPath();
      p.forEach((v, j) => {
        const x = pad.l + ((width - pad.l - pad.r) * (span - (p.length - 1 - j))) / span;
        const y = pad.t + (height - pad.t - pad.b) * (1 - v / top);
        if (j === 0) g.moveTo(x, y);
        else g.lineTo(x, y);
      });
      g.stroke();
    });
  }
}

function niceCeil(v) {
  const e = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) if (v <= m * e) return m * e;
  return 10 * e;
}

/** 1234567 → "1.2M". */
export function short(v) {
  if (v >= 1e6) return `${(v / 1e6).toFixed(1)}M`;
  if (v >= 1e3) return `${(v / 1e3).toFixed(1)}k`;
  return String(Math.round(v * 100) / 100);
}
