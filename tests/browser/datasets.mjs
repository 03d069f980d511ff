// The datasets page's resumable upload, in Debian's chromium: a large file is uploaded over a slowed
// network and the tab is closed part-way; a new tab lists the unfinished upload with what kiln has
// stored, and choosing the same file again goes on from there (not from zero) to a READY dataset. The
// dataset is downloaded, archived and restored from its row; a second unfinished upload is discarded
// from the list; the dataset is deleted (after a confirmation).
//
// Run by tests/api/browser.rs. Environment: KILN_URL, KILN_TOKEN, KILN_SCREENSHOTS, KILN_CHROMIUM,
// FILE (a JSONL file of several MiB on disk, so the browser gives it the same modification time each
// time it is chosen), ROWS (its rows). Prints `upload <id>`, `downloaded <file name> <bytes> <sha256>`
// and `discarded <id>`. Exits 1 saying what went wrong.

import { createHash } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';

import { env, start } from './harness.mjs';

const url = env('KILN_URL');
const token = env('KILN_TOKEN');
const file = env('FILE');
const rows = Number(env('ROWS'));
const size = statSync(file).size;
const { browser, page: first, problems, finish } = await start();

/// Slows the page's uploads to `bytesPerSecond` (Chrome DevTools Protocol).
async function throttle(page, bytesPerSecond) {
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Network.enable');
  await cdp.send('Network.emulateNetworkConditions', {
    offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: bytesPerSecond,
  });
}

/// The percentage the upload's progress bar shows.
const shown = (page) => page.getAttribute('.upload-progress [role="progressbar"]', 'aria-valuenow').then(Number);

try {
  await first.goto(url + '/');
  await first.evaluate((t) => localStorage.setItem('kiln.token', t), token);
  await first.goto(url + '/#/datasets');
  await first.waitForSelector('form.upload');
  await throttle(first, 2 * 1024 * 1024);
  await first.setInputFiles('#dataset-file', file);
  await first.fill('#dataset-name', 'big prompts');
  await first.click('form.upload button[type="submit"]');
  // Part-way through (past the first 8 MiB request), the tab is closed.
  await first.waitForFunction(() => Number(document.querySelector('.upload-progress [role="progressbar"]')?.getAttribute('aria-valuenow')) >= 55, null, { timeout: 60000 });
  const stored = await first.evaluate(() => Object.keys(localStorage).filter((k) => k.startsWith('tus::')).length);
  if (stored !== 1) problems.push(`the browser remembers ${stored} unfinished uploads, not 1`);
  await first.close();

  // A new tab: the unfinished upload is listed with what kiln has.
  const page = await first.context().newPage();
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  await page.goto(url + '/#/datasets');
  await page.waitForSelector('.unfinished-list li', { timeout: 15000 });
  const listed = await page.textContent('.unfinished-list li');
  const id = await page.getAttribute('.unfinished-list li', 'data-upload');
  console.log(`upload ${id}`);
  if (!listed.includes('prompts.jsonl') || !/\d+ % of/.test(listed)) problems.push(`the unfinished upload is listed as: ${listed}`);
  const listedPercent = Number(/(\d+) % of/.exec(listed)?.[1] ?? 0);
  if (listedPercent < 10) problems.push(`kiln had ${listedPercent} % of the upload when the tab closed`);
  await page.setViewportSize({ width: 1280, height: 800 });
  await page.screenshot({ path: `${process.env.KILN_SCREENSHOTS}/datasets-unfinished-1280.png` });
  await page.setViewportSize({ width: 390, height: 844 });
  await page.screenshot({ path: `${process.env.KILN_SCREENSHOTS}/datasets-unfinished-phone.png`, fullPage: true });
  await page.setViewportSize({ width: 1280, height: 800 });

  // Choosing the same file goes on from there.
  await page.setInputFiles('#dataset-file', file);
  await page.fill('#dataset-name', 'big prompts');
  await page.click('form.upload button[type="submit"]');
  await page.waitForSelector('.upload-progress [role="progressbar"]');
  const startedAt = await shown(page);
  const note = await page.textContent('.upload-progress');
  if (startedAt < listedPercent - 1 || !note.includes('went on from')) problems.push(`the second try started at ${startedAt} % (${note}), not at the ${listedPercent} % kiln had`);
  await page.waitForSelector('.upload-result .status-ready', { timeout: 60000 });
  const result = await page.textContent('.upload-result');
  if (!result.includes(`${rows} rows`)) problems.push(`the upload ended as: ${result}`);
  if ((await shown(page)) !== 100) problems.push('the progress bar did not reach 100 %');
  await page.waitForSelector('table.datasets td:has-text("big prompts")');
  const left = await page.evaluate(() => Object.keys(localStorage).filter((k) => k.startsWith('tus::')).length);
  if (left !== 0) problems.push(`a finished upload is still remembered (${left})`);
  if (await page.$('.unfinished-list li')) problems.push('the finished upload is still listed as unfinished');

  // The dataset's actions: download (the file as uploaded), archive and restore, delete.
  const row = 'table.datasets tr:has(td:has-text("big prompts"))';
  const [saved] = await Promise.all([
    page.waitForEvent('download'),
    page.click(`${row} button:has-text("Download")`),
  ]);
  const got = readFileSync(await saved.path());
  console.log(`downloaded ${saved.suggestedFilename()} ${got.length} ${createHash('sha256').update(got).digest('hex')}`);
  await page.click(`${row} button:has-text("Archive")`);
  await page.waitForSelector(`${row} .status-archived`);
  await page.setViewportSize({ width: 1280, height: 800 });
  await page.screenshot({ path: `${process.env.KILN_SCREENSHOTS}/datasets-actions-1280.png` });
  await page.setViewportSize({ width: 390, height: 844 });
  await page.screenshot({ path: `${process.env.KILN_SCREENSHOTS}/datasets-actions-phone.png`, fullPage: true });
  await page.setViewportSize({ width: 1280, height: 800 });
  await page.click(`${row} button:has-text("Restore")`);
  await page.waitForSelector(`${row} .status-fresh`);

  // Another upload left unfinished is discarded from the list: kiln drops its bytes.
  await throttle(page, 1024 * 1024);
  await page.setInputFiles('#dataset-file', file);
  await page.fill('#dataset-name', 'to discard');
  await page.click('form.upload button[type="submit"]');
  await page.waitForFunction(() => Number(document.querySelector('.upload-progress [role="progressbar"]')?.getAttribute('aria-valuenow')) >= 5, null, { timeout: 60000 });
  await page.reload();
  await page.waitForSelector('.unfinished-list li', { timeout: 15000 });
  const discarded = await page.getAttribute('.unfinished-list li', 'data-upload');
  console.log(`discarded ${discarded}`);
  await page.click('.unfinished-list li button:has-text("Discard")');
  await page.waitForFunction(() => !document.querySelector('.unfinished-list li'), null, { timeout: 15000 });

  // Deleting asks first; then the dataset is gone from the list.
  page.once('dialog', (dialog) => dialog.accept());
  await page.click(`${row} button:has-text("Delete")`);
  await page.waitForSelector(row, { state: 'detached', timeout: 15000 });
} catch (e) {
  problems.push(`the datasets test stopped: ${e.stack || e}`);
}
await browser.close();
if (problems.length) {
  console.error(problems.join('\n'));
  process.exit(1);
}
console.log('the datasets page uploads and resumes');
