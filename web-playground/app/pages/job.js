// A job: its status and actions, live charts over jobEvents (loss and learning rate per step, validation
// per epoch; they rewind on JobResumed), progress with an ETA, the latest epoch's per-label metrics and
// confusion matrix, hyperparameters, checkpoints, the log as it is written, and downloads.

import { download, gql, subscribe } from '../api.js';
import { downsample, lineChart } from '../chart.js';
import { ACTIVE, jobActions, jobProgress } from '../jobcommon.js';
import { badge, bytes, duration, errorBox, fill, h, percent, showError, sig, startsIn, when } from '../ui.js';

/// How many points of the stored series are asked for (bucket means of a long run, every step of a
/// short one); the chart then grows live.
const HISTORY = 2000;
const JOB = `query($id: ID!, $points: Int!) { job(id: $id) {
  id name status error modelName task baseModel attempts maxAttempts device createdAt startedAt finishedAt
  nextAttemptAt logsDownloadUrl queuePosition estimatedStartAt pendingReason resources { cpus memoryGb gpus }
  dataset { id name rowCount }
  progress { epoch totalEpochs step totalSteps percent etaSeconds stalledSince estimatedEndAt samplesPerSecond }
  analytics { samplesPerSecondMean trainingMs }
  hyperparameters { epochs batchSize learningRate validationSplit seed maxSeqLength optimizer lrSchedule
    warmupRatio weightDecay momentum gradientClipNorm gradientAccumulationSteps earlyStoppingPatience
    earlyStoppingMetric freezeLayers dropout pooling checkpointEverySteps keepCheckpoints }
  epochs { epoch trainLoss valLoss accuracy f1 perLabel { label precision recall f1 support }
    confusionMatrix { labels rows } }
  loss: metricSeries(name: "train_loss", points: $points) { step value }
  lr: metricSeries(name: "learning_rate", points: $points) { step value }
  checkpoints { step epoch sizeBytes createdAt }
  modelVersion { version downloadUrl model { name } } } }`;
const EVENTS = `subscription($id: ID!) { jobEvents(jobId: $id) { __typename
  ... on JobStatusChanged { status error }
  ... on EpochCompleted { epoch trainLoss valLoss accuracy f1 perLabel { label precision recall f1 support }
      confusionMatrix { labels rows } }
  ... on StepProgress { step totalSteps epoch totalEpochs loss learningRate samplesPerSecond }
  ... on JobResumed { fromStep fromEpoch }
  ... on QueueChanged { position estimatedStartAt reason } } }`;
const LOGS = 'subscription($id: ID!) { jobLogs(jobId: $id) { seq at level message } }';

export function render(main, params, id) {
  const stops = [];
  const charts = [];
  const errorSlot = h('div', { class: 'error-slot' });
  fill(main, h('p', { class: 'muted' }, 'Loading the job…'));

  let job;
  const steps = { x: [], loss: [], lrX: [], lr: [] };
  let live = { samplesPerSecond: null };

  const header = h('div', { class: 'job-header' });
  const progress = h('section', { class: 'card' });
  const chartsBox = h('section', { class: 'charts' });
  const latest = h('section', { class: 'card' });
  const details = h('div', { class: 'columns' });
  const logBox = h('pre', { class: 'log', tabindex: 0, 'aria-label': 'job log' });

  function drawHeader() {
    fill(header,
      h('h1', {}, job.name, ' ', badge(job.status)),
      h('p', { class: 'muted' },
        `${job.modelName} · ${job.task === 'TEXT_CLASSIFICATION' ? 'text' : 'tabular'} · dataset `,
        job.dataset ? `${job.dataset.name} (${job.dataset.rowCount} rows)` : '–',
        job.baseModel ? ` · from ${job.baseModel}` : '',
        ` · attempt ${job.attempts} of ${job.maxAttempts}`,
        job.device ? ` · on ${job.device === 'cpu' ? 'the CPU' : `GPU ${job.device}`}` : '',
        asked(job.resources) ? ` · asks for ${asked(job.resources)}` : ''),
      job.error ? errorBox({ message: job.error }) : null,
      h('div', { class: 'toolbar' },
        jobActions(job.id, job.status, errorSlot, (changed) => { job.status = changed.status; drawAll(); }),
        job.modelVersion
          ? h('button', { type: 'button', onclick: () => download(job.modelVersion.downloadUrl, `${job.modelVersion.model.name}-v${job.modelVersion.version}.zip`).catch((e) => showError(errorSlot, e)) },
              `Download model v${job.modelVersion.version}`)
          : null,
        h('button', { type: 'button', onclick: () => download(job.logsDownloadUrl, `${job.id}-log.zip`).catch((e) => showError(errorSlot, e)) }, 'Download log'),
      ),
      errorSlot,
    );
  }

  function drawProgress() {
    const p = job.progress;
    const eta = p && p.etaSeconds !== null && p.etaSeconds !== undefined && ACTIVE.includes(job.status) ? duration(p.etaSeconds * 1000) : null;
    const speed = live.samplesPerSecond ?? (job.analytics && job.analytics.samplesPerSecondMean);
    const queued = job.status === 'QUEUED' && job.queuePosition
      ? h('p', { class: 'queue-place', 'data-position': String(job.queuePosition) },
          h('strong', {}, `#${job.queuePosition} in the queue`),
          ` · starts ${startsIn(job.estimatedStartAt)} · ${job.pendingReason} · `,
          h('a', { href: '#/queue' }, 'the queue'))
      : null;
    fill(progress,
      h('h2', {}, 'Progress'),
      queued,
      jobProgress(job),
      h('p', { class: 'facts' },
        p ? `step ${p.step} of ${p.totalSteps} · epoch ${p.epoch} of ${p.totalEpochs} · ${percent(job.status === 'COMPLETED' ? 1 : p.totalSteps ? p.step / p.totalSteps : 0)}` : 'not started',
        speed ? ` · ${sig(speed)} samples/s` : '',
        eta ? ` · about ${eta} left` : '',
        p && p.stalledSince ? ` · no progress since ${when(p.stalledSince)}` : ''),
      h('p', { class: 'muted' }, `created ${when(job.createdAt)} · started ${when(job.startedAt)} · finished ${when(job.finishedAt)}`),
    );
  }

  let lossChart;
  let lrChart;
  let epochChart;
  function drawCharts() {
    if (!lossChart) {
      const box = (title) => {
        const section = h('div', { class: 'card chart-card' }, h('h2', {}, title));
        chartsBox.append(section);
        return section;
      };
      lossChart = lineChart(box('Training loss'), { labels: ['train loss'], xLabel: 'step', yLabel: 'loss' });
      epochChart = lineChart(box('Validation per epoch'), { labels: ['val loss', 'accuracy', 'F1'], xLabel: 'epoch', yLabel: '' });
      lrChart = lineChart(box('Learning rate'), { labels: ['learning rate'], xLabel: 'step', yLabel: 'rate' });
      charts.push(lossChart, epochChart, lrChart);
    }
    lossChart.setData(...downsample(steps.x, steps.loss));
    lrChart.setData(...downsample(steps.lrX, steps.lr));
    const epochs = job.epochs;
    epochChart.setData(epochs.map((e) => e.epoch), epochs.map((e) => e.valLoss), epochs.map((e) => e.accuracy), epochs.map((e) => e.f1));
    chartsBox.dataset.points = String(steps.x.length);
    chartsBox.dataset.last = String(steps.x.length ? steps.x[steps.x.length - 1] : 0);
    chartsBox.dataset.increasing = String(steps.x.every((x, i) => i === 0 || x > steps.x[i - 1]));
    chartsBox.dataset.epochs = String(epochs.length);
  }

  function drawLatest() {
    const e = job.epochs[job.epochs.length - 1];
    if (!e) {
      fill(latest, h('h2', {}, 'Latest epoch'), h('p', { class: 'muted' }, 'No epoch has finished yet.'));
      return;
    }
    const matrix = e.confusionMatrix;
    const most = matrix ? Math.max(1, ...matrix.rows.flat()) : 1;
    fill(latest,
      h('h2', {}, `Epoch ${e.epoch}`),
      h('p', { class: 'facts' }, `accuracy ${sig(e.accuracy)} · F1 ${sig(e.f1)} · val loss ${sig(e.valLoss)} · train loss ${sig(e.trainLoss)}`),
      h('div', { class: 'columns' },
        h('div', { class: 'table-wrap' }, h('table', {},
          h('thead', {}, h('tr', {}, ['label', 'precision', 'recall', 'F1', 'support'].map((t) => h('th', { scope: 'col' }, t)))),
          h('tbody', {}, e.perLabel.map((l) => h('tr', {}, h('td', {}, l.label), h('td', { class: 'num' }, sig(l.precision)), h('td', { class: 'num' }, sig(l.recall)), h('td', { class: 'num' }, sig(l.f1)), h('td', { class: 'num' }, l.support)))))),
        matrix
          ? h('div', { class: 'table-wrap' }, h('table', { class: 'confusion', 'aria-label': 'confusion matrix: rows are actual labels, columns predicted' },
              h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'actual ↓ predicted →'), matrix.labels.map((l) => h('th', { scope: 'col' }, l)))),
              h('tbody', {}, matrix.rows.map((row, i) => h('tr', {}, h('th', { scope: 'row' }, matrix.labels[i]),
                row.map((n, j) => h('td', { class: `num ${i === j ? 'diagonal' : 'off'}`, style: `--heat: ${(n / most).toFixed(3)}` }, n)))))))
          : null),
    );
  }

  function drawDetails() {
    const hp = job.hyperparameters;
    fill(details,
      h('section', { class: 'card' }, h('h2', {}, 'Hyperparameters'),
        h('table', { class: 'kv' }, h('tbody', {}, Object.entries(hp).filter(([, v]) => v !== null).map(([k, v]) =>
          h('tr', {}, h('th', { scope: 'row' }, k), h('td', {}, typeof v === 'number' ? sig(v) : String(v))))))),
      h('section', { class: 'card' }, h('h2', {}, 'Checkpoints'),
        job.checkpoints.length
          ? h('table', {}, h('thead', {}, h('tr', {}, ['step', 'epoch', 'size', 'written'].map((t) => h('th', { scope: 'col' }, t)))),
              h('tbody', {}, job.checkpoints.map((c) => h('tr', {}, h('td', { class: 'num' }, c.step), h('td', { class: 'num' }, c.epoch), h('td', { class: 'num' }, bytes(c.sizeBytes)), h('td', {}, when(c.createdAt))))))
          : h('p', { class: 'muted' }, ACTIVE.includes(job.status) ? 'None yet.' : 'None kept (a completed job\'s are deleted).')),
    );
  }

  function drawAll() {
    drawHeader();
    drawProgress();
    drawCharts();
    drawLatest();
    drawDetails();
  }

  function onEvent(data) {
    const event = data.jobEvents;
    switch (event.__typename) {
      case 'JobStatusChanged':
        job.status = event.status;
        job.error = event.error;
        if (!ACTIVE.includes(event.status)) refresh();
        drawHeader();
        drawProgress();
        break;
      case 'EpochCompleted':
        job.epochs = job.epochs.filter((e) => e.epoch !== event.epoch).concat([event]).sort((a, b) => a.epoch - b.epoch);
        drawCharts();
        drawLatest();
        break;
      case 'StepProgress':
        if (!steps.x.length || event.step > steps.x[steps.x.length - 1]) {
          steps.x.push(event.step);
          steps.loss.push(event.loss);
          steps.lrX.push(event.step);
          steps.lr.push(event.learningRate);
        }
        live.samplesPerSecond = event.samplesPerSecond;
        job.progress = { ...(job.progress || {}), step: event.step, totalSteps: event.totalSteps, epoch: event.epoch, totalEpochs: event.totalEpochs };
        drawProgress();
        drawCharts();
        break;
      case 'QueueChanged':
        job.queuePosition = event.position;
        job.estimatedStartAt = event.estimatedStartAt;
        job.pendingReason = event.reason;
        drawProgress();
        break;
      case 'JobResumed': {
        const keep = steps.x.findIndex((s) => s > event.fromStep);
        if (keep >= 0) {
          steps.x.length = keep;
          steps.loss.length = keep;
        }
        const keepLr = steps.lrX.findIndex((s) => s > event.fromStep);
        if (keepLr >= 0) {
          steps.lrX.length = keepLr;
          steps.lr.length = keepLr;
        }
        job.epochs = job.epochs.filter((e) => e.epoch <= event.fromEpoch);
        chartsBox.dataset.rewoundTo = String(event.fromStep);
        chartsBox.dataset.rewinds = String(Number(chartsBox.dataset.rewinds || 0) + 1);
        drawCharts();
        drawLatest();
        break;
      }
      default:
    }
  }

  /// The step series as stored.
  function takeSteps() {
    steps.x = job.loss.map((p) => p.step);
    steps.loss = job.loss.map((p) => p.value);
    steps.lrX = job.lr.map((p) => p.step);
    steps.lr = job.lr.map((p) => p.value);
  }

  /// Reads the job again (after it ends: its version, checkpoints, analytics).
  async function refresh() {
    try {
      const data = await gql(JOB, { id, points: HISTORY });
      if (!data.job) return;
      const epochs = job ? job.epochs : null;
      job = data.job;
      if (epochs && epochs.length > job.epochs.length) job.epochs = epochs;
      // The stored series covers every step; live events came at most four a second.
      const stored = job.loss.length ? job.loss[job.loss.length - 1].step : 0;
      if (stored >= (steps.x.length ? steps.x[steps.x.length - 1] : 0)) takeSteps();
      drawAll();
    } catch (e) {
      showError(errorSlot, e);
    }
  }

  (async () => {
    let data;
    try {
      data = await gql(JOB, { id, points: HISTORY });
    } catch (e) {
      fill(main, errorBox(e));
      return;
    }
    if (!data.job) {
      fill(main, h('h1', {}, 'No such job'), h('p', {}, `kiln has no job ${id}. `, h('a', { href: '#/jobs' }, 'Back to the jobs')));
      return;
    }
    job = data.job;
    takeSteps();
    fill(main,
      h('p', {}, h('a', { href: '#/jobs' }, '← Jobs')),
      header, progress, chartsBox, latest, details,
      h('section', { class: 'card' }, h('h2', {}, 'Log'), logBox),
    );
    drawAll();
    stops.push(subscribe(EVENTS, { id }, onEvent, (e) => showError(errorSlot, e)));
    stops.push(subscribe(LOGS, { id }, (d) => {
      const line = d.jobLogs;
      const follow = logBox.scrollTop + logBox.clientHeight >= logBox.scrollHeight - 4;
      logBox.append(h('span', { class: `log-${line.level.toLowerCase()}` }, `${when(line.at)} ${line.level.padEnd(5)} ${line.message}\n`));
      if (follow) logBox.scrollTop = logBox.scrollHeight;
    }, (e) => showError(errorSlot, e)));
  })();

  return () => {
    stops.splice(0).forEach((stop) => stop());
    charts.splice(0).forEach((c) => c.destroy());
  };
}

/// "1.5 CPUs, 2 GiB, 1 GPU": what a job asked for (empty when nothing).
function asked(r) {
  if (!r) return '';
  const parts = [];
  if (r.cpus !== null && r.cpus !== undefined) parts.push(`${r.cpus} CPU${r.cpus === 1 ? '' : 's'}`);
  if (r.memoryGb !== null && r.memoryGb !== undefined) parts.push(`${r.memoryGb} GiB`);
  if (r.gpus) parts.push(`${r.gpus} GPU${r.gpus === 1 ? '' : 's'}`);
  return parts.join(', ');
}
