// A small live time-series chart on uPlot (loaded as a classic script: window.uPlot).

const MAX_POINTS = 90;

function cssVar(name, fallback) {
  const v = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  return v || fallback;
}

/** Seconds since the epoch as local HH:MM:SS. */
function clock(seconds) {
  const d = new Date(seconds * 1000);
  const p = (n) => String(n).padStart(2, '0');
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

export class LiveChart {
  /** label: series name; unit: appended to axis values; test: the data-test of the container. */
  constructor({ label, unit = '', test, color = '#2563eb', digits = 1 }) {
    this.label = label;
    this.unit = unit;
    this.color = color;
    this.digits = digits;
    this.xs = [];
    this.ys = [];
    this.plot = null;
    this.el = document.createElement('div');
    this.el.className = 'chart';
    this.el.setAttribute('data-test', test);
    this.el.setAttribute('role', 'img');
    this.el.setAttribute('aria-label', `${label} over the last minutes`);
    this.onResize = () => {
      if (this.resizeQueued) return;
      this.resizeQueued = true;
      requestAnimationFrame(() => {
        this.resizeQueued = false;
        this.fit();
      });
    };
    window.addEventListener('resize', this.onResize);
  }

  /** Adds a point (x in seconds since the epoch; y may be null for "no data"). */
  push(x, y) {
    this.xs.push(x);
    this.ys.push(y === undefined || Number.isNaN(y) ? null : y);
    if (this.xs.length > MAX_POINTS) {
      this.xs.shift();
      this.ys.shift();
    }
    this.draw();
  }

  draw() {
    const uPlot = window.uPlot;
    if (!uPlot || !this.el.isConnected) return;
    if (!this.plot) {
      const axis = cssVar('--muted', '#666');
      const grid = cssVar('--grid', 'rgba(128,128,128,0.2)');
      const unit = this.unit;
      const digits = this.digits;
      this.plot = new uPlot(
        {
          width: this.width(),
          height: 150,
          legend: { show: false },
          cursor: { show: true, drag: { x: false, y: false } },
          scales: { x: { time: true }, y: { range: (u, min, max) => [0, max > 0 ? max * 1.15 : 1] } },
          series: [
            {},
            { label: this.label, stroke: this.color, width: 2, fill: `${this.color}22`, spanGaps: false, points: { show: false } },
          ],
          axes: [
            {
              stroke: axis,
              grid: { stroke: grid, width: 1 },
              ticks: { stroke: grid },
              space: 70,
              incrs: [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600],
              values: (u, vals) => vals.map((v) => clock(v)),
            },
            {
              stroke: axis,
              size: 64,
              grid: { stroke: grid, width: 1 },
              ticks: { stroke: grid },
              values: (u, vals) => vals.map((v) => `${Number(v.toFixed(digits))}${unit}`),
            },
          ],
        },
        [this.xs, this.ys],
        this.el,
      );
    } else {
      this.plot.setData([this.xs, this.ys]);
    }
  }

  width() {
    return Math.max(200, Math.floor(this.el.clientWidth || this.el.parentElement?.clientWidth || 300));
  }

  fit() {
    if (this.plot && this.el.isConnected) this.plot.setSize({ width: this.width(), height: 150 });
  }

  destroy() {
    window.removeEventListener('resize', this.onResize);
    this.plot?.destroy();
    this.plot = null;
  }
}
