// Models: every model with its aliases; one model's versions side by side (metrics, lineage), its aliases
// with promote and roll back (a refused promotion lists the failed rules), the alias history, and a
// "try it" box that calls predict and shows each label's probability.

import { download, gql } from '../api.js';
import { actionButton, errorBox, fill, h, showError, sig, when } from '../ui.js';

const LIST = `query($after: String) { models(first: 100, after: $after) {
  pageInfo { hasNextPage endCursor }
  nodes { name createdAt latestVersion { version metrics { accuracy f1 } createdAt } aliases { alias version } } } }`;
const MODEL = `query($name: String!) { model(name: $name) { name
  versions { version createdAt downloadUrl baseModel aliases
    metrics { epoch accuracy f1 valLoss precision recall }
    job { id name } dataset { name rowCount } retrainedFrom { version } }
  aliases { alias version split { version weight } updatedAt }
  promotionPolicies { alias rules }
  aliasHistory(last: 20) { alias fromVersion toVersion by reason forced overriddenRules rollback at } } }`;
const SET = `mutation($m: String!, $a: String!, $v: Int!, $r: String) {
  setModelAlias(model: $m, alias: $a, version: $v, reason: $r) { name } }`;
const ROLLBACK = 'mutation($m: String!, $a: String!) { rollbackModelAlias(model: $m, alias: $a) { name } }';
const PREDICT = `query($m: String!, $v: Int, $a: String, $i: [String!]) {
  predict(model: $m, version: $v, alias: $a, inputs: $i) { label score version probabilities { label probability } } }`;

function listPage(main) {
  const body = h('div', {}, h('p', { class: 'muted' }, 'Loading…'));
  fill(main, h('h1', {}, 'Models'), body);
  (async () => {
    try {
      const { models } = await gql(LIST, { after: null });
      fill(body, models.nodes.length
        ? h('div', { class: 'table-wrap' }, h('table', { class: 'models' },
            h('thead', {}, h('tr', {}, ['Model', 'Latest version', 'Accuracy', 'F1', 'Aliases', 'Created'].map((t) => h('th', { scope: 'col' }, t)))),
            h('tbody', {}, models.nodes.map((m) => h('tr', { 'data-model': m.name },
              h('td', {}, h('a', { href: `#/models/${encodeURIComponent(m.name)}` }, m.name)),
              h('td', { class: 'num' }, m.latestVersion ? `v${m.latestVersion.version}` : '–'),
              h('td', { class: 'num' }, m.latestVersion ? sig(m.latestVersion.metrics.accuracy) : '–'),
              h('td', { class: 'num' }, m.latestVersion ? sig(m.latestVersion.metrics.f1) : '–'),
              h('td', {}, m.aliases.map((a) => `${a.alias} → ${a.version ? `v${a.version}` : 'split'}`).join(', ') || '–'),
              h('td', {}, when(m.createdAt)))))))
        : h('p', { class: 'empty' }, 'No models yet: a job that completes registers its version here.'));
    } catch (e) {
      fill(body, errorBox(e));
    }
  })();
  return () => {};
}

function modelPage(main, name) {
  const errorSlot = h('div', { class: 'error-slot' });
  const versionsBox = h('section', { class: 'card' });
  const aliasesBox = h('section', { class: 'card' });
  const tryBox = h('section', { class: 'card' });
  const historyBox = h('section', { class: 'card' });
  let model;

  async function load() {
    try {
      const data = await gql(MODEL, { name });
      if (!data.model) {
        fill(main, h('h1', {}, 'No such model'), h('p', {}, h('a', { href: '#/models' }, 'Back to the models')));
        return;
      }
      model = data.model;
      draw();
    } catch (e) {
      showError(errorSlot, e);
    }
  }

  function promoteForm(versions) {
    const version = h('select', { id: 'promote-version', 'aria-label': 'version to promote' },
      versions.map((v) => h('option', { value: v.version }, `v${v.version}`)));
    const alias = h('input', { id: 'promote-alias', type: 'text', value: 'production', required: true, size: 14 });
    const reason = h('input', { id: 'promote-reason', type: 'text', placeholder: 'why (kept in the history)', size: 24 });
    const slot = h('div', { class: 'error-slot' });
    return h('form', { class: 'promote', onsubmit: async (e) => {
      e.preventDefault();
      showError(slot, null);
      try {
        await gql(SET, { m: name, a: alias.value.trim(), v: Number(version.value), r: reason.value.trim() || null });
        await load();
      } catch (error) {
        showError(slot, error);
      }
    } },
      h('div', { class: 'fields' },
        h('label', {}, 'Version', version),
        h('label', {}, 'Alias', alias),
        h('label', {}, 'Reason', reason),
        h('button', { type: 'submit', class: 'primary' }, 'Point the alias at it')),
      slot);
  }

  function draw() {
    const versions = [...model.versions].reverse();
    fill(versionsBox, h('h2', {}, 'Versions'),
      h('div', { class: 'table-wrap' }, h('table', { class: 'versions' },
        h('thead', {}, h('tr', {}, ['Version', 'Accuracy', 'F1', 'Precision', 'Recall', 'Val loss', 'Job', 'Dataset', 'From', 'Aliases', 'Created', ''].map((t) => h('th', { scope: 'col' }, t)))),
        h('tbody', {}, versions.map((v) => h('tr', { 'data-version': v.version },
          h('td', {}, `v${v.version}`),
          h('td', { class: 'num' }, sig(v.metrics.accuracy)),
          h('td', { class: 'num' }, sig(v.metrics.f1)),
          h('td', { class: 'num' }, sig(v.metrics.precision)),
          h('td', { class: 'num' }, sig(v.metrics.recall)),
          h('td', { class: 'num' }, sig(v.metrics.valLoss)),
          h('td', {}, v.job ? h('a', { href: `#/jobs/${v.job.id}` }, v.job.name) : '–'),
          h('td', {}, v.dataset ? v.dataset.name : '–'),
          h('td', {}, v.retrainedFrom ? `v${v.retrainedFrom.version}` : (v.baseModel || 'scratch')),
          h('td', {}, v.aliases.join(', ') || '–'),
          h('td', {}, when(v.createdAt)),
          h('td', {},
            h('button', { type: 'button', onclick: () => download(v.downloadUrl, `${name}-v${v.version}.zip`).catch((e) => showError(errorSlot, e)) }, 'Download'))))))));
    fill(aliasesBox, h('h2', {}, 'Aliases'), promoteForm(versions),
      model.aliases.length
        ? h('ul', { class: 'aliases' }, model.aliases.map((a) => {
            const policy = model.promotionPolicies.find((p) => p.alias === a.alias);
            return h('li', {}, h('strong', {}, a.alias), ' → ',
              a.version ? `v${a.version}` : a.split.map((s) => `v${s.version} (${s.weight})`).join(' / '),
              h('span', { class: 'muted' }, ` since ${when(a.updatedAt)}`),
              policy ? h('span', { class: 'muted' }, ` · guarded: ${policy.rules.join(', ')}`) : null,
              ' ', actionButton('Roll back', async () => { await gql(ROLLBACK, { m: name, a: a.alias }); await load(); }, errorSlot));
          }))
        : h('p', { class: 'muted' }, 'No aliases: promote a version to point one at it.'));
    fill(historyBox, h('h2', {}, 'Alias history'),
      model.aliasHistory.length
        ? h('ul', { class: 'history' }, model.aliasHistory.map((m) => h('li', {},
            `${when(m.at)} · ${m.alias}: ${m.fromVersion ? `v${m.fromVersion}` : '–'} → ${m.toVersion ? `v${m.toVersion}` : '–'} by ${m.by}`,
            m.rollback ? ' (roll back)' : '', m.forced ? ` (forced past ${m.overriddenRules.join(', ')})` : '',
            m.reason ? h('span', { class: 'muted' }, ` — ${m.reason}`) : null)))
        : h('p', { class: 'muted' }, 'Nothing moved yet.'));
  }

  // Try it: one text per line, against a version or an alias.
  const inputs = h('textarea', { id: 'try-inputs', rows: 3, 'aria-label': 'texts to classify, one per line', placeholder: 'One text per line' });
  const target = h('input', { id: 'try-target', type: 'text', placeholder: 'latest, v2 or an alias', 'aria-label': 'version or alias', size: 16 });
  const answers = h('div', { class: 'answers', 'aria-live': 'polite' });
  fill(tryBox, h('h2', {}, 'Try it'),
    h('form', { onsubmit: async (e) => {
      e.preventDefault();
      const texts = inputs.value.split('\n').map((t) => t.trim()).filter(Boolean);
      if (!texts.length) return;
      const which = target.value.trim();
      const version = /^v?\d+$/.test(which) ? Number(which.replace('v', '')) : null;
      const alias = which && version === null && which !== 'latest' ? which : null;
      fill(answers, h('p', { class: 'muted' }, 'Asking…'));
      try {
        const { predict } = await gql(PREDICT, { m: name, v: version, a: alias, i: texts });
        fill(answers, predict.map((p, i) => h('div', { class: 'answer' },
          h('p', {}, h('strong', {}, p.label), ` ${sig(p.score)} · v${p.version} · `, h('span', { class: 'muted' }, texts[i])),
          p.probabilities.map((l) => h('div', { class: 'probability' },
            h('span', { class: 'prob-label' }, l.label),
            h('span', { class: 'prob-bar' }, h('span', { style: `width: ${(l.probability * 100).toFixed(1)}%` })),
            h('span', { class: 'num' }, sig(l.probability)))))));
      } catch (error) {
        fill(answers, errorBox(error));
      }
    } }, inputs, h('div', { class: 'fields' }, target, h('button', { type: 'submit', class: 'primary' }, 'Predict'))),
    answers);

  fill(main, h('p', {}, h('a', { href: '#/models' }, '← Models')), h('h1', {}, name), errorSlot, tryBox, versionsBox, aliasesBox, historyBox);
  load();
  return () => {};
}

export function render(main, params, name) {
  return name ? modelPage(main, name) : listPage(main);
}
