// The one way pages talk to kiln: `gql` for queries and mutations over HTTP, `subscribe` for
// subscriptions over one graphql-ws WebSocket (the vendored graphql-ws UMD build, `window.graphqlWs`).
// Both send the token kept in the browser's storage; errors arrive as ApiError with kiln's code and field.

const TOKEN_KEY = 'kiln.token';

export const token = {
  get: () => localStorage.getItem(TOKEN_KEY) || '',
  set: (value) => localStorage.setItem(TOKEN_KEY, value),
  clear: () => localStorage.removeItem(TOKEN_KEY),
};

export class ApiError extends Error {
  constructor(message, code = '', field = '', extensions = {}) {
    super(message);
    this.code = code;
    this.field = field;
    this.extensions = extensions;
  }
}

function fromGraphql(error) {
  const extensions = error.extensions || {};
  return new ApiError(error.message, extensions.code || '', extensions.field || '', extensions);
}

export async function gql(query, variables = {}) {
  let response;
  try {
    response = await fetch('/graphql', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${token.get()}` },
      body: JSON.stringify({ query, variables }),
    });
  } catch (e) {
    throw new ApiError(`kiln cannot be reached (${e.message})`, 'NETWORK');
  }
  let body;
  try {
    body = await response.json();
  } catch {
    throw new ApiError(`kiln answered HTTP ${response.status} without a GraphQL answer`, 'HTTP');
  }
  if (body.errors && body.errors.length) throw fromGraphql(body.errors[0]);
  return body.data;
}

let client = null;

function wsClient() {
  if (!client) {
    const url = new URL('/graphql', location.href);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    client = window.graphqlWs.createClient({
      url: url.href,
      lazy: true,
      connectionParams: () => ({ Authorization: `Bearer ${token.get()}` }),
      retryAttempts: 5,
      shouldRetry: (event) => !(event && event.code >= 4400 && event.code < 4500),
    });
  }
  return client;
}

/// Subscribes; `onData` gets each event's `data`, `onError` an ApiError. Returns the function that stops it.
export function subscribe(query, variables, onData, onError) {
  return wsClient().subscribe(
    { query, variables },
    {
      next: (result) => {
        if (result.errors && result.errors.length) onError(fromGraphql(result.errors[0]));
        else onData(result.data);
      },
      error: (e) => {
        if (Array.isArray(e) && e.length) onError(fromGraphql(e[0]));
        else if (e && typeof e.code === 'number') onError(new ApiError(`the live connection closed (${e.code} ${e.reason || ''})`.trim(), 'CLOSED'));
        else onError(new ApiError(`the live connection failed${e && e.message ? `: ${e.message}` : ''}`, 'CLOSED'));
      },
      complete: () => {},
    },
  );
}

/// Drops the WebSocket (after the token changes).
export function resetConnection() {
  if (client) client.dispose();
  client = null;
}

/// Downloads `path` with the token (a plain link cannot send it) and hands the file to the browser.
export async function download(path, fileName) {
  const response = await fetch(path, { headers: { Authorization: `Bearer ${token.get()}` } });
  if (!response.ok) throw new ApiError(`the download failed: HTTP ${response.status}`, 'HTTP');
  const url = URL.createObjectURL(await response.blob());
  const link = Object.assign(document.createElement('a'), { href: url, download: fileName });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}
