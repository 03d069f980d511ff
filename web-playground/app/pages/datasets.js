// Datasets: the list (rows, labels, and what is wrong with an INVALID one) and an upload with a progress
// bar (the GraphQL multipart request, sent with XMLHttpRequest for its progress events).

import { gql, token, ApiError } from '../api.js';
import { badge, bytes, errorBox, fill, h, pager, percent, progressBar, showError, when } from '../ui.js';

const PAGE = 20;
const LIST = `query($first: Int, $after: String) { datasets(first: $first, after: $after) {
  totalCount pageInfo { hasNextPage endCursor }
  nodes { id name format kind status rowCount sizeBytes textField labelField features
          labels { label count } errors { line message } errorCount createdAt } } }`;
const UPLOAD = `mutation($file: Upload!, $name: String!, $textField: String, $labelField: String) {
  uploadDataset(file: $file, name: $name, textField: $textField, labelField: $labelField) {
    id name status rowCount errorCount errors { line message } } }`;

/// Sends the multipart request; `onProgress(fraction)` as the file goes out.
function upload(file, variables, onProgress) {
  return new Promise((resolve, reject) => {
    const form = new FormData();
    form.append('operations', JSON.stringify({ query: UPLOAD, variables: { ...variables, file: null } }));
    form.append('map', JSON.stringify({ 0: ['variables.file'] }));
    form.append('0', file, file.name);
    const request = new XMLHttpRequest();
    request.open('POST', '/graphql');
    request.setRequestHeader('Authorization', `Bearer ${token.get()}`);
    request.upload.addEventListener('progress', (e) => {
      if (e.lengthComputable) onProgress(e.loaded / e.total);
    });
    request.addEventListener('load', () => {
      let body;
      try {
        body = JSON.parse(request.responseText);
      } catch {
        reject(new ApiError(`kiln answered HTTP ${request.status} without a GraphQL answer`, 'HTTP'));
        return;
      }
      if (body.errors && body.errors.length) {
        const e = body.errors[0];
        reject(new ApiError(e.message, (e.extensions || {}).code, (e.extensions || {}).field));
      } else {
        resolve(body.data.uploadDataset);
      }
    });
    request.addEventListener('error', () => reject(new ApiError('the upload could not reach kiln', 'NETWORK')));
    request.send(form);
  });
}

function problems(dataset) {
  if (!dataset.errors.length) return null;
  return h('details', { class: 'problems' },
    h('summary', {}, `${dataset.errorCount} problem${dataset.errorCount === 1 ? '' : 's'}${dataset.errorCount > dataset.errors.length ? ` (the first ${dataset.errors.length})` : ''}`),
    h('ul', {}, dataset.errors.map((e) => h('li', {}, e.line ? `line ${e.line}: ` : '', e.message))));
}

export function render(main) {
  const cursors = [null];
  const errorSlot = h('div', { class: 'error-slot' });
  const list = h('div');

  // The upload form.
  const fileInput = h('input', { id: 'dataset-file', type: 'file', accept: '.jsonl,.csv,.json', required: true });
  const nameInput = h('input', { id: 'dataset-name', type: 'text', required: true, maxlength: 200 });
  const textField = h('input', { id: 'dataset-text-field', type: 'text', placeholder: 'text' });
  const labelField = h('input', { id: 'dataset-label-field', type: 'text', placeholder: 'label' });
  const bar = h('div', { class: 'upload-progress', hidden: true });
  const result = h('div', { class: 'upload-result', 'aria-live': 'polite' });
  const submit = h('button', { type: 'submit', class: 'primary' }, 'Upload');
  fileInput.addEventListener('change', () => {
    if (fileInput.files[0] && !nameInput.value) nameInput.value = fileInput.files[0].name.replace(/\.[^.]+$/, '');
  });
  const form = h('form', { class: 'card upload', onsubmit: async (e) => {
    e.preventDefault();
    const file = fileInput.files[0];
    if (!file) return;
    submit.disabled = true;
    bar.hidden = false;
    fill(result);
    const show = (fraction) => fill(bar, progressBar(fraction, 'upload progress'), h('span', { class: 'muted' }, `${percent(fraction)} of ${bytes(file.size)}`));
    show(0);
    try {
      const dataset = await upload(file, {
        name: nameInput.value.trim(),
        textField: textField.value.trim() || null,
        labelField: labelField.value.trim() || null,
      }, show);
      show(1);
      fill(result, h('p', {}, `${dataset.name}: `, badge(dataset.status), ` ${dataset.rowCount} rows`), problems(dataset));
      form.reset();
      load();
    } catch (error) {
      fill(result, errorBox(error));
    } finally {
      submit.disabled = false;
    }
  } },
    h('h2', {}, 'Upload a dataset'),
    h('p', { class: 'muted' }, 'JSONL or CSV: a text and a label field for text classification, or numeric columns and a label for tabular data.'),
    h('div', { class: 'fields' },
      h('label', {}, 'File', fileInput),
      h('label', {}, 'Name', nameInput),
      h('label', {}, 'Text field', textField),
      h('label', {}, 'Label field', labelField)),
    submit, bar, result);

  async function load() {
    showError(errorSlot, null);
    let data;
    try {
      data = await gql(LIST, { first: PAGE, after: cursors[cursors.length - 1] });
    } catch (e) {
      fill(list, errorBox(e));
      return;
    }
    const { nodes, totalCount, pageInfo } = data.datasets;
    fill(list,
      nodes.length
        ? h('div', { class: 'table-wrap' }, h('table', { class: 'datasets' },
            h('thead', {}, h('tr', {}, ['Dataset', 'Status', 'Kind', 'Rows', 'Size', 'Labels', 'Uploaded'].map((t) => h('th', { scope: 'col' }, t)))),
            h('tbody', {}, nodes.map((d) => h('tr', { 'data-dataset': d.id },
              h('td', {}, d.name, problems(d)),
              h('td', {}, badge(d.status)),
              h('td', {}, d.kind ? d.kind.toLowerCase() : '–'),
              h('td', { class: 'num' }, d.rowCount),
              h('td', { class: 'num' }, bytes(d.sizeBytes)),
              h('td', { class: 'labels' }, d.labels.slice(0, 6).map((l) => `${l.label} ${l.count}`).join(' · '), d.labels.length > 6 ? ` · ${d.labels.length - 6} more` : ''),
              h('td', {}, when(d.createdAt)))))))
        : h('p', { class: 'empty' }, 'No datasets yet: upload one above.'),
      pager('dataset', totalCount, PAGE, cursors, pageInfo, load));
  }

  fill(main, h('h1', {}, 'Datasets'), form, errorSlot, list);
  load();
  return () => {};
}
