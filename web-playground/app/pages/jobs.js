// Jobs: the list with filters and paging, kept current by one jobChanges subscription: rows move as
// their jobs do, and a new job (or word of missed changes) reads the page again.

import { gql, subscribe } from '../api.js';
import { doneFraction, jobActions, jobProgress } from '../jobcommon.js';
import { badge, errorBox, fill, h, pager, percent, showError, when } from '../ui.js';

const PAGE = 20;
const STATUSES = ['', 'QUEUED', 'RUNNING', 'PAUSED', 'COMPLETED', 'FAILED', 'CANCELLED'];
const LIST = `query($status: JobStatus, $model: String, $first: Int, $after: String) {
  jobs(status: $status, modelName: $model, first: $first, after: $after) {
    totalCount pageInfo { hasNextPage endCursor }
    nodes { id name status modelName attempts createdAt startedAt dataset { name }
            progress { epoch totalEpochs step totalSteps } } } }`;
const CHANGES = `subscription { jobChanges { __typename
  ... on JobStatusChanged { jobId status }
  ... on StepProgress { jobId step totalSteps epoch totalEpochs } } }`;

export function render(main, params) {
  const state = { status: params.get('status') || '', model: params.get('model') || '', cursors: [null] };
  /// The rows on the page, by job id: the job and the function that redraws its row.
  const shown = new Map();
  /// The jobs ticked for comparison (kept across pages).
  const picked = new Set();
  const compareButton = h('button', { type: 'button', id: 'compare', disabled: true, onclick: () => {
    location.hash = `#/compare?ids=${[...picked].join(',')}`;
  } }, 'Compare selected');
  const pickedChanged = () => {
    compareButton.disabled = picked.size < 2 || picked.size > 10;
    compareButton.textContent = picked.size ? `Compare ${picked.size} selected` : 'Compare selected';
  };
  let reload = null;
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
    compareButton,
  );
  statusSelect.addEventListener('change', () => apply());

  function apply() {
    const query = new URLSearchParams();
    if (statusSelect.value) query.set('status', statusSelect.value);
    if (modelInput.value.trim()) query.set('model', modelInput.value.trim());
    location.hash = `#/jobs${query.toString() ? `?${query}` : ''}`;
  }

  async function load() {
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
    shown.clear();
    const rows = nodes.map((job) => row(job));
    fill(body,
      nodes.length
        ? h('div', { class: 'table-wrap' }, h('table', { class: 'jobs' },
            h('thead', {}, h('tr', {}, ['', 'Job', 'Status', 'Progress', 'Model', 'Dataset', 'Attempts', 'Created', 'Started', ''].map((t) => h('th', { scope: 'col' }, t)))),
            h('tbody', {}, rows)))
        : h('p', { class: 'empty' }, state.status || state.model ? 'No job matches these filters.' : 'No jobs yet. Submit one through the API or GraphiQL.'),
      pager('job', totalCount, PAGE, state.cursors, pageInfo, load),
    );
  }

  function row(job) {
    const tr = h('tr', { 'data-job': job.id });
    const draw = () => {
      const fraction = doneFraction(job);
      const tick = h('input', { type: 'checkbox', checked: picked.has(job.id), 'aria-label': `compare ${job.name}` });
      tick.addEventListener('change', () => {
        if (tick.checked) picked.add(job.id);
        else picked.delete(job.id);
        pickedChanged();
      });
      fill(tr,
        h('td', { class: 'pick' }, tick),
        h('td', {}, h('a', { href: `#/jobs/${job.id}` }, job.name)),
        h('td', { class: 'status' }, badge(job.status)),
        h('td', { class: 'progress-cell' }, jobProgress(job), h('span', { class: 'muted' }, percent(fraction))),
        h('td', {}, job.modelName),
        h('td', {}, job.dataset ? job.dataset.name : '–'),
        h('td', { class: 'num' }, job.attempts),
        h('td', {}, when(job.createdAt)),
        h('td', {}, when(job.startedAt)),
        h('td', {}, jobActions(job.id, job.status, errorSlot, (changed) => { job.status = changed.status; draw(); })),
      );
    };
    draw();
    shown.set(job.id, { job, draw });
    return tr;
  }

  /// Reads the page again soon (many changes at once make one read).
  function reloadSoon() {
    clearTimeout(reload);
    reload = setTimeout(load, 300);
  }

  const stop = subscribe(CHANGES, {}, (data) => {
    const change = data.jobChanges;
    if (change.__typename === 'JobChangesMissed') {
      reloadSoon();
      return;
    }
    const row = shown.get(change.jobId);
    if (!row) {
      // A job this page does not show: a new one belongs on the first page; others moved elsewhere.
      if (change.__typename === 'JobStatusChanged' && change.status === 'QUEUED' && state.cursors.length === 1) reloadSoon();
      return;
    }
    if (change.__typename === 'JobStatusChanged') {
      // A filtered list whose job left the filter is read again.
      if (state.status && change.status !== state.status) reloadSoon();
      row.job.status = change.status;
      if (change.status === 'RUNNING' && !row.job.startedAt) row.job.startedAt = new Date().toISOString();
      if (change.status === 'RUNNING') row.job.attempts = Math.max(row.job.attempts, 1);
    } else {
      row.job.progress = { step: change.step, totalSteps: change.totalSteps, epoch: change.epoch, totalEpochs: change.totalEpochs };
    }
    row.draw();
  }, (e) => showError(errorSlot, e));

  fill(main, h('h1', {}, 'Jobs'), filters, errorSlot, body);
  load();
  return () => {
    clearTimeout(reload);
    stop();
  };
}
