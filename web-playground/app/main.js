// The dashboard's entry: signing in with a token, and the pages by the address after `#`.
// Each page is a module with `render(main, params, ...captures)` that returns what stops it.

import { gql, resetConnection, token } from './api.js';
import { errorBox, fill, h } from './ui.js';
import * as jobs from './pages/jobs.js';
import * as job from './pages/job.js';
import * as datasets from './pages/datasets.js';
import * as dataset from './pages/dataset.js';
import * as models from './pages/models.js';
import * as submit from './pages/submit.js';
import * as compare from './pages/compare.js';
import * as home from './pages/home.js';
import * as queue from './pages/queue.js';

const ROUTES = [
  [/^\/jobs\/([^/]+)$/, job],
  [/^\/$/, home],
  [/^\/jobs$/, jobs],
  [/^\/queue$/, queue],
  [/^\/datasets$/, datasets],
  [/^\/datasets\/([^/]+)$/, dataset],
  [/^\/models\/([^/]+)$/, models],
  [/^\/models$/, models],
  [/^\/submit$/, submit],
  [/^\/compare$/, compare],
];

const main = document.getElementById('main');
const who = document.getElementById('who');
const signOut = document.getElementById('signout');
let stop = null;

function signInPage(message) {
  const input = h('input', { id: 'token', type: 'password', autocomplete: 'off', required: true, 'aria-describedby': 'token-help' });
  const errorSlot = h('div', { class: 'error-slot' }, message ? errorBox(message) : null);
  const form = h(
    'form',
    { class: 'card sign-in', onsubmit: async (e) => {
      e.preventDefault();
      token.set(input.value.trim());
      resetConnection();
      await route();
    } },
    h('h1', {}, 'Sign in to kiln'),
    h('label', { for: 'token' }, 'API token'),
    input,
    h('p', { id: 'token-help', class: 'muted' },
      'The first start of kiln printed an admin token (export KILN_TOKEN=kiln_…); an admin can mint more with createApiToken. It is kept in this browser only.'),
    h('button', { type: 'submit', class: 'primary' }, 'Sign in'),
    errorSlot,
  );
  fill(main, form);
  input.focus();
}

async function route() {
  if (stop) stop();
  stop = null;
  if (!token.get()) {
    who.textContent = '';
    signOut.hidden = true;
    signInPage();
    return;
  }
  try {
    const { me } = await gql('{ me { name role } }');
    who.textContent = me.name;
    who.title = `signed in as ${me.name}, ${me.role}`;
    signOut.hidden = false;
  } catch (e) {
    if (e.code === 'UNAUTHENTICATED') {
      token.clear();
      resetConnection();
      who.textContent = '';
      signOut.hidden = true;
      signInPage({ message: `kiln refused this token: ${e.message}`, code: e.code });
    } else {
      fill(main, errorBox(e));
    }
    return;
  }
  const [path, query] = (location.hash.slice(1) || '/').split('?');
  const params = new URLSearchParams(query || '');
  for (const [pattern, page] of ROUTES) {
    const match = path.match(pattern);
    if (match) {
      stop = page.render(main, params, ...match.slice(1).map(decodeURIComponent));
      for (const link of document.querySelectorAll('nav a')) {
        const section = `#/${path.split('/')[1]}`;
        link.toggleAttribute('aria-current', link.getAttribute('href') === section);
      }
      return;
    }
  }
  fill(main, h('h1', {}, 'Not found'), h('p', {}, h('a', { href: '#/jobs' }, 'Go to the jobs')));
}

signOut.addEventListener('click', () => {
  token.clear();
  resetConnection();
  route();
});
window.addEventListener('hashchange', route);
route();
