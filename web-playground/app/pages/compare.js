// Compare: two to ten jobs (chosen in the jobs list, named in the address as `?ids=a,b`): their training
// loss on one chart, their final metrics with deltas against the first, and every hyperparameter side by
// side, those that differ first.

import uPlot from '/playground/vendor/uPlot.esm.js';

import { gql } from '../api.js';
import { downsample, lineChart } from '../chart.js';
import { comparisonTable, errorBox, fill, h, metricRows } from '../ui.js';

const COMPARE = `query($ids: [ID!]!) { compareJobs(ids: $ids) {
  jobs { id name status modelName }
  hyperparameters { name values differs }
  metrics { metric values deltas } } }`;
const LOSS = 'query($id: ID!) { job(id: $id) { metricSeries(name: "train_loss", points: 2000) { step value } } }';

/// A table with a column per job, under a header row naming them.
function table(jobs, corner, rows, numeric = false) {
  return comparisonTable(corner, jobs.map((j) => h('a', { href: `#/jobs/${j.id}` }, j.name)), rows, numeric);
}

/// A setting's value as people read it: the API sends each as JSON (`"LINEAR"`, `null`, `[64, 64]`).
function setting(raw) {
  try {
    const value = JSON.parse(raw);
    if (value === null) return '–';
    return typeof value === 'string' ? value : JSON.stringify(value);
  } catch {
    return raw;
  }
}

/// Every hyperparameter per job; those that differ are marked (and come first).
function settingsTable(comparison) {
  const rows = comparison.hyperparameters.map((s) =>
    h('tr', { class: s.differs ? 'differs' : '' }, h('th', { scope: 'row' }, s.name), s.values.map((v) => h('td', {}, setting(v)))));
  return table(comparison.jobs, 'setting', rows);
}

export function render(main, params) {
  const ids = (params.get('ids') || '').split(',').filter(Boolean);
  const charts = [];
  fill(main, h('h1', {}, 'Compare jobs'), h('p', { class: 'muted' }, 'Loading…'));
  (async () => {
    let comparison;
    let curves;
    try {
      comparison = (await gql(COMPARE, { ids })).compareJobs;
      curves = await Promise.all(comparison.jobs.map((j) => gql(LOSS, { id: j.id }).then((d) => (d.job ? d.job.metricSeries : []))));
    } catch (e) {
      fill(main, h('h1', {}, 'Compare jobs'), errorBox(e),
        h('p', {}, 'Pick 2 to 10 jobs with the boxes in ', h('a', { href: '#/jobs' }, 'the jobs list'), '.'));
      return;
    }
    const jobs = comparison.jobs;
    const chartBox = h('section', { class: 'card chart-card' }, h('h2', {}, 'Training loss'));
    fill(main,
      h('p', {}, h('a', { href: '#/jobs' }, '← Jobs')),
      h('h1', {}, 'Compare jobs'),
      chartBox,
      h('section', { class: 'card' }, h('h2', {}, 'Final metrics'), table(jobs, 'metric', metricRows(comparison.metrics), true)),
      h('section', { class: 'card' }, h('h2', {}, 'Hyperparameters'), settingsTable(comparison)),
    );
    // One x axis for all: uPlot.join aligns the steps, leaving gaps where a job has no point.
    const tables = curves.map((points) => {
      const [x, y] = downsample(points.map((p) => p.step), points.map((p) => p.value));
      return [x, y];
    });
    const chart = lineChart(chartBox, { labels: jobs.map((j) => j.name), xLabel: 'step', yLabel: 'loss' });
    charts.push(chart);
    const joined = uPlot.join(tables);
    chart.setData(...joined);
    chartBox.dataset.series = String(joined.length - 1);
  })();
  return () => charts.splice(0).forEach((c) => c.destroy());
}
