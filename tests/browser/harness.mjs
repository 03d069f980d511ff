// What every page's browser test shares: the environment it is given, Debian's chromium launched to stay
// on loopback, the problems it watches for (a request or WebSocket leaving loopback, a console error, an
// uncaught page error), and screenshots at 1280×800 and at phone width (390×844).

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

import { chromium } from 'playwright-core';

export const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};

/// Starts the browser and a page. `allowConsole(text)` says whether a console error is expected (a
/// refused request while a test sends a wrong token on purpose).
export async function start(allowConsole = () => false) {
  const shots = env('KILN_SCREENSHOTS');
  mkdirSync(shots, { recursive: true });
  const problems = [];
  const browser = await chromium.launch({
    executablePath: process.env.KILN_CHROMIUM || '/usr/bin/chromium',
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  const loopback = (address) => {
    const parsed = new URL(address);
    return ['data:', 'blob:'].includes(parsed.protocol) || ['127.0.0.1', 'localhost', '[::1]'].includes(parsed.hostname);
  };
  page.on('request', (r) => {
    if (!loopback(r.url())) problems.push(`a request left loopback: ${r.url()}`);
  });
  page.on('websocket', (ws) => {
    if (!loopback(ws.url())) problems.push(`a WebSocket left loopback: ${ws.url()}`);
  });
  page.on('console', (m) => {
    if (m.type() === 'error' && !allowConsole(m.text())) problems.push(`console error: ${m.text()}`);
  });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));

  const screenshot = async (name) => {
    for (const [suffix, viewport] of [
      ['1280', { width: 1280, height: 800 }],
      ['phone', { width: 390, height: 844 }],
    ]) {
      await page.setViewportSize(viewport);
      await page.waitForTimeout(300);
      await page.screenshot({ path: join(shots, `${name}-${suffix}.png`), fullPage: suffix === 'phone' });
    }
    await page.setViewportSize({ width: 1280, height: 800 });
  };

  /// Presses Tab up to `presses` times from the top of the page (kiln's name, top left): every element
  /// that takes the focus must show it (an outline). Returns what was reached, as "tag text" strings.
  const tabThrough = async (presses) => {
    const reached = [];
    await page.evaluate(() => document.querySelector('a.brand').focus());
    for (let i = 0; i < presses; i += 1) {
      await page.keyboard.press('Tab');
      const focused = await page.evaluate(() => {
        const e = document.activeElement;
        if (!e || e === document.body) return null;
        const style = getComputedStyle(e);
        const control = ['INPUT', 'SELECT', 'TEXTAREA'].includes(e.tagName);
        const name = (e.getAttribute('aria-label') || (control ? e.id : e.textContent || e.id) || '').trim().replace(/\s+/g, ' ');
        return { what: `${e.tagName.toLowerCase()} ${name.slice(0, 40)}`, shown: style.outlineStyle !== 'none' && parseFloat(style.outlineWidth) > 0 };
      });
      if (!focused) break;
      reached.push(focused.what);
      if (!focused.shown) problems.push(`${focused.what} takes the keyboard focus without showing it`);
    }
    return reached;
  };

  /// Closes the browser and exits: 1 with the problems, else 0 saying `done`.
  const finish = async (done) => {
    await browser.close();
    if (problems.length) {
      console.error(problems.join('\n'));
      process.exit(1);
    }
    console.log(`${done}; screenshots in ${shots}`);
  };
  return { browser, page, problems, screenshot, shots, tabThrough, finish };
}
