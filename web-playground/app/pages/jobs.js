// Jobs: the list with filters and paging; rows of jobs still going follow their jobEvents live.

import { gql, subscribe } from '../api.js';
import { ACTIVE, doneFraction, jobActions, jobProgress } from '../jobcommon.js';
import { badge, errorBox, fill, h, percent, showError, when } from '../ui.js';

const PAGE = 20;
const STATUSES = ['', 'QUEUED', 'RUNNING', 'PAUSED', 'COMPLETED', 'FAILED', 'CANCELLED'];
const LIST = `query($status: JobStatus, $model: String, $first: Int, $after: String) {
  jobs(status: $status, modelName: $model, first: $first, after: $after) {
    totalCount pageInfo { hasNextPage endCursor }
    nodes { id name status modelName attempts createdAt startedAt dataset { name }
            progress { epoch totalEpochs step totalSteps } } } }`;
const EVENTS = `subscription($id: ID!) { jobEvents(jobId: $id) { __typename
  ... on JobStatusChanged { status }
  ... on StepProgress { step totalSteps epoch totalEpochs } } }`;

export function render(main, params) {
  const state = { status: params.get('status') || '', model: params.get('model') || '', cursors: [null] };
  const stops = [];
  const stopLive = () => stops.splice(0).forEach((stop) => stop());
  const errorSlot = h('div', { class: 'error-slot' });
  const body = h('div');

  const statusSelect = h(
    'select',
    { id: 'filter-status', 'aria-label': 'status' },
    STATUSES.map((s) => h('option', { value: s, selected: s === state.status }, s || 'any status')),
  );
  const modelInput = h('input', { id: 'filter-model', type: 'search', placeholder: 'model name', value: state.model, 'aria-label': 'model' });
  const filters = h(
    'form',
    { class: 'filters', onsubmit: (e) => { e.preventDefault(); apply(); } },
    h('label', {}, 'Status ', statusSelect),
    h('label', {}, 'Model ', modelInput),
    h('button', { type: 'submit' }, 'Filter'),
  );
  statusSelect.addEventListener('change', () => apply());

  function apply() {
    const query = new URLSearchParams();
    if (statusSelect.value) query.set('status', statusSelect.value);
    if (modelInput.value.trim()) query.set('model', modelInput.value.trim());
    location.hash = `#/jobs${query.toString() ? `?${query}` : ''}`;
  }

  async function load() {
    stopLive();
    showError(errorSlot, null);
    let data;
    try {
      data = await gql(LIST, {
        status: state.status || null,
        model: state.model || null,
        first: PAGE,
        after: state.cursors[state.cursors.length - 1],
      });
    } catch (e) {
      fill(body, errorBox(e));
      return;
    }
    const { nodes, totalCount, pageInfo } = data.jobs;
    const rows = nodes.map((job) => row(job));
    const page = state.cursors.length;
    fill(body,
      nodes.length
        ? h('div', { class: 'table-wrap' }, h('table', { class: 'jobs' },
            h('thead', {}, h('tr', {}, ['Job', 'Status', 'Progress', 'Model', 'Dataset', 'Attempts', 'Created', 'Started', ''].map((t) => h('th', { scope: 'col' }, t)))),
            h('tbody', {}, rows)))
        : h('p', { class: 'empty' }, state.status || state.model ? 'No job matches these filters.' : 'No jobs yet. Submit one through the API or GraphiQL.'),
      h('div', { class: 'pager' },
        h('span', {}, `${totalCount} job${totalCount === 1 ? '' : 's'} · page ${page}`),
        page > 1 ? h('button', { type: 'button', onclick: () => { state.cursors.pop(); load(); } }, 'Previous') : null,
        pageInfo.hasNextPage ? h('button', { type: 'button', onclick: () => { state.cursors.push(pageInfo.endCursor); load(); } }, 'Next') : null,
      ),
    );
  }

  function row(job) {
    const tr = h('tr', { 'data-job': job.id });
    const draw = () => {
      const fraction = doneFraction(job);
      fill(tr,
        h('td', {}, h('a', { href: `#/jobs/${job.id}` }, job.name)),
        h('td', { class: 'status' }, badge(job.status)),
        h('td', { class: 'progress-cell' }, jobProgress(job), h('span', { class: 'muted' }, percent(fraction))),
        h('td', {}, job.modelName),
        h('td', {}, job.dataset ? job.dataset.name : '–'),
        h('td', { class: 'num' }, job.attempts),
        h('td', {}, when(job.createdAt)),
        h('td', {}, when(job.startedAt)),
        h('td', {}, jobActions(job.id, job.status, errorSlot, (changed) => { job.status = changed.status; draw(); follow(); })),
      );
    };
    const follow = () => {
      if (!ACTIVE.includes(job.status) || tr.following) return;
      tr.following = true;
      stops.push(subscribe(EVENTS, { id: job.id }, (data) => {
        const event = data.jobEvents;
        if (event.__typename === 'JobStatusChanged') job.status = event.status;
        if (event.__typename === 'StepProgress') {
          job.progress = { ...(job.progress || {}), step: event.step, totalSteps: event.totalSteps, epoch: event.epoch, totalEpochs: event.totalEpochs };
        }
        draw();
      }, (e) => showError(errorSlot, e)));
    };
    draw();
    follow();
    return tr;
  }

  fill(main, h('h1', {}, 'Jobs'), filters, errorSlot, body);
  load();
  return stopLive;
}
