// GraphiQL as a person uses it, in Debian's chromium: the landing notice, the token, the Docs pane,
// README step 3's subscription on a training job until it completes, a wrong token, and the token in
// GraphiQL's Headers tab.
//
// Run by tests/api/browser.rs, which starts kiln and queues a job, and runs the job when this script
// prints `subscribed`. Environment: KILN_URL, KILN_TOKEN,
// KILN_SUBSCRIPTION (README step 3's subscription for the job), KILN_SCREENSHOTS (a folder),
// KILN_CHROMIUM (the browser, default /usr/bin/chromium). Exits 1 saying what went wrong.

import { join } from 'node:path';

import { env, start } from './harness.mjs';

const url = env('KILN_URL');
const token = env('KILN_TOKEN');
const subscription = env('KILN_SUBSCRIPTION');

/// Console errors the browser logs for a refused request while the test sends a wrong token on purpose.
let refusalsExpected = false;
const { page, problems, screenshot, shots, finish } = await start(
  (text) => refusalsExpected && /status of 401/.test(text),
);

try {
  const editorText = (selector) =>
    page.evaluate((s) => document.querySelector(`${s} .CodeMirror`).CodeMirror.getValue(), selector);
  const run = async (query) => {
    await page.evaluate(
      (q) => document.querySelector('.graphiql-query-editor .CodeMirror').CodeMirror.setValue(q),
      query,
    );
    await page.click('.graphiql-execute-button');
  };
  const resultsSay = async (text, timeout) => {
    await page.waitForFunction(
      (t) => {
        const results = document.querySelector('.graphiql-response .CodeMirror');
        return results && results.CodeMirror.getValue().includes(t);
      },
      text,
      { timeout },
    );
  };

  // 1. The landing page says what to do, and shows no error.
  await page.goto(url + '/graphiql');
  await page.waitForSelector('.graphiql-container');
  const notice = await page.textContent('#notice');
  if (!notice.includes('Paste an API token above')) problems.push(`the landing notice says: ${notice}`);
  const landing = await editorText('.graphiql-response');
  if (landing.trim()) problems.push(`the results pane is not empty on landing: ${landing}`);
  await screenshot('landing');

  // 2. With the token, the schema arrives: the Docs pane lists Query.
  await page.fill('#token', token);
  await page.click('.graphiql-sidebar button[aria-label*="Documentation Explorer"]');
  await page.waitForFunction(
    () => (document.querySelector('.graphiql-doc-explorer') || {}).textContent?.includes('Query'),
    null,
    { timeout: 15000 },
  );
  if (await page.isVisible('#notice')) problems.push(`a notice stays after the token: ${await page.textContent('#notice')}`);
  await screenshot('docs');

  // 3. README step 3: epochs arrive over the WebSocket until the job completes. The job starts when
  // the subscription is on (the test waits for this line).
  const subscribed = new Promise((resolve, reject) => {
    page.once('websocket', (ws) =>
      ws.on('framesent', (f) => String(f.payload).includes('"subscribe"') && resolve()),
    );
    setTimeout(() => reject(new Error('the page sent no subscription within 30 s')), 30000);
  });
  await run(subscription);
  await subscribed;
  console.log('subscribed');
  await resultsSay('"EpochCompleted"', 120000);
  await screenshot('subscription-training');
  await resultsSay('"COMPLETED"', 180000);
  await screenshot('subscription-completed');

  // 4. A wrong token is refused in words, over HTTP and over the WebSocket.
  refusalsExpected = true;
  await page.fill('#token', 'kiln_this_is_not_a_token_0123456789');
  await page.waitForFunction(() => document.querySelector('#notice').textContent.includes('kiln refused this token'), null, {
    timeout: 15000,
  });
  await run('query Me { me { name } }');
  await resultsSay('UNAUTHENTICATED', 15000);
  await run(subscription);
  await resultsSay('The WebSocket closed (4403)', 15000);
  await screenshot('wrong-token');

  // 5. The token in GraphiQL's Headers tab instead of the field: over HTTP and the WebSocket alike.
  refusalsExpected = false;
  await page.fill('#token', '');
  await page.waitForFunction(() => document.querySelector('#notice').textContent.includes('Paste an API token'), null, {
    timeout: 15000,
  });
  await page.click('.graphiql-editor-tools button[data-name="headers"]');
  await page.evaluate((t) => {
    const editor = document.querySelector(
      'section.graphiql-editor-tool[aria-label="Headers"] .graphiql-editor:not(.hidden) .CodeMirror',
    );
    editor.CodeMirror.setValue(JSON.stringify({ Authorization: `Bearer ${t}` }));
  }, token);
  await run('query Me { me { name } }');
  await resultsSay('"me"', 15000);
  await run(subscription);
  await resultsSay('"COMPLETED"', 15000);
  await screenshot('headers-tab');
} catch (e) {
  problems.push(`the test stopped: ${e.message}`);
  try {
    await page.screenshot({ path: join(shots, 'failure.png') });
    const results = await page.evaluate(() => {
      const pane = document.querySelector('.graphiql-response .CodeMirror');
      return pane ? pane.CodeMirror.getValue() : '(no results pane)';
    });
    problems.push(`the results pane said: ${results}`);
  } catch {
    // The page is gone; what failed is said above.
  }
}
await finish('GraphiQL works in chromium');
