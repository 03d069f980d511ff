// Submit: a form for submitJob. The options show kiln's defaults and limits; a refused field shows the
// API's message beside it (`extensions.field`), and nothing is queued then.

import { gql } from '../api.js';
import { errorBox, fill, h } from '../ui.js';

const DATASETS = `query($after: String) { datasets(first: 100, after: $after) {
  pageInfo { hasNextPage endCursor } nodes { id name kind status rowCount } } }`;
/// The most datasets offered (the newest); a filter by name appears when there are many.
const MOST_DATASETS = 2000;
const FILTER_FROM = 15;
const SUBMIT = 'mutation($input: SubmitJobInput!) { submitJob(input: $input) { id } }';

/// The resources a job asks for: [path in the input, label, placeholder, hint].
const RESOURCES = [
  ['resources.cpus', 'CPUs', 'no bound', 'cores, fractions allowed; a job process gets this many threads'],
  ['resources.memoryGb', 'Memory (GiB)', 'no bound', "the job's memory limit; refused if training needs more"],
  ['resources.gpus', 'GPUs', '0', 'only a worker with this many GPUs takes the job'],
];

/// Augmentation presets: [label, techniques], each technique applied to half the texts.
const AUGMENTATIONS = {
  none: ['none', []],
  noise: ['attacker noise: leetspeak, homoglyphs, zero-width characters', ['LEETSPEAK', 'HOMOGLYPH', 'ZERO_WIDTH']],
  words: ['word changes: synonyms, insertions, deletions, swaps', ['SYNONYM', 'INSERTION', 'DELETION', 'SWAP']],
  both: ['both', ['SYNONYM', 'INSERTION', 'DELETION', 'SWAP', 'LEETSPEAK', 'HOMOGLYPH', 'ZERO_WIDTH']],
};

/// The options: [path in the input, label, input type, placeholder, hint with the default and limits].
const OPTIONS = [
  ['hyperparameters.epochs', 'Epochs', 'number', '3', 'default 3; 1–1000'],
  ['hyperparameters.batchSize', 'Batch size', 'number', '16', 'default 16; 1–4096'],
  ['hyperparameters.learningRate', 'Learning rate', 'text', '5e-5', 'default 5e-5 fine-tuning, 2e-4 LoRA, 1e-3 otherwise'],
  ['hyperparameters.validationSplit', 'Validation split', 'text', '0.2', 'default 0.2'],
  ['hyperparameters.maxSeqLength', 'Max sequence length', 'number', '128', 'text models; default 128; 8–512'],
  ['hyperparameters.seed', 'Seed', 'number', '42', 'default 42'],
  ['hyperparameters.earlyStoppingPatience', 'Early stopping patience', 'number', 'off', 'epochs without improvement; off by default'],
];

export function render(main, params) {
  // A dataset's page links here with ?dataset=<id>.
  const wanted = params && params.get('dataset');
  const errorSlot = h('div', { class: 'error-slot' });
  const hints = new Map();
  const field = (path, label, input, hint) => {
    const message = h('span', { class: 'field-error', role: 'alert' });
    hints.set(path, message);
    input.dataset.field = path;
    input.id = `field-${path.replace(/\./g, '-')}`;
    return h('label', { for: input.id }, label, input, hint ? h('small', { class: 'muted' }, hint) : null, message);
  };
  const name = h('input', { type: 'text', required: true, maxlength: 200, placeholder: 'injection detector v2' });
  const modelName = h('input', { type: 'text', required: true, maxlength: 64, placeholder: 'pi-detector' });
  const task = h('select', {}, h('option', { value: 'TEXT_CLASSIFICATION' }, 'text classification'), h('option', { value: 'TABULAR_CLASSIFICATION' }, 'tabular classification'));
  const dataset = h('select', { required: true }, h('option', { value: '' }, 'loading…'));
  const baseModel = h('input', { type: 'text', placeholder: 'none: a small BERT from scratch', maxlength: 1024 });
  const pooling = h('select', {}, h('option', { value: '' }, 'MEAN (default)'), h('option', { value: 'CLS' }, 'CLS'));
  const lora = h('input', { type: 'checkbox' });
  const allowPii = h('input', { type: 'checkbox', id: 'allow-pii' });
  const augmentation = h('select', {}, Object.entries(AUGMENTATIONS).map(([value, [label]]) => h('option', { value }, label)));
  const rank = h('input', { type: 'number', placeholder: '8', min: 1, max: 256 });
  // What the job asks of the machine it runs on.
  const resources = RESOURCES.map(([path, label, placeholder, hint]) => [path, h('input', { type: 'number', step: 'any', min: 0, placeholder }), label, hint]);
  const options = OPTIONS.map(([path, label, type, placeholder, hint]) => [path, h('input', { type, step: 'any', placeholder }), label, hint]);

  const datasetFilter = h('input', { type: 'search', id: 'dataset-filter', placeholder: 'part of a name', hidden: true, 'aria-label': 'filter the datasets by name' });
  let datasets = [];
  const fillDatasets = () => {
    const kind = task.value === 'TEXT_CLASSIFICATION' ? 'TEXT' : 'TABULAR';
    const chosen = dataset.value || wanted;
    const ready = datasets.filter((d) => d.status === 'READY' && (!d.kind || d.kind === kind));
    datasetFilter.hidden = ready.length < FILTER_FROM;
    const part = datasetFilter.value.trim().toLowerCase();
    const shown = part ? ready.filter((d) => d.name.toLowerCase().includes(part)) : ready;
    fill(dataset, shown.length
      ? shown.map((d) => h('option', { value: d.id, selected: d.id === chosen }, `${d.name} (${d.rowCount} rows)`))
      : h('option', { value: '' }, ready.length ? 'no ready dataset has that in its name' : 'no ready dataset of this kind: upload one under Datasets'));
  };
  task.addEventListener('change', fillDatasets);
  datasetFilter.addEventListener('input', fillDatasets);

  const form = h('form', { class: 'card submit', novalidate: true, onsubmit: async (e) => {
    e.preventDefault();
    hints.forEach((m) => fill(m));
    fill(errorSlot);
    const hyperparameters = {};
    for (const [path, input] of options) {
      const raw = input.value.trim();
      if (raw === '') continue;
      const value = Number(raw);
      hyperparameters[path.split('.')[1]] = Number.isNaN(value) ? raw : value;
    }
    if (pooling.value) hyperparameters.pooling = pooling.value;
    const techniques = AUGMENTATIONS[augmentation.value][1];
    if (techniques.length) hyperparameters.augmentation = { techniques: techniques.map((technique) => ({ technique, probability: 0.5 })) };
    const input = {
      name: name.value.trim(),
      modelName: modelName.value.trim(),
      task: task.value,
      datasetId: dataset.value,
      hyperparameters,
    };
    if (allowPii.checked) input.allowPii = true;
    if (baseModel.value.trim()) input.baseModel = baseModel.value.trim();
    for (const [path, field] of resources) {
      if (field.value.trim() === '') continue;
      input.resources = input.resources || {};
      input.resources[path.split('.')[1]] = Number(field.value);
    }
    if (lora.checked) {
      input.customization = { method: 'LORA' };
      if (rank.value.trim()) input.customization.rank = Number(rank.value);
    }
    try {
      const { submitJob } = await gql(SUBMIT, { input });
      location.hash = `#/jobs/${submitJob.id}`;
    } catch (error) {
      // `hyperparameters.classWeights.weights[0]` belongs to the closest field the form has.
      const key = [error.field, (error.field || '').split('.').slice(0, 2).join('.')].find((k) => k && hints.has(k));
      if (key) {
        fill(hints.get(key), error.message);
        form.querySelector(`[data-field="${key}"]`).focus();
      } else {
        fill(errorSlot, errorBox(error));
      }
    }
  } },
    h('div', { class: 'form-grid' },
      field('name', 'Job name', name),
      field('modelName', 'Model name', modelName, 'letters, digits, . _ -'),
      field('task', 'Task', task),
      field('datasetId', 'Dataset', dataset, datasetFilter),
      h('label', { class: 'check', for: 'allow-pii' }, allowPii, ' Train even if its texts hold personal data (its page lists what was found)'),
      field('baseModel', 'Base model', baseModel, 'a folder under KILN_MODEL_ROOTS, hf:org/name, or model:name@alias'),
      field('hyperparameters.pooling', 'Pooling', pooling),
      field('hyperparameters.augmentation', 'Augment training texts each epoch', augmentation, 'text models; each technique on half the texts, drawn afresh every epoch from the seed')),
    h('h2', {}, 'Training options'),
    h('div', { class: 'form-grid' },
      options.map(([path, input, label, hint]) => field(path, label, input, hint))),
    h('h2', {}, 'Resources'),
    h('div', { class: 'form-grid' },
      resources.map(([path, input, label, hint]) => field(path, label, input, hint))),
    h('h2', {}, 'LoRA'),
    h('div', { class: 'form-grid' },
      h('label', { class: 'check' }, lora, ' Train LoRA adapters over a frozen base model (needs a base model)'),
      field('customization.rank', 'Rank', rank, 'default 8; 1–256')),
    h('button', { type: 'submit', class: 'primary' }, 'Submit the job'),
    errorSlot);

  fill(main, h('h1', {}, 'Submit a job'), form);
  (async () => {
    try {
      // Page by page, the picker filled after each, up to MOST_DATASETS.
      let after = null;
      do {
        const page = (await gql(DATASETS, { after })).datasets;
        datasets = datasets.concat(page.nodes);
        const asked = datasets.find((d) => d.id === wanted);
        if (asked && asked.kind === 'TABULAR' && !dataset.value) task.value = 'TABULAR_CLASSIFICATION';
        after = page.pageInfo.hasNextPage ? page.pageInfo.endCursor : null;
        fillDatasets();
      } while (after && datasets.length < MOST_DATASETS);
    } catch (error) {
      fill(errorSlot, errorBox(error));
    }
  })();
  return () => {};
}
