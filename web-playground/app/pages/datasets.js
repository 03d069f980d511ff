// Datasets: the list (rows, labels, and what is wrong with an INVALID one) and a resumable upload with
// a progress bar: the tus protocol at /uploads, with the vendored tus-js-client. The client remembers
// each unfinished upload in localStorage, so after the tab was closed (or the network dropped) choosing
// the same file again goes on from the bytes kiln already has; the page lists those uploads.

import { download, gql, subscribe, token, ApiError } from '../api.js';
import { actionButton, badge, bytes, errorBox, fill, h, pager, percent, progressBar, showError, when } from '../ui.js';

const PAGE = 20;
const LIST = `query($first: Int, $after: String) { datasets(first: $first, after: $after) {
  totalCount pageInfo { hasNextPage endCursor }
  nodes { id name format kind status lifecycle downloadUrl rowCount sizeBytes textField labelField features
          labels { label count } errors { line message } errorCount createdAt } } }`;
const ARCHIVE = 'mutation($id: ID!) { archiveDataset(id: $id) { id lifecycle } }';
const RESTORE = 'mutation($id: ID!) { restoreDataset(id: $id) { id lifecycle } }';
const DELETE = 'mutation($id: ID!) { deleteDataset(id: $id) }';
const UPLOAD_STATE = 'query($id: ID!) { upload(id: $id) { id offset length status createdAt expiresAt } }';
const UPLOAD_EVENTS = `subscription($id: ID!) { uploadEvents(id: $id) { offset length status error
  dataset { id name status rowCount errorCount errors { line message } } } }`;
/// Bytes per request: kiln keeps what arrived of a cut-off request too, so this only bounds what a
/// proxy in front of kiln must let through.
const CHUNK_BYTES = 8 * 1024 * 1024;

/// The vendored tus-js-client (`window.tus`), loaded the first time this page needs it.
let tusLoaded = null;
function tusClient() {
  if (!tusLoaded) {
    tusLoaded = new Promise((resolve, reject) => {
      const script = h('script', { src: '/playground/vendor/tus.min.js' });
      script.addEventListener('load', () => resolve(window.tus));
      script.addEventListener('error', () => reject(new ApiError('the upload client could not be loaded', 'NETWORK')));
      document.head.append(script);
    });
  }
  return tusLoaded;
}

/// A tus-js-client error as the page shows errors: kiln's own message when it answered one.
function tusError(error) {
  const response = error && error.originalResponse;
  const said = response && response.getBody && response.getBody();
  if (said) return new ApiError(said.trim(), `HTTP ${response.getStatus()}`);
  return new ApiError(`the upload could not reach kiln${error && error.message ? `: ${error.message}` : ''}`, 'NETWORK');
}

/// The upload's id: the last segment of its URL.
const uploadId = (url) => url.split('/').pop();

/// Waits for kiln to check the uploaded file: the upload's last event (DONE with its dataset, or FAILED).
function checked(id) {
  return new Promise((resolve, reject) => {
    const stop = subscribe(UPLOAD_EVENTS, { id }, (data) => {
      const event = data.uploadEvents;
      if (event.status === 'DONE' || event.status === 'FAILED' || event.status === 'EXPIRED') {
        stop();
        if (event.status === 'DONE') resolve(event.dataset);
        else reject(new ApiError(event.error || 'the upload expired before it was finished', event.status));
      }
    }, (e) => reject(e));
  });
}

/// Sends `file` over tus, going on from an earlier unfinished upload of the same file; `onProgress(sent,
/// total, resumedFrom)` as bytes are acknowledged. Resolves with the dataset once kiln has checked it.
async function upload(file, fields, onProgress) {
  const tus = await tusClient();
  const metadata = { name: fields.name, filename: file.name };
  if (fields.textField) metadata.textField = fields.textField;
  if (fields.labelField) metadata.labelField = fields.labelField;
  let resumedFrom = 0;
  const url = await new Promise((resolve, reject) => {
    const transfer = new tus.Upload(file, {
      endpoint: '/uploads',
      headers: { Authorization: `Bearer ${token.get()}` },
      chunkSize: CHUNK_BYTES,
      retryDelays: [0, 1000, 3000, 5000],
      removeFingerprintOnSuccess: true,
      metadata,
      onProgress: (sent, total) => onProgress(sent, total, resumedFrom),
      onChunkComplete: (_chunk, accepted, total) => onProgress(accepted, total, resumedFrom),
      onError: (error) => reject(tusError(error)),
      onSuccess: () => resolve(transfer.url),
    });
    transfer.findPreviousUploads().then(async (previous) => {
      const earlier = previous.find((p) => p.metadata && p.metadata.name === fields.name) || previous[0];
      if (earlier) {
        try {
          const { upload: state } = await gql(UPLOAD_STATE, { id: uploadId(earlier.uploadUrl) });
          if (state && state.status === 'RECEIVING') {
            resumedFrom = state.offset;
            transfer.resumeFromPreviousUpload(earlier);
          }
        } catch {
          // Not resumable: a new upload starts.
        }
      }
      onProgress(resumedFrom, file.size, resumedFrom);
      transfer.start();
    }, () => transfer.start());
  });
  return checked(uploadId(url));
}

/// The unfinished uploads this browser remembers, with how far kiln has them (those kiln no longer
/// takes bytes for are forgotten).
async function unfinished() {
  const tus = await tusClient();
  const storage = tus.defaultOptions.urlStorage;
  const remembered = storage && storage.findAllUploads ? await storage.findAllUploads() : [];
  const out = [];
  for (const entry of remembered) {
    let state = null;
    try {
      state = (await gql(UPLOAD_STATE, { id: uploadId(entry.uploadUrl) })).upload;
    } catch {
      continue;
    }
    if (state && state.status === 'RECEIVING') out.push({ entry, state });
    else await storage.removeUpload(entry.urlStorageKey);
  }
  return { out, storage, tus };
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
  const fileInput = h('input', { id: 'dataset-file', type: 'file', accept: '.jsonl,.ndjson,.json,.csv,.tsv,.parquet,.pq', required: true });
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
    const show = (sent, total, resumedFrom) => fill(bar,
      progressBar(sent / total, 'upload progress'),
      h('span', { class: 'muted' }, `${percent(sent / total)} of ${bytes(total)}`,
        resumedFrom > 0 ? ` · went on from ${percent(resumedFrom / total)} stored before` : ''));
    try {
      const dataset = await upload(file, {
        name: nameInput.value.trim(),
        textField: textField.value.trim() || null,
        labelField: labelField.value.trim() || null,
      }, (sent, total, resumedFrom) => {
        show(sent, total, resumedFrom);
        if (sent === total) fill(result, h('p', { class: 'muted' }, 'Stored; checking the file…'));
      });
      fill(result, h('p', {}, `${dataset.name}: `, badge(dataset.status), ` ${dataset.rowCount} rows`), problems(dataset));
      form.reset();
      load();
    } catch (error) {
      fill(result, errorBox(error));
    } finally {
      submit.disabled = false;
      showUnfinished();
    }
  } },
    h('h2', {}, 'Upload a dataset'),
    h('p', { class: 'muted' }, 'JSONL, CSV (any of , ; | or tab, with or without a header row) or Parquet: a text and a label field for text classification, or numeric columns and a label for tabular data. An interrupted upload goes on where it stopped when you choose the same file again, also after closing this tab.'),
    h('div', { class: 'fields' },
      h('label', {}, 'File', fileInput),
      h('label', {}, 'Name', nameInput),
      h('label', {}, 'Text field', textField),
      h('label', {}, 'Label field', labelField)),
    submit, bar, result);

  // Uploads this browser started and did not finish.
  const pending = h('div', { class: 'unfinished' });
  async function showUnfinished() {
    let found;
    try {
      found = await unfinished();
    } catch (e) {
      fill(pending, errorBox(e));
      return;
    }
    const { out, storage, tus } = found;
    fill(pending, out.length ? h('div', { class: 'card' },
      h('h2', {}, 'Unfinished uploads'),
      h('p', { class: 'muted' }, 'Choose the same file above and upload it to go on from what kiln has stored.'),
      h('ul', { class: 'unfinished-list' }, out.map(({ entry, state }) => h('li', { 'data-upload': state.id },
        h('span', { class: 'what' },
          h('strong', {}, (entry.metadata && (entry.metadata.filename || entry.metadata.name)) || state.id),
          h('span', { class: 'muted' }, ` ${percent(state.offset / state.length)} of ${bytes(state.length)} stored · started ${when(state.createdAt)} · kept until ${when(state.expiresAt)}`)),
        progressBar(state.offset / state.length, `${(entry.metadata && entry.metadata.filename) || 'upload'} stored`),
        h('button', { type: 'button', 'aria-label': `Discard ${(entry.metadata && entry.metadata.filename) || 'the upload'}`, onclick: async () => {
          try {
            await tus.Upload.terminate(entry.uploadUrl, { headers: { Authorization: `Bearer ${token.get()}` } });
          } catch {
            // Already gone on the server: forgetting it is all that is left.
          }
          await storage.removeUpload(entry.urlStorageKey);
          showUnfinished();
        } }, 'Discard'))))) : null);
  }

  /// A dataset's buttons: download, archive or restore, delete (after a confirmation); kiln's refusal
  /// (a job or a model version still needs it) shows above the list.
  function actions(d) {
    const withLabel = (verb, action) => {
      const b = actionButton(verb, action, errorSlot);
      b.setAttribute('aria-label', `${verb} ${d.name}`);
      return b;
    };
    const fileName = `${d.name}.${d.format.toLowerCase()}`;
    return [
      withLabel('Download', () => download(d.downloadUrl, fileName)),
      d.lifecycle === 'ARCHIVED'
        ? withLabel('Restore', async () => { await gql(RESTORE, { id: d.id }); await load(); })
        : withLabel('Archive', async () => { await gql(ARCHIVE, { id: d.id }); await load(); }),
      withLabel('Delete', async () => {
        if (!window.confirm(`Delete dataset ${d.name} and its file? This cannot be undone.`)) return;
        await gql(DELETE, { id: d.id });
        await load();
      }),
    ];
  }

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
            h('thead', {}, h('tr', {}, ['Dataset', 'Status', 'Kind', 'Rows', 'Size', 'Labels', 'Uploaded', 'Actions'].map((t) => h('th', { scope: 'col' }, t)))),
            h('tbody', {}, nodes.map((d) => h('tr', { 'data-dataset': d.id },
              h('td', {}, h('a', { href: `#/datasets/${d.id}` }, d.name), problems(d)),
              h('td', {}, badge(d.status), ' ', badge(d.lifecycle)),
              h('td', {}, d.kind ? d.kind.toLowerCase() : '–'),
              h('td', { class: 'num' }, d.rowCount),
              h('td', { class: 'num' }, bytes(d.sizeBytes)),
              h('td', { class: 'labels' }, d.labels.slice(0, 6).map((l) => `${l.label} ${l.count}`).join(' · '), d.labels.length > 6 ? ` · ${d.labels.length - 6} more` : ''),
              h('td', {}, when(d.createdAt)),
              h('td', { class: 'actions' }, h('div', { class: 'row-actions' }, actions(d))))))))
        : h('p', { class: 'empty' }, 'No datasets yet: upload one above.'),
      pager('dataset', totalCount, PAGE, cursors, pageInfo, load));
  }

  fill(main, h('h1', {}, 'Datasets'), form, pending, errorSlot, list);
  load();
  showUnfinished();
  return () => {};
}
