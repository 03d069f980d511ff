// GraphiQL on kiln: queries and mutations over HTTP, subscriptions over WebSocket (graphql-transport-ws,
// with the `graphql-ws` client), both with the API token from the page's field or from GraphiQL's
// Headers tab (which wins). The schema is fetched again whenever the token changes, and nothing is
// fetched until there is one: the landing notice says where the token comes from.
//
// React, ReactDOM, GraphiQL and graphqlWs are the vendored UMD builds the page loads before this module.

const { React, ReactDOM, GraphiQL, graphqlWs } = window;

const tokenInput = document.getElementById('token');
const notice = document.getElementById('notice');
const wsUrl = location.origin.replace(/^http/, 'ws') + '/graphql';

const DEFAULT_QUERY = `# Welcome to kiln's GraphQL API.
#
# Queries and mutations run over HTTP, subscriptions over a WebSocket; both use the API token
# above. Try the jobs listing below, then follow a job live:
#
#   subscription { jobEvents(jobId: "JOB_ID") { __typename
#     ... on EpochCompleted { epoch accuracy f1 }
#     ... on JobStatusChanged { status error } } }
#
# The Docs pane (the book icon on the left) lists every query, mutation and subscription.

query Jobs {
  jobs(first: 10) {
    nodes { id name status progress { percent } }
  }
}
`;

const token = () => tokenInput.value.trim();

function showNotice(text, kind) {
  notice.textContent = text;
  notice.dataset.kind = kind;
  notice.hidden = !text;
}

function landingNotice() {
  if (token()) {
    showNotice('', 'info');
  } else {
    showNotice(
      'Paste an API token above to start (or set an Authorization header in the Headers tab). The ' +
        'first `kiln serve` printed one (export KILN_TOKEN=…); an admin makes more with createApiToken.',
      'info',
    );
  }
}

/// The headers a request carries: the token from the field, then GraphiQL's Headers tab on top.
function headersFor(opts) {
  const headers = {};
  if (token()) headers.Authorization = 'Bearer ' + token();
  return { ...headers, ...((opts && opts.headers) || {}) };
}

/// The operations a document defines, from its text (strings and comments dropped): their kind and
/// name.
function operationsIn(query) {
  const text = query
    .replace(/"""[\s\S]*?"""/g, '""')
    .replace(/"(?:[^"\\\n]|\\.)*"/g, '""')
    .replace(/#[^\n]*/g, '');
  const operations = [];
  let depth = 0;
  for (const m of text.matchAll(/[{}]|\b(query|mutation|subscription)\b\s*([_A-Za-z][_0-9A-Za-z]*)?/g)) {
    if (m[0] === '{') depth += 1;
    else if (m[0] === '}') depth = Math.max(0, depth - 1);
    else if (depth === 0) operations.push({ kind: m[1], name: m[2] });
  }
  return operations;
}

/// GraphiQL names the operation to run from the editor a moment after an edit: a document pasted and
/// run at once can arrive with the previous document's operation name. A name the document does not
/// define is dropped when the document holds one operation.
function withOperationName(params) {
  if (!params.operationName) return params;
  const operations = operationsIn(params.query);
  const named = operations.some((o) => o.name === params.operationName);
  return named || operations.length > 1 ? params : { ...params, operationName: undefined };
}

/// Whether the operation to run is a subscription, from the text GraphiQL sends (its parsed document
/// can lag behind the editor like the operation name): a subscription must never go over HTTP.
function isSubscription(params) {
  const operations = operationsIn(params.query);
  const chosen = params.operationName
    ? operations.find((o) => o.name === params.operationName)
    : operations[0];
  return Boolean(chosen) && chosen.kind === 'subscription';
}

/// Why a WebSocket closed, as a GraphQL error for the results pane.
function closedResult(event) {
  let message;
  if (event && typeof event.code === 'number') {
    message = `The WebSocket closed (${event.code}): ${event.reason || 'no reason given'}`;
  } else if (event instanceof Error) {
    message = `The WebSocket failed: ${event.message}`;
  } else {
    message = 'The WebSocket failed (the server could not be reached)';
  }
  const extensions = { code: 'WEBSOCKET_CLOSED' };
  if (event && typeof event.code === 'number') extensions.closeCode = event.code;
  return { errors: [{ message, extensions }] };
}

/// A subscription over its own WebSocket, as an async iterable of results; the socket closes when it
/// ends or GraphiQL stops it.
function subscribe(params, headers) {
  const client = graphqlWs.createClient({
    url: wsUrl,
    lazy: true,
    retryAttempts: 0,
    connectionParams: headers,
  });
  const results = client.iterate({
    query: params.query,
    variables: params.variables,
    operationName: params.operationName,
  });
  let closed = false;
  return {
    [Symbol.asyncIterator]() {
      return {
        async next() {
          if (closed) return { done: true, value: undefined };
          try {
            const step = await results.next();
            if (step.done) client.dispose();
            return step;
          } catch (event) {
            // The reason is the last result shown; the subscription ends after it.
            closed = true;
            client.dispose();
            return { done: false, value: closedResult(event) };
          }
        },
        async return() {
          await results.return();
          client.dispose();
          return { done: true, value: undefined };
        },
      };
    },
  };
}

/// A fetcher for the current token: a new one makes GraphiQL fetch the schema again.
function makeFetcher() {
  const http = GraphiQL.createFetcher({
    url: '/graphql',
    fetch: (url, init) => fetch(url, init),
  });
  return async (graphiqlParams, opts) => {
    const params = withOperationName(graphiqlParams);
    const headers = headersFor(opts);
    if (isSubscription(params)) return subscribe(params, headers);
    // Without GraphiQL's parsed document (which can lag behind the editor), the HTTP fetcher never
    // takes an operation for a subscription.
    const result = await http(params, { ...opts, headers, documentAST: undefined });
    if (params.operationName === 'IntrospectionQuery') {
      const refused = result && result.errors && result.errors[0];
      if (refused) {
        showNotice(
          `kiln refused this token: ${refused.message}. Paste a token printed by kiln serve or made ` +
            'with createApiToken.',
          'error',
        );
      } else {
        landingNotice();
      }
    }
    return result;
  };
}

const root = ReactDOM.createRoot(document.getElementById('graphiql'));

function render() {
  const props = {
    fetcher: makeFetcher(),
    defaultQuery: DEFAULT_QUERY,
    defaultEditorToolsVisibility: false,
  };
  // Without a token there is no schema to fetch yet: GraphiQL waits instead of showing an error.
  if (!token()) props.schema = null;
  root.render(React.createElement(GraphiQL, props));
  landingNotice();
}

tokenInput.value = localStorage.getItem('kiln-token') || '';
let pending;
tokenInput.addEventListener('input', () => {
  localStorage.setItem('kiln-token', token());
  clearTimeout(pending);
  pending = setTimeout(render, 300);
});
render();
