// Line charts (uPlot, vendored unmodified) that follow their container's width, and downsampling so
// that a run of 100 000 steps draws as fast as one of 2 000.

import uPlot from '/playground/vendor/uPlot.esm.js';

import { sig } from './ui.js';

const COLORS = ['#e8590c', '#1c7ed6', '#2f9e44', '#ae3ec9', '#f59f00'];
const MAX_POINTS = 2000;

/// Bucket means: at most `max` points, the last point kept as it is.
export function downsample(xs, ys, max = MAX_POINTS) {
  if (xs.length <= max) return [xs, ys];
  const size = Math.ceil(xs.length / max);
  const outX = [];
  const outY = [];
  for (let start = 0; start < xs.length; start += size) {
    const end = Math.min(start + size, xs.length);
    let sum = 0;
    for (let i = start; i < end; i += 1) sum += ys[i];
    outX.push(xs[end - 1]);
    outY.push(sum / (end - start));
  }
  return [outX, outY];
}

/// A step or epoch number on an axis: 900, 2500, 25k, 1.2M.
function count(n) {
  if (Math.abs(n) >= 1e6) return `${sig(n / 1e6)}M`;
  if (Math.abs(n) >= 1e4) return `${sig(n / 1e3)}k`;
  return Number.isInteger(n) ? String(n) : sig(n);
}

/// A chart in `container` with one line per label; `axes` labels x and y.
export function lineChart(container, { title, labels, xLabel, yLabel }) {
  const dark = matchMedia('(prefers-color-scheme: dark)').matches;
  const ink = dark ? '#ced4da' : '#343a40';
  const grid = dark ? '#343a40' : '#e9ecef';
  const holder = document.createElement('div');
  holder.className = 'chart';
  container.append(holder);
  const width = () => Math.max(260, holder.clientWidth || container.clientWidth || 600);
  const axis = (label, format = sig) => ({ label, stroke: ink, grid: { stroke: grid }, ticks: { stroke: grid }, values: (_, ticks) => ticks.map(format) });
  const plot = new uPlot(
    {
      title,
      width: width(),
      height: 220,
      scales: { x: { time: false } },
      axes: [axis(xLabel, count), { ...axis(yLabel), size: 64 }],
      series: [{ label: xLabel }, ...labels.map((label, i) => ({ label, stroke: COLORS[i % COLORS.length], width: 2, points: { show: false }, spanGaps: true }))],
      legend: { live: true },
    },
    [[], ...labels.map(() => [])],
    holder,
  );
  const resize = new ResizeObserver(() => plot.setSize({ width: width(), height: 220 }));
  resize.observe(holder);
  return {
    /// `x` and one array per label, of the same length.
    setData(x, ...ys) {
      plot.setData([x, ...ys]);
    },
    destroy() {
      resize.disconnect();
      plot.destroy();
    },
  };
}
