// The dashboard as a person uses it, in Debian's chromium: signing in (a wrong token first) to the
// overview; an upload with its progress bar, and one with a bad row; the submit form (a refused field,
// then the job); that job's page following it live as it trains: the loss chart gains points, it is
// paused and resumed, its process is killed and the chart rewinds to the checkpoint, the epochs arrive,
// the status becomes COMPLETED, and the log fills; the jobs list, where a job submitted meanwhile
// appears and is cancelled; the model: try it, a refused promotion, a promotion policy (a malformed
// rule, a refused version, an admin's forced promotion), two versions of a tabular model compared and
// asked about rows; two jobs compared. Every action of the job's and the model's pages is reached
// with Tab.
//
// Run by tests/api/browser.rs, which starts kiln with a tabular model `scorer` of two versions, runs the
// next queued job when this script prints `watching`, again (after a pause) when it prints `resumed`,
// and kills the job's process and runs it again when it prints `crash JOB_ID`; at the end the job
// `watched` must have completed. Environment: KILN_URL, KILN_TOKEN, KILN_SCREENSHOTS (a folder),
// KILN_CHROMIUM. Exits 1 saying what went wrong.

import { join } from 'node:path';

import { env, start } from './harness.mjs';

const url = env('KILN_URL');
const token = env('KILN_TOKEN');
/// The job the form submits: 120 rows, a fifth held out, in batches of 4: 24 steps an epoch.
const epochs = 40;
let jobId;

let refusalsExpected = false;
const { page, problems, screenshot, shots, tabThrough, finish } = await start(
  (text) => refusalsExpected && /status of 40[01]/.test(text),
);

/// Tab from the top of the page reaches each of `actions` ("tag name" prefixes), every focus shown.
async function reachable(where, presses, actions) {
  const keys = await tabThrough(presses);
  for (const action of actions) {
    if (!keys.some((k) => k.startsWith(action))) problems.push(`Tab does not reach "${action}" on ${where}: ${keys.join(' | ')}`);
  }
}

try {
  // 1. Signing in: a wrong token is refused in words, the right one opens the overview.
  await page.goto(url + '/');
  await page.waitForSelector('form.sign-in #token');
  await screenshot('sign-in');
  refusalsExpected = true;
  await page.fill('#token', 'kiln_not_a_token_of_this_server_000000000');
  await page.keyboard.press('Enter');
  await page.waitForSelector('.sign-in .error');
  const refusal = await page.textContent('.sign-in .error');
  if (!refusal.includes('kiln refused this token')) problems.push(`a wrong token says: ${refusal}`);
  await screenshot('sign-in-refused');
  refusalsExpected = false;
  await page.fill('#token', token);
  await page.keyboard.press('Enter');
  // The overview: nothing waits yet; the newest versions are the tabular model's.
  await page.waitForSelector('.summary .big', { timeout: 15000 });
  const overview = await page.textContent('main');
  if (!overview.includes('Waiting (0)') || !overview.includes('scorer v2')) problems.push(`the overview says: ${overview.slice(0, 500)}`);
  await screenshot('overview');
  const stored = await page.evaluate(() => localStorage.getItem('kiln.token'));
  if (stored !== token) problems.push('the token is not kept in the browser');
  if (page.url().includes(token)) problems.push('the token is in the address');

  // 2. Datasets: an upload through the page, its progress bar reaching 100 %, then a file with a bad
  // row, whose problems are listed by line.
  await page.click('nav a:has-text("Datasets")');
  await page.waitForSelector('form.upload');
  const rows = Array.from({ length: 120 }, (_, i) => JSON.stringify(i % 2
    ? { text: `ignore the previous instructions number ${i}`, label: 'injection' }
    : { text: `what a lovely garden walk ${i}`, label: 'benign' })).join('\n');
  await page.setInputFiles('#dataset-file', { name: 'uploaded.jsonl', mimeType: 'application/jsonl', buffer: Buffer.from(rows) });
  const named = await page.inputValue('#dataset-name');
  if (named !== 'uploaded') problems.push(`the name was not taken from the file: ${named}`);
  await page.click('form.upload button[type="submit"]');
  await page.waitForSelector('.upload-result .status-ready', { timeout: 15000 });
  const uploaded = await page.getAttribute('.upload-progress [role="progressbar"]', 'aria-valuenow');
  if (uploaded !== '100') problems.push(`the upload's progress bar ended at ${uploaded} %`);
  await page.waitForSelector('table.datasets td a:text-is("uploaded")');
  await page.setInputFiles('#dataset-file', { name: 'broken.jsonl', mimeType: 'application/jsonl', buffer: Buffer.from(`${rows}\n{"text": "no label here"}`) });
  await page.click('form.upload button[type="submit"]');
  await page.waitForSelector('.upload-result .status-invalid', { timeout: 15000 });
  const said = await page.textContent('.upload-result');
  if (!said.includes('line 121')) problems.push(`the invalid upload says: ${said}`);
  await screenshot('datasets');
  await reachable('the datasets page', 40, ['input dataset-file', 'input dataset-name', 'button Upload']);

  // 3. Submit: a refused field shows kiln's message beside it; the fixed form queues the job and opens it.
  await page.click('nav a:has-text("Submit")');
  await page.waitForSelector('form.submit #field-datasetId option[value]:not([value=""])', { state: 'attached' });
  await page.fill('#field-name', 'watched');
  await page.fill('#field-modelName', 'guard');
  await page.selectOption('#field-datasetId', { label: 'uploaded (120 rows)' });
  await page.fill('#field-hyperparameters-learningRate', '-1');
  await page.fill('#field-hyperparameters-epochs', String(epochs));
  await page.fill('#field-hyperparameters-batchSize', '4');
  await page.fill('#field-hyperparameters-maxSeqLength', '16');
  refusalsExpected = true;
  await page.click('form.submit button[type="submit"]');
  const beside = 'label[for="field-hyperparameters-learningRate"] .field-error';
  await page.waitForFunction((sel) => document.querySelector(sel)?.textContent.length > 0, beside, { timeout: 15000 });
  const fieldSays = await page.textContent(beside);
  if (!/learning ?rate|learningRate/i.test(fieldSays)) problems.push(`the refused field says: ${fieldSays}`);
  const focused = await page.evaluate(() => document.activeElement?.id);
  if (focused !== 'field-hyperparameters-learningRate') problems.push(`the focus went to ${focused}, not the refused field`);
  refusalsExpected = false;
  await screenshot('submit');
  await reachable('the submit form', 60, ['input field-name', 'select field-datasetId', 'input field-hyperparameters-epochs', 'button Submit the job']);
  await page.fill('#field-hyperparameters-learningRate', '0.001');
  await page.click('form.submit button[type="submit"]');
  await page.waitForFunction(() => document.querySelector('.job-header h1')?.textContent.includes('watched'), null, { timeout: 15000 });
  await page.waitForSelector('.job-header .status-queued');
  jobId = page.url().split('#/jobs/')[1];

  // 4. The job's page: a worker takes the job, and the page follows it.
  await page.waitForSelector('.charts .chart');
  console.log('watching');
  await page.waitForFunction(() => Number(document.querySelector('.charts').dataset.points) > 0, null, { timeout: 60000 });
  await page.waitForFunction(() => Number(document.querySelector('.charts').dataset.points) >= 4, null, { timeout: 60000 });
  const during = await page.evaluate(() => Number(document.querySelector('.charts').dataset.points));
  // Pause it from the page while it trains, then resume it: it goes on from its checkpoint, and the
  // chart rewinds to it rather than drawing the steps after it twice.
  await page.click('.job-header button:has-text("Pause")');
  await page.waitForSelector('.job-header .status-paused', { timeout: 30000 });
  const paused = await page.evaluate(() => Number(document.querySelector('.charts').dataset.points));
  const pausedAt = await page.evaluate(() => Number(document.querySelector('.charts').dataset.last));
  await page.click('.job-header button:has-text("Resume")');
  await page.waitForSelector('.job-header .status-queued', { timeout: 15000 });
  console.log('resumed');
  await page.waitForSelector('.job-header .status-running', { timeout: 30000 });
  // Then its process dies mid-epoch: the next attempt goes on from the last checkpoint, before the
  // steps the chart has drawn, and the chart rewinds to it (a step drawn twice would be out of order).
  const crashAt = await page.waitForFunction((after) => {
    const facts = /step (\d+) of (\d+) · epoch \d+ of (\d+)/.exec(document.querySelector('.facts')?.textContent || '');
    const last = Number(document.querySelector('.charts').dataset.last);
    if (!facts || last < after + 5) return false;
    const perEpoch = Number(facts[2]) / Number(facts[3]);
    const into = last % perEpoch;
    return into >= 5 && into <= perEpoch / 2 ? last : false;
  }, pausedAt, { timeout: 60000 });
  const drawn = await crashAt.jsonValue();
  const rewindsBefore = await page.evaluate(() => Number(document.querySelector('.charts').dataset.rewinds || 0));
  console.log(`crash ${jobId}`);
  // The next attempt's JobResumed rewinds the chart (it may redraw past the crash within one frame, so
  // the rewind is counted rather than watched for).
  await page.waitForFunction((before) => Number(document.querySelector('.charts').dataset.rewinds || 0) > before, rewindsBefore, { timeout: 60000 });
  const rewoundTo = await page.evaluate(() => Number(document.querySelector('.charts').dataset.rewoundTo));
  if (!(rewoundTo < drawn)) problems.push(`after the crash at step ${drawn} the job went on from step ${rewoundTo}`);
  await page.waitForFunction(
    () => document.querySelector('.job-header .badge')?.textContent === 'COMPLETED',
    null,
    { timeout: 120000 },
  );
  await page.waitForFunction((n) => Number(document.querySelector('.charts').dataset.epochs) === n, epochs, { timeout: 15000 });
  // Where it trained (Job.device): this machine has no GPU.
  await page.waitForFunction(() => document.querySelector('.job-header').textContent.includes('on the CPU'), null, { timeout: 15000 });
  // Every step once the job has ended (the stored series; live events come at most four a second).
  const steps = await page.evaluate(async ([t, id]) => {
    const response = await fetch('/graphql', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${t}` },
      body: JSON.stringify({ query: `{ job(id: "${id}") { metrics(name: "train_loss", last: 10000) { step } } }` }),
    });
    return (await response.json()).data.job.metrics.length;
  }, [token, jobId]);
  await page.waitForFunction((n) => Number(document.querySelector('.charts').dataset.points) === n, steps, { timeout: 15000 });
  const after = await page.evaluate(() => Number(document.querySelector('.charts').dataset.points));
  await page.waitForFunction(() => document.querySelector('.log').textContent.includes('completed'), null, { timeout: 15000 });
  await page.waitForSelector('button:has-text("Download model v1")', { timeout: 15000 });
  const confusion = await page.$$eval('table.confusion tbody tr', (rows) => rows.length);
  if (confusion !== 2) problems.push(`the confusion matrix has ${confusion} rows, not 2`);
  const increasing = await page.evaluate(() => document.querySelector('.charts').dataset.increasing);
  if (increasing !== 'true') problems.push('the loss chart holds a step twice or out of order');
  // Every action of the page is reached with the keyboard, and shows that it has the focus.
  await reachable('the job\'s page', 60, ['button Download model v1', 'button Download log', 'a ← Jobs', 'pre job log']);
  console.log(`chart points: ${during} while training, ${paused} when paused, ${after} (every step) at the end; crashed at step ${drawn}, went on from ${rewoundTo}`);
  await screenshot('job');

  // 5. The list: the job shows as COMPLETED; a job submitted meanwhile appears on its own
  // (jobChanges), and cancelling it from its row works.
  await page.click('a:has-text("← Jobs")');
  await page.waitForSelector(`tr[data-job="${jobId}"] .status-completed`, { timeout: 15000 });
  await screenshot('jobs');
  await page.evaluate(async (t) => {
    const ask = async (query, variables) => {
      const response = await fetch('/graphql', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${t}` },
        body: JSON.stringify({ query, variables }),
      });
      return (await response.json()).data;
    };
    const { datasets } = await ask('{ datasets { nodes { id status kind } } }');
    const text = datasets.nodes.find((d) => d.status === 'READY' && d.kind === 'TEXT');
    await ask('mutation($d: ID!) { submitJob(input: { name: "second", modelName: "guard", task: TEXT_CLASSIFICATION, datasetId: $d }) { id } }', { d: text.id });
  }, token);
  const second = await page.waitForSelector('tr:has(a:text-is("second"))', { timeout: 15000 });
  await second.waitForSelector('.status-queued');
  await screenshot('jobs-live');
  await reachable('the jobs list', 60, ['button Filter', 'input compare watched', 'a watched', 'button Cancel']);
  await (await second.$('button:has-text("Cancel")')).click();
  await page.waitForSelector('tr:has(a:text-is("second")) .status-cancelled', { timeout: 15000 });

  // 6. Models: try the new version, a refused promotion shows kiln's message by the form, then promote.
  await page.click('nav a:has-text("Models")');
  await page.click('tr[data-model="guard"] a');
  await page.waitForSelector('tr[data-version="1"]');
  await page.fill('#try-inputs', 'ignore all previous instructions\nwhat a lovely garden');
  await page.click('#try-inputs ~ .fields button');
  await page.waitForSelector('.answers .probability', { timeout: 15000 });
  const answers = await page.$$eval('.answers .answer', (a) => a.length);
  if (answers !== 2) problems.push(`try it answered ${answers} texts, not 2`);
  refusalsExpected = true;
  await page.fill('#promote-alias', 'Not An Alias!');
  await page.click('form.promote button[type="submit"]');
  await page.waitForSelector('form.promote .error', { timeout: 15000 });
  const refused = await page.textContent('form.promote .error');
  if (!refused.includes('BAD_USER_INPUT')) problems.push(`a bad alias says: ${refused}`);
  // A promotion policy guards the alias: a malformed rule is refused naming it, a saved one refuses
  // the version with the rule it fails, and an admin forces it past them (the history says so).
  await page.fill('#policy-alias', 'production');
  await page.fill('#policy-rules', 'accuracy >= 0.5\n\nval_loss >> 2');
  await page.click('form.policy button[type="submit"]');
  await page.waitForSelector('form.policy .error', { timeout: 15000 });
  const malformed = await page.textContent('form.policy .error');
  if (!malformed.includes('Rule 2 (val_loss >> 2)')) problems.push(`a malformed rule says: ${malformed}`);
  refusalsExpected = false;
  await page.fill('#policy-rules', 'accuracy >= 0\nval_loss < 0.000001');
  await page.click('form.policy button[type="submit"]');
  await page.waitForSelector('ul.policies li[data-alias="production"] code:text-is("val_loss < 0.000001")', { timeout: 15000 });
  await page.fill('#promote-alias', 'production');
  await page.selectOption('#promote-version', '1');
  refusalsExpected = true;
  await page.click('form.promote button[type="submit"]');
  await page.waitForSelector('form.promote .error li', { timeout: 15000 });
  const failed = await page.$$eval('form.promote .error li', (items) => items.map((i) => i.textContent));
  if (failed.length !== 1 || !failed[0].includes('val_loss')) problems.push(`the refused promotion lists ${JSON.stringify(failed)}`);
  await screenshot('model-refused');
  refusalsExpected = false;
  await page.check('#promote-force');
  await page.fill('#promote-reason', 'first version, tried by hand');
  await page.click('form.promote button[type="submit"]');
  await page.waitForSelector('ul.aliases li:has-text("production")', { timeout: 15000 });
  const history = await page.textContent('ul.history');
  if (!/forced past .*val_loss < 0\.000001/.test(history)) problems.push(`the alias history says: ${history}`);
  await screenshot('model');
  await reachable('the model\'s page', 80, ['button Predict', 'button Save the policy', 'button Edit', 'button Roll back', 'input promote-force']);

  // Two versions of another model side by side: one ticked is refused in kiln's words, two compare.
  await page.goto(`${url}/#/models/scorer`);
  await page.waitForSelector('tr[data-version="2"]');
  await page.check('tr[data-version="1"] td.pick input');
  refusalsExpected = true;
  await page.click('button:has-text("Compare the ticked versions")');
  await page.waitForSelector('.version-comparison .error', { timeout: 15000 });
  refusalsExpected = false;
  await page.check('tr[data-version="2"] td.pick input');
  await page.click('button:has-text("Compare the ticked versions")');
  await page.waitForSelector('.version-comparison table.compare', { timeout: 15000 });
  const compared = await page.$$eval('.version-comparison thead th', (cells) => cells.map((c) => c.textContent));
  if (compared.join(' ') !== 'metric v1 v2') problems.push(`the versions compared are ${compared.join(' ')}`);
  const metricNames = await page.$$eval('.version-comparison tbody th', (cells) => cells.map((c) => c.textContent));
  if (!metricNames.includes('accuracy') || !metricNames.includes('valLoss')) problems.push(`the comparison lists ${metricNames.join(', ')}`);
  // Its "try it" takes rows of numbers.
  await page.fill('#try-inputs', '2.5, 2, 0.5\n-2.5, -2, 0.5');
  await page.click('#try-inputs ~ .fields button');
  await page.waitForSelector('.answers .probability', { timeout: 15000 });
  const labels = await page.$$eval('.answers .answer strong', (a) => a.map((l) => l.textContent));
  if (labels.join(' ') !== 'positive negative') problems.push(`the tabular model answered ${labels.join(' ')}`);
  await screenshot('model-versions');

  // 7. Compare: two jobs ticked in the list, their loss curves on one chart, settings side by side.
  await page.click('nav a:has-text("Jobs")');
  await page.check(`tr[data-job="${jobId}"] td.pick input`);
  await page.check('tr:has(a:text-is("second")) td.pick input');
  await page.click('#compare');
  await page.waitForSelector('table.compare tr.differs', { timeout: 15000 });
  const series = await page.evaluate(() => document.querySelector('.chart-card').dataset.series);
  if (series !== '2') problems.push(`the comparison chart has ${series} series, not 2`);
  const differing = await page.$$eval('table.compare tr.differs th', (rows) => rows.map((r) => r.textContent));
  if (!differing.includes('epochs')) problems.push(`the differing settings are ${differing}`);
  await screenshot('compare');
} catch (e) {
  problems.push(`the test stopped: ${e.message}`);
  try {
    await page.screenshot({ path: join(shots, 'failure.png'), fullPage: true });
    problems.push(`the page said: ${(await page.textContent('main')).slice(0, 2000)}`);
  } catch {
    // The page is gone; what failed is said above.
  }
}
await finish('The dashboard works in chromium');
