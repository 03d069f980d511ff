// The landing page: jobs of the last seven days by status (jobsSummary), what is running and waiting,
// and the newest model versions.

import { gql } from '../api.js';
import { badge, duration, errorBox, fill, h, sig, when } from '../ui.js';

const WEEK_MS = 7 * 24 * 3600 * 1000;
const HOME = `query($since: String!) {
  jobsSummary(since: $since) { all { total byStatus { status count } meanQueueWaitMs meanRunMs } }
  running: jobs(status: RUNNING, first: 5) { totalCount nodes { id name modelName progress { percent } } }
  queued: jobs(status: QUEUED, first: 5) { totalCount nodes { id name modelName createdAt } }
  completed: jobs(status: COMPLETED, first: 5) { nodes { modelVersion { version createdAt metrics { accuracy f1 } model { name } } } } }`;

export function render(main) {
  fill(main, h('h1', {}, 'kiln'), h('p', { class: 'muted' }, 'Loading…'));
  (async () => {
    let data;
    try {
      data = await gql(HOME, { since: new Date(Date.now() - WEEK_MS).toISOString() });
    } catch (e) {
      fill(main, h('h1', {}, 'kiln'), errorBox(e));
      return;
    }
    const tally = data.jobsSummary.all;
    // The versions the newest completed jobs registered (a deleted version leaves its job without one).
    const versions = data.completed.nodes.map((j) => j.modelVersion).filter(Boolean);
    const jobList = (list, empty, extra) => (list.nodes.length
      ? h('ul', { class: 'plain' }, list.nodes.map((j) => h('li', {}, h('a', { href: `#/jobs/${j.id}` }, j.name), h('span', { class: 'muted' }, ` · ${j.modelName}`, extra(j)))))
      : h('p', { class: 'muted' }, empty));
    fill(main,
      h('h1', {}, 'Overview'),
      h('div', { class: 'columns' },
        h('section', { class: 'card summary' }, h('h2', {}, 'Jobs in the last 7 days'),
          h('p', { class: 'big' }, String(tally.total)),
          h('p', {}, tally.byStatus.filter((s) => s.count).map((s) => h('span', { class: 'tally' }, badge(s.status), ` ${s.count}`))),
          h('p', { class: 'muted' }, `mean wait in the queue ${duration(tally.meanQueueWaitMs)} · mean run ${duration(tally.meanRunMs)}`)),
        h('section', { class: 'card' }, h('h2', {}, `Running (${data.running.totalCount})`),
          jobList(data.running, 'Nothing is training.', (j) => (j.progress ? ` · ${Math.round(j.progress.percent)} %` : ''))),
        h('section', { class: 'card' }, h('h2', {}, `Waiting (${data.queued.totalCount})`),
          jobList(data.queued, 'The queue is empty.', (j) => ` · since ${when(j.createdAt)}`)),
        h('section', { class: 'card' }, h('h2', {}, 'Newest versions'),
          versions.length
            ? h('ul', { class: 'plain' }, versions.map((v) => h('li', {}, h('a', { href: `#/models/${encodeURIComponent(v.model.name)}` }, `${v.model.name} v${v.version}`),
                h('span', { class: 'muted' }, ` · accuracy ${sig(v.metrics.accuracy)} · F1 ${sig(v.metrics.f1)} · ${when(v.createdAt)}`))))
            : h('p', { class: 'muted' }, 'No model yet.'))),
      h('p', {}, h('a', { href: '#/jobs' }, 'All jobs'), ' · ', h('a', { href: '#/submit' }, 'Submit a job')));
  })();
  return () => {};
}
