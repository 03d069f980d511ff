// Times the dashboard against a kiln with a big history (scripts/bench-dashboard seeds it): how long each
// page takes until what a person looks for is drawn, and the longest main-thread task meanwhile (a
// page that stays responsive has none much over 50 ms). Environment: KILN_URL, KILN_TOKEN, KILN_JOB
// (a job with a long step series), KILN_SCREENSHOTS. Prints one line per measurement.

import { env, start } from './harness.mjs';

const url = env('KILN_URL');
const token = env('KILN_TOKEN');
const jobId = env('KILN_JOB');

const { page, problems, screenshot, finish } = await start();
await page.addInitScript((t) => {
  localStorage.setItem('kiln.token', t);
  window.longTasks = [];
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) window.longTasks.push(entry.duration);
  }).observe({ type: 'longtask', buffered: true });
}, token);

/// Runs `act`, then waits for `ready` (a function run in the page); prints the time and the longest
/// task since `act` began.
async function measure(what, act, ready, arg) {
  await page.evaluate(() => { window.longTasks = []; });
  const began = performance.now();
  await act();
  await page.waitForFunction(ready, arg, { timeout: 60000, polling: 'raf' });
  const took = performance.now() - began;
  const longest = await page.evaluate(() => Math.max(0, ...window.longTasks));
  console.log(`   ${what}: ${took.toFixed(0)} ms (longest main-thread task ${longest.toFixed(0)} ms)`);
}

try {
  await measure('overview', () => page.goto(`${url}/#/`), () => document.querySelector('.summary .big'));
  await measure('jobs, first page', () => page.goto(`${url}/#/jobs`), () => document.querySelectorAll('tr[data-job]').length === 20);
  const first = await page.getAttribute('tr[data-job]', 'data-job');
  const pager = await page.textContent('.pager span');
  for (let i = 1; i <= 3; i += 1) {
    const shown = await page.getAttribute('tr[data-job]', 'data-job');
    await measure(`jobs, next page (${i})`, () => page.click('.pager button:has-text("Next")'),
      (before) => document.querySelector('tr[data-job]')?.dataset.job !== before, shown);
  }
  await measure('jobs, filtered by model', () => page.goto(`${url}/#/jobs?model=model-3`),
    () => document.querySelector('.pager span')?.textContent.includes('page 1 of'));
  console.log(`   the list says: ${pager}; newest job ${first}`);

  await measure('the long job, until its charts are drawn', () => page.goto(`${url}/#/jobs/${jobId}`),
    () => Number(document.querySelector('.charts')?.dataset.points) > 0);
  const points = await page.evaluate(() => document.querySelector('.charts').dataset.points);
  const heap = await page.evaluate(() => (performance.memory ? performance.memory.usedJSHeapSize : 0));
  console.log(`   its loss chart holds ${points} points; JavaScript heap ${(heap / 2 ** 20).toFixed(1)} MiB`);
  await screenshot('long-job');

  // A chart that holds every step (as one watched live from the start would): one redraw, as each
  // StepProgress event makes: downsampled to 2000 points and drawn.
  const redraw = await page.evaluate(async (steps) => {
    const { downsample, lineChart } = await import('/playground/app/chart.js');
    const xs = Array.from({ length: steps }, (_, i) => i + 1);
    const ys = xs.map((s) => 2 / (1 + s / 5000));
    const box = document.createElement('div');
    document.querySelector('.charts').append(box);
    const chart = lineChart(box, { labels: ['train loss'], xLabel: 'step', yLabel: 'loss' });
    const times = [];
    for (let i = 0; i < 20; i += 1) {
      const began = performance.now();
      chart.setData(...downsample(xs, ys));
      // uPlot draws in a microtask queued by setData, which runs before this await resumes.
      await Promise.resolve();
      times.push(performance.now() - began);
    }
    chart.destroy();
    box.remove();
    times.sort((a, b) => a - b);
    return { median: times[10], worst: times[19] };
  }, 100000);
  console.log(`   one live redraw of a 100000-step chart: median ${redraw.median.toFixed(1)} ms, worst ${redraw.worst.toFixed(1)} ms`);
} catch (e) {
  problems.push(`the benchmark stopped: ${e.message}`);
}
await finish('   measured');
