// What the jobs list and a job's page share: the actions a job's status allows, and its progress.

import { gql } from './api.js';
import { actionButton, h, progressBar } from './ui.js';

export const ACTIVE = ['QUEUED', 'RUNNING', 'PAUSED'];

const ACTIONS = [
  ['Pause', ['QUEUED', 'RUNNING'], 'mutation($id: ID!) { pauseJob(id: $id) { id status } }'],
  ['Resume', ['PAUSED'], 'mutation($id: ID!) { resumeJob(id: $id) { id status } }'],
  ['Cancel', ['QUEUED', 'RUNNING', 'PAUSED'], 'mutation($id: ID!) { cancelJob(id: $id) { id status } }'],
  ['Retry', ['FAILED', 'CANCELLED'], 'mutation($id: ID!) { retryJob(id: $id) { id status } }'],
];

/// The buttons `status` allows for job `id`; each calls the API, shows its refusal in `errorSlot`,
/// and then calls `changed(job)` with the job's new status.
export function jobActions(id, status, errorSlot, changed) {
  return h(
    'span',
    { class: 'actions' },
    ACTIONS.filter(([, allowed]) => allowed.includes(status)).map(([label, , mutation]) =>
      actionButton(
        label,
        async () => {
          const data = await gql(mutation, { id });
          changed(Object.values(data)[0]);
        },
        errorSlot,
      ),
    ),
  );
}

/// The fraction of a job done, from its progress (steps when known, else epochs).
export function doneFraction(job) {
  if (job.status === 'COMPLETED') return 1;
  const p = job.progress;
  if (!p) return 0;
  if (p.totalSteps) return p.step / p.totalSteps;
  if (p.totalEpochs) return p.epoch / p.totalEpochs;
  return 0;
}

export function jobProgress(job) {
  return progressBar(doneFraction(job), `progress of ${job.name}`);
}
