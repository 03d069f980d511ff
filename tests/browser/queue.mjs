// The queue page as an operator uses it, in Debian's chromium: the waiting jobs in the order workers
// take them, each with its position, estimated start and the reason it waits; the running job with its
// ETA; the workers card counting the one busy worker of this replica; a job moved ahead by changing its
// priority from the page (the table reorders); the job's own page saying its place. Every priority
// control is reached with Tab.
//
// Run by tests/api/browser.rs, which starts kiln with one real worker busy on the job `long` and the
// jobs `normal` and `high` queued behind it. Environment: KILN_URL, KILN_TOKEN, KILN_SCREENSHOTS,
// KILN_CHROMIUM. Exits 1 saying what went wrong.

import { env, start } from './harness.mjs';

const url = env('KILN_URL');
const token = env('KILN_TOKEN');
const { page, problems, screenshot, tabThrough, finish } = await start();

/// The waiting table's rows: [position, job name, reason].
const waitingRows = () => page.$$eval('#waiting tbody tr', (rows) => rows.map((r) => [
  r.querySelector('.position').textContent.trim(),
  r.querySelector('a').textContent.trim(),
  r.querySelector('.reason').textContent.trim(),
]));

try {
  await page.goto(url + '/');
  await page.evaluate((t) => localStorage.setItem('kiln.token', t), token);
  await page.goto(url + '/#/queue');
  await page.waitForSelector('#waiting tbody tr', { timeout: 15000 });

  let rows = await waitingRows();
  const expected = [
    ['1', 'high', 'next in line: waiting for the only worker to finish'],
    ['2', 'normal', '1 job ahead of it at HIGH priority'],
  ];
  if (JSON.stringify(rows) !== JSON.stringify(expected)) problems.push(`the waiting jobs: ${JSON.stringify(rows)}`);
  const workers = await page.textContent('#workers');
  if (!workers.includes('1 busy · 0 idle') || !workers.includes('(process ')) problems.push(`the workers card: ${workers}`);
  const running = await page.textContent('#running');
  if (!running.includes('long')) problems.push(`the running jobs: ${running}`);
  const starts = await page.$$eval('#waiting .starts', (cells) => cells.map((c) => c.textContent));
  if (!starts.every((s) => s.startsWith('in about') || s === 'any moment')) problems.push(`estimated starts: ${starts.join(' | ')}`);
  await screenshot('queue');

  // Every priority control is reached with Tab, its focus shown.
  const keys = await tabThrough(30);
  for (const name of ['select priority of high', 'select priority of normal']) {
    if (!keys.includes(name)) problems.push(`Tab does not reach "${name}": ${keys.join(' | ')}`);
  }

  // `normal` moves ahead of everything: the table reorders and says why.
  await page.selectOption('select[aria-label="priority of normal"]', 'URGENT');
  await page.waitForFunction(() => {
    const first = document.querySelector('#waiting tbody tr a');
    return first && first.textContent.trim() === 'normal';
  }, null, { timeout: 15000 });
  rows = await waitingRows();
  if (rows[1][2] !== '1 job ahead of it at URGENT priority') problems.push(`after the move: ${JSON.stringify(rows)}`);
  await screenshot('queue-moved');

  // The waiting job's own page says its place, and follows it live.
  await page.click('#waiting tbody tr:nth-child(2) a');
  await page.waitForSelector('.queue-place', { timeout: 15000 });
  const placeText = await page.textContent('.queue-place');
  if (!placeText.includes('#2 in the queue') || !placeText.includes('1 job ahead of it at URGENT priority')) problems.push(`the job's page says: ${placeText}`);
  await screenshot('queued-job');

  // A job asking for a GPU, submitted from the form: a count out of range is refused under its field;
  // then it waits saying that no worker has the GPU, and its page says what it asked for.
  await page.goto(url + '/#/submit');
  await page.waitForSelector('#field-resources-gpus', { timeout: 15000 });
  await page.waitForFunction(() => document.querySelector('#field-datasetId')?.value, null, { timeout: 15000 });
  await page.fill('#field-name', 'gpu');
  await page.fill('#field-modelName', 'q');
  await page.fill('#field-hyperparameters-epochs', '1');
  await page.fill('#field-hyperparameters-maxSeqLength', '16');
  await page.fill('#field-resources-gpus', '17');
  await page.click('button[type=submit]');
  await page.waitForFunction(() => document.querySelector('label[for="field-resources-gpus"]').textContent.includes('must be between'), null, { timeout: 15000 });
  const refused = await page.textContent('label[for="field-resources-gpus"]');
  if (!refused.includes('must be between 0 and 16 (got 17)')) problems.push(`the GPUs field says: ${refused}`);
  await screenshot('submit-resources-refused');
  await page.fill('#field-resources-gpus', '1');
  await page.fill('#field-resources-memoryGb', '2');
  await page.click('button[type=submit]');
  await page.waitForSelector('.queue-place', { timeout: 15000 });
  const gpuPlace = await page.textContent('.queue-place');
  if (!gpuPlace.includes('no worker has the 1 GPU it asks for')) problems.push(`the GPU job's page says: ${gpuPlace}`);
  const gpuHeader = await page.textContent('.job-header');
  if (!gpuHeader.includes('asks for 2 GiB, 1 GPU')) problems.push(`the GPU job's header: ${gpuHeader}`);
  await screenshot('gpu-job');
  console.log('checked');
} catch (e) {
  problems.push(`the queue test stopped: ${e.stack || e}`);
}
await finish('the queue page says why each job waits');
