// Uploads a file to kiln's /uploads with tus-js-client, the tus protocol's reference client, as a user's
// script would. Driven by tests/api/tus.rs:
//
//   KILN_URL, KILN_TOKEN   the server and a token
//   FILE                   the file to send
//   NAME, FORMAT           the dataset's name and format (Upload-Metadata)
//   CHUNK_BYTES            bytes per PATCH request
//   UPLOAD_URL             resume this upload instead of creating one
//
// Prints JSON lines: {"created": url}, {"progress": bytesAcknowledged, "total": n} for each finished
// request, then {"done": url}; exits 1 with {"error": message} on failure. (The test interrupts an
// upload by cutting the connection under it.)
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import * as tus from 'tus-js-client';

const say = (value) => process.stdout.write(`${JSON.stringify(value)}\n`);
const env = (name, fallback) => process.env[name] ?? fallback;

const file = readFileSync(env('FILE'));

const upload = new tus.Upload(file, {
  endpoint: `${env('KILN_URL')}/uploads`,
  uploadUrl: process.env.UPLOAD_URL || null,
  headers: { Authorization: `Bearer ${env('KILN_TOKEN')}` },
  chunkSize: Number(env('CHUNK_BYTES', '1048576')),
  retryDelays: [0, 200, 500, 1000],
  metadata: {
    name: env('NAME', 'uploaded with tus'),
    filename: basename(env('FILE')),
    format: env('FORMAT', 'JSONL'),
  },
  onUploadUrlAvailable() {
    say({ created: upload.url });
  },
  onChunkComplete(_chunk, accepted, total) {
    say({ progress: accepted, total });
  },
  onError(error) {
    say({ error: String(error) });
    process.exit(1);
  },
  onSuccess() {
    say({ done: upload.url });
    process.exit(0);
  },
});

upload.start();
