// Building elements, showing errors, and formatting numbers for people.

/// An element: h('a', { href: '#/jobs', class: 'x', onclick: f }, 'text', child, …). `null`,
/// `undefined` and `false` children are left out; arrays are flattened.
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith('on')) element.addEventListener(name.slice(2), value);
    else if (name === 'class') element.className = value;
    else if (value === true) element.setAttribute(name, '');
    else element.setAttribute(name, value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

/// Replaces `element`'s children, leaving out null, undefined and false (which replaceChildren would
/// write as text).
export function fill(element, ...children) {
  element.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
  return element;
}

/// The one way to show an error: a box saying what kiln said, and its code.
export function errorBox(error) {
  const code = error && error.code ? ` (${error.code})` : '';
  const rules = (error && error.extensions && error.extensions.failedRules) || [];
  return h(
    'div',
    { class: 'error', role: 'alert' },
    `${error && error.message ? error.message : error}${code}`,
    rules.length ? h('ul', {}, rules.map((rule) => h('li', {}, typeof rule === 'string' ? rule : JSON.stringify(rule)))) : null,
  );
}

/// Puts `error` in `slot` (an element kept for it), or empties it.
export function showError(slot, error) {
  fill(slot, error ? errorBox(error) : null);
}

/// 3 significant digits: 0.000123, 0.913, 12.3, 1.23e+6.
export function sig(value) {
  if (value === null || value === undefined || Number.isNaN(value)) return '–';
  if (value === 0) return '0';
  const abs = Math.abs(value);
  if (abs >= 1e5 || abs < 1e-4) return value.toExponential(2);
  return String(Number(value.toPrecision(3)));
}

export function percent(fraction) {
  return `${Math.round(fraction * 100)} %`;
}

/// 850 ms, 12 s, 3 min 20 s, 2 h 5 min, 3 d 4 h.
export function duration(ms) {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return '–';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s`;
  const hours = Math.floor(m / 60);
  if (hours < 48) return `${hours} h ${m % 60} min`;
  return `${Math.floor(hours / 24)} d ${hours % 24} h`;
}

/// A time as people read it: "14:03:12" today, "5 Dec 14:03" before.
export function when(iso) {
  if (!iso) return '–';
  const date = new Date(iso);
  const today = new Date();
  if (date.toDateString() === today.toDateString()) {
    return date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
  }
  return date.toLocaleString([], { day: 'numeric', month: 'short', hour: '2-digit', minute: '2-digit' });
}

/// When something should happen, from now: "in about 3 min 20 s", "any moment", or "not known".
export function startsIn(iso) {
  if (!iso) return 'not known';
  const ms = new Date(iso).getTime() - Date.now();
  return ms <= 5000 ? 'any moment' : `in about ${duration(ms)} (${when(iso)})`;
}

export function bytes(n) {
  if (n === null || n === undefined) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return `${i ? sig(n) : n} ${units[i]}`;
}

/// A status as a coloured badge.
export function badge(status) {
  return h('span', { class: `badge status-${(status || '').toLowerCase()}` }, status || '–');
}

/// A progress bar for a fraction in [0, 1].
export function progressBar(fraction, label) {
  const value = Math.max(0, Math.min(1, fraction || 0));
  return h(
    'div',
    { class: 'progress', role: 'progressbar', 'aria-valuemin': 0, 'aria-valuemax': 100, 'aria-valuenow': Math.round(value * 100), 'aria-label': label || 'progress' },
    h('div', { class: 'progress-fill', style: `width: ${(value * 100).toFixed(1)}%` }),
  );
}

/// A button that runs `action` (async), disabled while it runs; its error goes to `errorSlot`.
export function actionButton(label, action, errorSlot) {
  const button = h('button', { type: 'button' }, label);
  button.addEventListener('click', async () => {
    button.disabled = true;
    showError(errorSlot, null);
    try {
      await action();
    } catch (e) {
      showError(errorSlot, e);
    } finally {
      button.disabled = false;
    }
  });
  return button;
}

/// Under a paged list of `size` a page: "1234 jobs · page 3 of 62" with Previous and Next. `cursors`
/// holds the cursor each page starts after (null for the first); `load` reads the page after the last.
export function pager(noun, total, size, cursors, pageInfo, load) {
  const page = cursors.length;
  return h('div', { class: 'pager' },
    h('span', {}, `${total} ${noun}${total === 1 ? '' : 's'} · page ${page} of ${Math.max(1, Math.ceil(total / size))}`),
    page > 1 ? h('button', { type: 'button', onclick: () => { cursors.pop(); load(); } }, 'Previous') : null,
    pageInfo.hasNextPage ? h('button', { type: 'button', onclick: () => { cursors.push(pageInfo.endCursor); load(); } }, 'Next') : null);
}

/// A table with one column per compared thing (`heads`: their header cells' content) and `rows`;
/// `numeric` when the cells are numbers (the heads then align with them).
export function comparisonTable(corner, heads, rows, numeric = false) {
  const head = h('tr', {}, h('th', { scope: 'col' }, corner), heads.map((c) => h('th', { scope: 'col', class: numeric ? 'num' : null }, c)));
  return h('div', { class: 'table-wrap' }, h('table', { class: 'compare' }, h('thead', {}, head), h('tbody', {}, rows)));
}

/// A row per metric of a comparison (`{ metric values deltas }`): each value, and from the second on its
/// difference from the first, green where it is better (lower, for a loss) and red where worse.
export function metricRows(metrics) {
  const cell = (m, i) => {
    const delta = m.deltas[i];
    const shown = i > 0 && delta !== null && delta !== undefined && delta !== 0;
    const better = /loss/i.test(m.metric) ? delta < 0 : delta > 0;
    return h('td', { class: 'num' }, sig(m.values[i]),
      shown ? h('span', { class: `delta ${better ? 'better' : 'worse'}` }, ` ${delta > 0 ? '+' : ''}${sig(delta)}`) : null);
  };
  return metrics.map((m) => h('tr', {}, h('th', { scope: 'row' }, m.metric), m.values.map((_, i) => cell(m, i))));
}
