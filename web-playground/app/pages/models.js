// Models: every model with its aliases; one model's versions side by side (metrics, lineage), its aliases
// with promote and roll back (a refused promotion lists the failed rules; an admin may force it), the
// promotion policies that guard aliases, the alias history, and a "try it" box that calls predict and
// shows each label's probability.

import { download, gql } from '../api.js';
import { actionButton, comparisonTable, errorBox, fill, h, metricRows, pager, showError, sig, when } from '../ui.js';

const PAGE = 20;
const LIST = `query($first: Int, $after: String) { models(first: $first, after: $after) {
  totalCount pageInfo { hasNextPage endCursor }
  nodes { name createdAt latestVersion { version metrics { accuracy f1 } createdAt } aliases { alias version } } } }`;
const MODEL = `query($name: String!) { model(name: $name) { name
  versions { version createdAt downloadUrl baseModel aliases
    metrics { epoch accuracy f1 valLoss precision recall }
    job { id name task } dataset { name rowCount } retrainedFrom { version } }
  aliases { alias version split { version weight } updatedAt }
  promotionPolicies { alias rules updatedAt }
  aliasHistory(last: 20) { alias fromVersion toVersion by reason forced overriddenRules rollback at } } }`;
const SET = `mutation($m: String!, $a: String!, $v: Int!, $r: String, $f: Boolean) {
  setModelAlias(model: $m, alias: $a, version: $v, reason: $r, force: $f) { name } }`;
const COMPARE = `query($m: String!, $v: [Int!]!) {
  compareModelVersions(model: $m, versions: $v) { versions { version } metrics { metric values deltas } } }`;
const POLICY = `mutation($m: String!, $a: String!, $rules: [String!]!) {
  setPromotionPolicy(model: $m, alias: $a, rules: $rules) { name } }`;
const ROLLBACK = 'mutation($m: String!, $a: String!) { rollbackModelAlias(model: $m, alias: $a) { name } }';
const PREDICT = `query($m: String!, $v: Int, $a: String, $i: [String!], $rows: [[Float!]!]) {
  predict(model: $m, version: $v, alias: $a, inputs: $i, rows: $rows) { label score version probabilities { label probability } } }`;

function listPage(main) {
  const body = h('div', {}, h('p', { class: 'muted' }, 'Loading…'));
  const cursors = [null];
  fill(main, h('h1', {}, 'Models'), body);
  const load = async () => {
    try {
      const { models } = await gql(LIST, { first: PAGE, after: cursors[cursors.length - 1] });
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
        : h('p', { class: 'empty' }, 'No models yet: a job that completes registers its version here.'),
        pager('model', models.totalCount, PAGE, cursors, models.pageInfo, load));
    } catch (e) {
      fill(body, errorBox(e));
    }
  };
  load();
  return () => {};
}

function modelPage(main, name) {
  const errorSlot = h('div', { class: 'error-slot' });
  const versionsBox = h('section', { class: 'card' });
  const aliasesBox = h('section', { class: 'card' });
  const tryBox = h('section', { class: 'card' });
  const historyBox = h('section', { class: 'card' });
  const policyBox = h('section', { class: 'card' });
  const compareBox = h('div', { class: 'version-comparison' });
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
    const force = h('input', { id: 'promote-force', type: 'checkbox' });
    const slot = h('div', { class: 'error-slot' });
    return h('form', { class: 'promote', onsubmit: async (e) => {
      e.preventDefault();
      showError(slot, null);
      try {
        await gql(SET, { m: name, a: alias.value.trim(), v: Number(version.value), r: reason.value.trim() || null, f: force.checked || null });
        await load();
      } catch (error) {
        showError(slot, error);
      }
    } },
      h('div', { class: 'fields' },
        h('label', {}, 'Version', version),
        h('label', {}, 'Alias', alias),
        h('label', {}, 'Reason', reason),
        h('label', { class: 'check', title: 'admin tokens: past the rules of the alias\'s promotion policy; the history says so' }, force, 'Force past the policy'),
        h('button', { type: 'submit', class: 'primary' }, 'Point the alias at it')),
      slot);
  }

  /// The rules that guard an alias: one per line; saving none removes the policy.
  function policyForm() {
    const alias = h('input', { id: 'policy-alias', type: 'text', value: 'production', required: true, size: 14 });
    const rules = h('textarea', { id: 'policy-rules', rows: 3, 'aria-describedby': 'policy-hint',
      placeholder: 'accuracy >= 0.95\nf1 >= current - 0.01\nrecall[injection] >= 0.98' });
    const slot = h('div', { class: 'error-slot' });
    const form = h('form', { class: 'policy', onsubmit: async (e) => {
      e.preventDefault();
      showError(slot, null);
      const list = rules.value.split('\n').map((r) => r.trim()).filter(Boolean);
      try {
        await gql(POLICY, { m: name, a: alias.value.trim(), rules: list });
        await load();
      } catch (error) {
        // `rules[i]` counts the rules sent, which are the lines that are not blank.
        const at = /^rules\[(\d+)\]$/.exec((error.extensions && error.extensions.field) || '');
        showError(slot, at ? { ...error, message: `Rule ${Number(at[1]) + 1} (${list[Number(at[1])]}): ${error.message}` } : error);
      }
    } },
      h('div', { class: 'fields' },
        h('label', {}, 'Alias', alias),
        h('label', { class: 'grow' }, 'Rules, one per line', rules),
        h('button', { type: 'submit' }, 'Save the policy')),
      h('p', { id: 'policy-hint', class: 'muted small' },
        'Each rule is METRIC OP THRESHOLD: accuracy, precision, recall, f1, val_loss, train_loss, or per label f1[LABEL]; ',
        '>=, >, <= or <; a number or current ± N (the version the alias points to now). No rules: no policy. Admin tokens only.'),
      slot);
    form.edit = (policy) => {
      alias.value = policy.alias;
      rules.value = policy.rules.join('\n');
      rules.focus();
    };
    return form;
  }

  /// The ticked versions' metrics (per label too) side by side, with differences from the first.
  async function compareTicked() {
    const ticked = [...versionsBox.querySelectorAll('td.pick input:checked')].map((i) => Number(i.value)).sort((a, b) => a - b);
    const { compareModelVersions: c } = await gql(COMPARE, { m: name, v: ticked });
    fill(compareBox, comparisonTable('metric', c.versions.map((v) => `v${v.version}`), metricRows(c.metrics), true));
  }

  function draw() {
    const versions = [...model.versions].reverse();
    inputs.placeholder = tabular() ? 'One row per line: its numbers separated by commas' : 'One text per line';
    fill(versionsBox, h('h2', {}, 'Versions'),
      h('div', { class: 'table-wrap' }, h('table', { class: 'versions' },
        h('thead', {}, h('tr', {}, ['', 'Version', 'Accuracy', 'F1', '+Precision', '+Recall', '+Val loss', '+Job', '+Dataset', '+From', 'Aliases', '+Created', ''].map((t) =>
          h('th', { scope: 'col', class: t.startsWith('+') ? 'extra' : null }, t.replace('+', ''))))),
        h('tbody', {}, versions.map((v) => h('tr', { 'data-version': v.version },
          h('td', { class: 'pick' }, h('input', { type: 'checkbox', value: v.version, 'aria-label': `compare v${v.version}` })),
          h('td', {}, `v${v.version}`),
          h('td', { class: 'num' }, sig(v.metrics.accuracy)),
          h('td', { class: 'num' }, sig(v.metrics.f1)),
          h('td', { class: 'num extra' }, sig(v.metrics.precision)),
          h('td', { class: 'num extra' }, sig(v.metrics.recall)),
          h('td', { class: 'num extra' }, sig(v.metrics.valLoss)),
          h('td', { class: 'extra' }, v.job ? h('a', { href: `#/jobs/${v.job.id}` }, v.job.name) : '–'),
          h('td', { class: 'extra' }, v.dataset ? v.dataset.name : '–'),
          h('td', { class: 'extra' }, v.retrainedFrom ? `v${v.retrainedFrom.version}` : (v.baseModel || 'scratch')),
          h('td', {}, v.aliases.join(', ') || '–'),
          h('td', { class: 'extra' }, when(v.createdAt)),
          h('td', {},
            h('button', { type: 'button', onclick: () => download(v.downloadUrl, `${name}-v${v.version}.zip`).catch((e) => showError(errorSlot, e)) }, 'Download'))))))),
      h('div', { class: 'toolbar' }, actionButton('Compare the ticked versions', compareTicked, compareBox)),
      compareBox);
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
    const policies = policyForm();
    fill(policyBox, h('h2', {}, 'Promotion policies'),
      model.promotionPolicies.length
        ? h('ul', { class: 'policies' }, model.promotionPolicies.map((p) => h('li', { 'data-alias': p.alias },
            h('strong', {}, p.alias), h('span', { class: 'muted' }, ` since ${when(p.updatedAt)}`), ' ',
            h('button', { type: 'button', onclick: () => policies.edit(p) }, 'Edit'), ' ',
            actionButton('Remove', async () => { await gql(POLICY, { m: name, a: p.alias, rules: [] }); await load(); }, errorSlot),
            h('ul', { class: 'rules' }, p.rules.map((r) => h('li', {}, h('code', {}, r)))))))
        : h('p', { class: 'muted' }, 'No alias is guarded: any version may be promoted.'),
      policies);
    fill(historyBox, h('h2', {}, 'Alias history'),
      model.aliasHistory.length
        ? h('ul', { class: 'history' }, model.aliasHistory.map((m) => h('li', {},
            `${when(m.at)} · ${m.alias}: ${m.fromVersion ? `v${m.fromVersion}` : '–'} → ${m.toVersion ? `v${m.toVersion}` : '–'} by ${m.by}`,
            m.rollback ? ' (roll back)' : '', m.forced ? ` (forced past ${m.overriddenRules.join(', ')})` : '',
            m.reason ? h('span', { class: 'muted' }, ` — ${m.reason}`) : null)))
        : h('p', { class: 'muted' }, 'Nothing moved yet.'));
  }

  // Try it: one text per line, against a version or an alias.
  // A tabular model takes rows of numbers: one row per line, its values separated by commas.
  const tabular = () => Boolean(model && model.versions.length && model.versions[model.versions.length - 1].job?.task === 'TABULAR_CLASSIFICATION');
  const inputs = h('textarea', { id: 'try-inputs', rows: 3, 'aria-label': 'inputs to classify, one per line', placeholder: 'One text per line' });
  const target = h('input', { id: 'try-target', type: 'text', placeholder: 'latest, v2 or an alias', 'aria-label': 'version or alias', size: 16 });
  const answers = h('div', { class: 'answers', 'aria-live': 'polite' });
  fill(tryBox, h('h2', {}, 'Try it'),
    h('form', { onsubmit: async (e) => {
      e.preventDefault();
      const texts = inputs.value.split('\n').map((t) => t.trim()).filter(Boolean);
      if (!texts.length) return;
      const asked = tabular()
        ? { i: null, rows: texts.map((line) => line.split(/[,;\s]+/).filter(Boolean).map(Number)) }
        : { i: texts, rows: null };
      const which = target.value.trim();
      const version = /^v?\d+$/.test(which) ? Number(which.replace('v', '')) : null;
      const alias = which && version === null && which !== 'latest' ? which : null;
      fill(answers, h('p', { class: 'muted' }, 'Asking…'));
      try {
        const { predict } = await gql(PREDICT, { m: name, v: version, a: alias, ...asked });
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

  fill(main, h('p', {}, h('a', { href: '#/models' }, '← Models')), h('h1', {}, name), errorSlot, tryBox, versionsBox, aliasesBox, policyBox, historyBox);
  load();
  return () => {};
}

export function render(main, params, name) {
  return name ? modelPage(main, name) : listPage(main);
}
