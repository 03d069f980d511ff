// The queue: the jobs waiting, in the order workers take them, each with its position, estimated start
// and the reason it waits (its priority can be changed here); the running jobs with their ETA and speed;
// the workers busy and idle on each replica. Kept current by jobChanges and a read every 5 s (workers
// coming and going, estimates moving).

import { gql, subscribe } from '../api.js';
import { badge, duration, errorBox, fill, h, percent, showError, sig, startsIn, when } from '../ui.js';

const PRIORITIES = ['URGENT', 'HIGH', 'NORMAL', 'LOW'];
const QUEUE = `{
  queueStats { queued running meanWaitSeconds startedLastHour depth { priority count }
    workers { busy idle total replicas { host pid busy idle } } }
  queue(first: 50) { id name modelName priority createdAt queuePosition estimatedStartAt pendingReason }
  running: jobs(status: RUNNING, first: 50) { nodes { id name modelName device
    progress { percent etaSeconds estimatedEndAt samplesPerSecond } } } }`;
const CHANGES = 'subscription { jobChanges { __typename ... on JobStatusChanged { jobId status } } }';
const SET_PRIORITY = 'mutation($id: ID!, $priority: Priority!) { setJobPriority(id: $id, priority: $priority) { id priority } }';

export function render(main) {
  const errorSlot = h('div', { class: 'error-slot' });
  const body = h('div', { class: 'queue-page' }, h('p', { class: 'muted' }, 'Loading the queue…'));
  let timer = null;
  let reload = null;
  let busy = false;

  function stats(q) {
    const w = q.workers;
    return h('div', { class: 'columns' },
      h('section', { class: 'card summary', id: 'queue-summary' }, h('h2', {}, 'Waiting'),
        h('p', { class: 'big' }, String(q.queued)),
        h('p', {}, q.depth.map((d) => h('span', { class: 'tally' }, `${d.priority} ${d.count}`))),
        h('p', { class: 'muted' }, q.meanWaitSeconds === null
          ? 'no job started in the last hour'
          : `mean wait ${duration(q.meanWaitSeconds * 1000)} over the ${q.startedLastHour} started in the last hour`)),
      h('section', { class: 'card', id: 'workers' }, h('h2', {}, `Workers (${w.total})`),
        h('p', { class: 'facts' }, `${w.busy} busy · ${w.idle} idle · ${q.running} ${q.running === 1 ? 'job' : 'jobs'} running`),
        w.replicas.length
          ? h('div', { class: 'table-wrap' }, h('table', {},
              h('thead', {}, h('tr', {}, ['replica', 'busy', 'idle'].map((t) => h('th', { scope: 'col' }, t)))),
              h('tbody', {}, w.replicas.map((r) => h('tr', {}, h('td', {}, `${r.host} (process ${r.pid})`), h('td', { class: 'num' }, r.busy), h('td', { class: 'num' }, r.idle))))))
          : h('p', { class: 'muted' }, 'No worker is running: queued jobs wait until one starts (kiln serve with KILN_WORKERS ≥ 1, or kiln worker).')));
  }

  function prioritySelect(job) {
    const select = h('select', { 'aria-label': `priority of ${job.name}`, 'data-job': job.id },
      PRIORITIES.map((p) => h('option', { value: p, selected: p === job.priority }, p)));
    select.addEventListener('change', async () => {
      select.disabled = true;
      try {
        await gql(SET_PRIORITY, { id: job.id, priority: select.value });
        showError(errorSlot, null);
        await load();
      } catch (e) {
        select.value = job.priority;
        showError(errorSlot, e);
      } finally {
        select.disabled = false;
      }
    });
    return select;
  }

  function waiting(queue, total) {
    if (!queue.length) return h('p', { class: 'empty' }, 'Nothing is waiting.');
    return h('div', {},
      h('div', { class: 'table-wrap' }, h('table', { class: 'queue' },
        h('thead', {}, h('tr', {}, ['#', 'Job, and why it waits', 'Priority', 'Starts', 'Model', 'Queued'].map((t) => h('th', { scope: 'col' }, t)))),
        h('tbody', {}, queue.map((j) => h('tr', { 'data-job': j.id },
          h('td', { class: 'num position' }, j.queuePosition ?? '–'),
          h('td', {}, h('a', { href: `#/jobs/${j.id}` }, j.name), h('span', { class: 'reason muted' }, j.pendingReason || '')),
          h('td', {}, prioritySelect(j)),
          h('td', { class: 'starts' }, startsIn(j.estimatedStartAt)),
          h('td', {}, j.modelName),
          h('td', {}, when(j.createdAt))))))),
      total > queue.length ? h('p', { class: 'muted' }, `and ${total - queue.length} more after these`) : null);
  }

  function running(jobs) {
    if (!jobs.length) return h('p', { class: 'empty' }, 'Nothing is training.');
    return h('div', { class: 'table-wrap' }, h('table', { class: 'running' },
      h('thead', {}, h('tr', {}, ['Job', 'Status', 'Model', 'Done', 'Ends', 'Speed', 'Device'].map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, jobs.map((j) => h('tr', { 'data-job': j.id },
        h('td', {}, h('a', { href: `#/jobs/${j.id}` }, j.name)),
        h('td', {}, badge('RUNNING')),
        h('td', {}, j.modelName),
        h('td', { class: 'num' }, j.progress ? percent(j.progress.percent / 100) : '–'),
        h('td', {}, j.progress && j.progress.estimatedEndAt ? startsIn(j.progress.estimatedEndAt) : 'not known yet'),
        h('td', { class: 'num' }, j.progress && j.progress.samplesPerSecond ? `${sig(j.progress.samplesPerSecond)}/s` : '–'),
        h('td', {}, j.device || '–'))))));
  }

  async function load() {
    if (busy) return;
    busy = true;
    try {
      const data = await gql(QUEUE);
      fill(body,
        stats(data.queueStats),
        h('section', { class: 'card', id: 'waiting' }, h('h2', {}, 'Waiting, in the order workers take them'), waiting(data.queue, data.queueStats.queued)),
        h('section', { class: 'card', id: 'running' }, h('h2', {}, 'Running'), running(data.running.nodes)));
      body.dataset.loaded = String(Date.now());
    } catch (e) {
      fill(body, errorBox(e));
    } finally {
      busy = false;
    }
  }

  function reloadSoon() {
    clearTimeout(reload);
    reload = setTimeout(load, 300);
  }

  const stop = subscribe(CHANGES, {}, () => reloadSoon(), (e) => showError(errorSlot, e));
  timer = setInterval(load, 5000);
  fill(main, h('h1', {}, 'Queue'), errorSlot, body);
  load();
  return () => {
    clearTimeout(reload);
    clearInterval(timer);
    stop();
  };
}
