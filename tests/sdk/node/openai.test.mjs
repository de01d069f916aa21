// The official `openai` npm package, unchanged, pointed at keygate.
//
// Run through tests/sdk/run.sh, which starts keygate-testenv (keygate in front of a mock
// OpenAI upstream) and exports KG_BASE_URL, KG_MOCK_URL, KG_KEY_ALL, KG_KEY_RESTRICTED,
// KG_KEY_REVOKED, KG_KEY_NOT_ENROLLED and KG_MAX_BODY_BYTES.
import { test, before as setup } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import OpenAI from 'openai';

const MODEL = 'gpt-4o-mini';
const REPLY_TEXT = 'Hello from the mock!';
const REPLY_PIECES = ['Hello', ' from', ' the', ' mock', '!'];
const TIMEOUT_MS = 30_000;

const NAMES = [
  'KG_BASE_URL',
  'KG_MOCK_URL',
  'KG_KEY_ALL',
  'KG_KEY_RESTRICTED',
  'KG_KEY_REVOKED',
  'KG_KEY_NOT_ENROLLED',
  'KG_MAX_BODY_BYTES',
];
const env = {};

setup(() => {
  const missing = NAMES.filter((n) => !process.env[n]);
  if (missing.length > 0) {
    throw new Error(`missing ${missing.join(', ')}: run these tests through tests/sdk/run.sh`);
  }
  env.baseURL = process.env.KG_BASE_URL;
  env.mockURL = process.env.KG_MOCK_URL.replace(/\/+$/, '');
  env.keyAll = process.env.KG_KEY_ALL;
  env.keyRestricted = process.env.KG_KEY_RESTRICTED;
  env.keyRevoked = process.env.KG_KEY_REVOKED;
  env.keyNotEnrolled = process.env.KG_KEY_NOT_ENROLLED;
  env.maxBodyBytes = Number(process.env.KG_MAX_BODY_BYTES);
});

// No retries unless a test says otherwise: every test sees exactly what keygate answered, once.
function client(apiKey = env.keyAll, opts = {}) {
  return new OpenAI({ apiKey, baseURL: env.baseURL, maxRetries: 0, timeout: TIMEOUT_MS, ...opts });
}

const user = (content = 'Say hello') => [{ role: 'user', content }];
const randomKey = (prefix, bytes) => prefix + randomBytes(bytes).toString('base64url');

// --- the mock's control API (talks to the mock directly, never through keygate) ----------

async function mockGet(op) {
  const res = await fetch(`${env.mockURL}/__mock/${op}`);
  assert.equal(res.status, 200, `mock control API /__mock/${op}`);
  return res.json();
}
const mockRequests = async () => Number((await mockGet('stats')).requests);
async function lastUpstreamRequest() {
  const recorded = await mockGet('requests');
  assert.ok(recorded.length > 0, 'the mock upstream recorded no request');
  return recorded[recorded.length - 1];
}
function headerValues(recorded, name) {
  const headers = recorded.headers ?? {};
  const items = Array.isArray(headers) ? headers : Object.entries(headers);
  const out = [];
  for (const item of items) {
    const [k, v] = Array.isArray(item) ? item : [item.name, item.value];
    if (String(k).toLowerCase() === name.toLowerCase()) out.push(...(Array.isArray(v) ? v : [v]));
  }
  return out;
}
const recordedJson = (recorded) =>
  typeof recorded.body === 'string' ? JSON.parse(recorded.body) : recorded.body;

// Runs fn, expects it to reject with an instance of cls, returns the error.
async function expectError(cls, fn) {
  let caught;
  try {
    await fn();
  } catch (err) {
    caught = err;
  }
  assert.ok(caught, `expected ${cls.name}, but the call succeeded`);
  assert.ok(
    caught instanceof cls,
    `expected ${cls.name}, got ${caught?.constructor?.name}: ${caught?.message}`,
  );
  return caught;
}

// Collects the content deltas of a chat stream with their arrival times (ms, monotonic).
async function collectDeltas(stream) {
  const chunks = [];
  const arrivals = [];
  for await (const chunk of stream) {
    chunks.push(chunk);
    for (const choice of chunk.choices) {
      if (choice.delta?.content) arrivals.push([performance.now(), choice.delta.content]);
    }
  }
  return { chunks, arrivals };
}

// --- happy paths ------------------------------------------------------------------------

test('chat completion', async () => {
  const { data: completion, response, request_id } = await client()
    .chat.completions.create({ model: MODEL, messages: user() })
    .withResponse();
  assert.equal(response.status, 200);
  assert.ok(request_id, 'keygate must always send x-request-id');
  assert.equal(completion.object, 'chat.completion');
  assert.equal(completion.choices[0].message.role, 'assistant');
  assert.equal(completion.choices[0].message.content, REPLY_TEXT);
  assert.equal(completion.choices[0].finish_reason, 'stop');
  assert.equal(completion.usage.completion_tokens, REPLY_PIECES.length);
  assert.ok(completion.usage.prompt_tokens > 0);
  assert.equal(
    completion.usage.total_tokens,
    completion.usage.prompt_tokens + completion.usage.completion_tokens,
  );
});

test('restricted key may use its allowed model', async () => {
  const completion = await client(env.keyRestricted).chat.completions.create({
    model: MODEL,
    messages: user(),
  });
  assert.equal(completion.choices[0].message.content, REPLY_TEXT);
});

test('upstream gets the real key, not the grant', async () => {
  await client().chat.completions.create(
    { model: MODEL, messages: user() },
    { headers: { Cookie: 'session=app-secret' } },
  );
  const recorded = await lastUpstreamRequest();
  assert.match(recorded.path, /\/chat\/completions$/);
  const auth = headerValues(recorded, 'authorization');
  assert.equal(auth.length, 1);
  assert.match(auth[0], /^Bearer /);
  assert.ok(!auth[0].includes('kg_'), 'the grant key must never reach the upstream');
  assert.ok(!JSON.stringify(recorded).includes(env.keyAll), 'the grant key must never reach the upstream');
  assert.deepEqual(headerValues(recorded, 'cookie'), [], 'cookies must never reach the upstream');
  assert.equal(recordedJson(recorded).model, MODEL);
});

test('chat stream arrives incrementally', async () => {
  const stream = await client().chat.completions.create(
    { model: MODEL, messages: user(), stream: true },
    { headers: { 'x-mock-delay-ms': '200' } },
  );
  const { chunks, arrivals } = await collectDeltas(stream);
  assert.deepEqual(
    arrivals.map(([, t]) => t),
    REPLY_PIECES,
  );
  const spreadMs = arrivals[arrivals.length - 1][0] - arrivals[0][0];
  // The mock waits 200 ms between events: ~800 ms between the first and the last delta when
  // nothing buffers them. A proxy that buffers the stream delivers them all at once.
  assert.ok(spreadMs >= 400, `deltas arrived together (${spreadMs.toFixed(0)} ms apart): buffered`);
  // The app did not ask for usage: keygate may ask the upstream for it, but must strip it.
  assert.ok(
    chunks.every((c) => c.usage == null),
    'usage chunk leaked to an app that did not ask for it',
  );
  assert.ok(
    chunks.every((c) => c.choices.length > 0),
    'a choices-less (usage) chunk leaked to the app',
  );
  assert.equal(chunks[chunks.length - 1].choices[0].finish_reason, 'stop');
});

test('chat stream with include_usage yields the usage chunk last', async () => {
  const stream = await client().chat.completions.create({
    model: MODEL,
    messages: user(),
    stream: true,
    stream_options: { include_usage: true },
  });
  const { chunks, arrivals } = await collectDeltas(stream);
  assert.equal(arrivals.map(([, t]) => t).join(''), REPLY_TEXT);
  const withUsage = chunks.filter((c) => c.usage != null);
  assert.equal(withUsage.length, 1, 'expected exactly one usage chunk');
  const last = chunks[chunks.length - 1];
  assert.equal(withUsage[0], last, 'the usage chunk must be the last one');
  assert.deepEqual(last.choices, []);
  assert.equal(last.usage.completion_tokens, REPLY_PIECES.length);
  assert.ok(last.usage.prompt_tokens > 0);
});

test('embeddings (SDK default: base64 on the wire, floats to the app)', async () => {
  const result = await client().embeddings.create({
    model: 'text-embedding-3-small',
    input: ['hello', 'world'],
  });
  const sent = recordedJson(await lastUpstreamRequest());
  assert.equal(sent.encoding_format, 'base64');
  assert.equal(result.data.length, 2);
  assert.deepEqual(
    result.data.map((d) => d.index),
    [0, 1],
  );
  for (const d of result.data) {
    assert.ok(Array.isArray(d.embedding));
    assert.equal(d.embedding.length, 1536);
    assert.ok(d.embedding.every((x) => typeof x === 'number' && Number.isFinite(x)));
  }
  assert.notDeepEqual(result.data[0].embedding, result.data[1].embedding);
  assert.ok(result.usage.prompt_tokens > 0);
});

test('embeddings with dimensions, base64 and float agree', async () => {
  const c = client();
  const b64 = await c.embeddings.create({ model: 'text-embedding-3-small', input: 'hello', dimensions: 64 });
  const floats = await c.embeddings.create({
    model: 'text-embedding-3-small',
    input: 'hello',
    dimensions: 64,
    encoding_format: 'float',
  });
  assert.equal(b64.data[0].embedding.length, 64);
  assert.equal(floats.data[0].embedding.length, 64);
  b64.data[0].embedding.forEach((x, i) => {
    assert.ok(Math.abs(x - floats.data[0].embedding[i]) < 1e-6, `component ${i} differs`);
  });
});

test('models list and retrieve', async () => {
  const ids = [];
  for await (const model of client().models.list()) ids.push(model.id);
  assert.ok(ids.includes('gpt-4o-mini'), `models: ${ids.join(', ')}`);
  assert.ok(ids.includes('text-embedding-3-small'), `models: ${ids.join(', ')}`);
  const model = await client().models.retrieve('gpt-4o-mini');
  assert.equal(model.id, 'gpt-4o-mini');
  assert.equal(model.object, 'model');
});

test('responses.create', async () => {
  const response = await client().responses.create({ model: MODEL, input: 'Say hello' });
  assert.equal(response.object, 'response');
  assert.equal(response.status, 'completed');
  assert.equal(response.output_text, REPLY_TEXT);
  assert.equal(response.usage.output_tokens, REPLY_PIECES.length);
});

test('responses stream', async () => {
  const stream = await client().responses.create({ model: MODEL, input: 'Say hello', stream: true });
  const events = [];
  for await (const event of stream) events.push(event);
  assert.equal(events[0].type, 'response.created');
  assert.equal(events[events.length - 1].type, 'response.completed');
  const text = events
    .filter((e) => e.type === 'response.output_text.delta')
    .map((e) => e.delta)
    .join('');
  assert.equal(text, REPLY_TEXT);
  assert.ok(events[events.length - 1].response.usage);
});

// --- errors: the SDK must throw the error class an app would catch ------------------------

const BAD_KEYS = {
  'kg- garbage': () => randomKey('kg_', 32),
  'sk- random': () => 'sk-' + randomBytes(24).toString('hex'),
  'sk-proj- random': () => randomKey('sk-proj-', 48),
  'free text': () => 'not a key at all',
};
for (const [name, makeKey] of Object.entries(BAD_KEYS)) {
  test(`bad key (${name}) is AuthenticationError invalid_api_key`, async () => {
    const before = await mockRequests();
    const err = await expectError(OpenAI.AuthenticationError, () =>
      client(makeKey()).chat.completions.create({ model: MODEL, messages: user() }),
    );
    assert.equal(err.status, 401);
    assert.equal(err.code, 'invalid_api_key');
    assert.ok(err.requestID, 'keygate must always send x-request-id');
    assert.equal(await mockRequests(), before, 'the upstream must not be called for a bad key');
  });
}

test('bad key on a stream throws before iteration', async () => {
  const err = await expectError(OpenAI.AuthenticationError, () =>
    client(randomKey('kg_', 32)).chat.completions.create({ model: MODEL, messages: user(), stream: true }),
  );
  assert.equal(err.code, 'invalid_api_key');
});

test('revoked key is AuthenticationError revoked_api_key', async () => {
  const before = await mockRequests();
  const err = await expectError(OpenAI.AuthenticationError, () =>
    client(env.keyRevoked).chat.completions.create({ model: MODEL, messages: user() }),
  );
  assert.equal(err.status, 401);
  assert.equal(err.code, 'revoked_api_key');
  assert.equal(await mockRequests(), before);
});

test('model not allowed is PermissionDeniedError', async () => {
  const before = await mockRequests();
  const err = await expectError(OpenAI.PermissionDeniedError, () =>
    client(env.keyRestricted).chat.completions.create({ model: 'gpt-4o', messages: user() }),
  );
  assert.equal(err.status, 403);
  assert.equal(err.code, 'model_not_allowed');
  assert.ok(err.error?.message);
  assert.equal(await mockRequests(), before, 'the upstream must not be called for a forbidden model');
});

test('request too large is APIError 413', async () => {
  const before = await mockRequests();
  const huge = 'x'.repeat(env.maxBodyBytes + 64 * 1024);
  const err = await expectError(OpenAI.APIError, () =>
    client().chat.completions.create({ model: MODEL, messages: user(huge) }),
  );
  assert.equal(err.status, 413);
  assert.equal(err.code, 'request_too_large');
  assert.equal(await mockRequests(), before, 'the upstream must not be called for an oversized body');
});

test('upstream 429 is RateLimitError', async () => {
  const before = await mockRequests();
  const err = await expectError(OpenAI.RateLimitError, () =>
    client().chat.completions.create(
      { model: MODEL, messages: user() },
      { headers: { 'x-mock-scenario': 'error-429' } },
    ),
  );
  assert.equal(err.status, 429);
  assert.ok(err.error?.message);
  assert.equal(await mockRequests(), before + 1);
});

test('upstream 500 is InternalServerError', async () => {
  const err = await expectError(OpenAI.InternalServerError, () =>
    client().chat.completions.create(
      { model: MODEL, messages: user() },
      { headers: { 'x-mock-scenario': 'error-500' } },
    ),
  );
  assert.equal(err.status, 500);
});

test('upstream 400 is BadRequestError', async () => {
  const err = await expectError(OpenAI.BadRequestError, () =>
    client().chat.completions.create(
      { model: MODEL, messages: user() },
      { headers: { 'x-mock-scenario': 'error-400' } },
    ),
  );
  assert.equal(err.status, 400);
});

test('not enrolled is ConflictError key_not_enrolled, not retried', async () => {
  const before = await mockRequests();
  let calls = 0;
  const countingFetch = (...args) => {
    calls += 1;
    return fetch(...args);
  };
  // Default retries (2): x-should-retry: false must stop the SDK from retrying.
  const c = new OpenAI({
    apiKey: env.keyNotEnrolled,
    baseURL: env.baseURL,
    timeout: TIMEOUT_MS,
    fetch: countingFetch,
  });
  const err = await expectError(OpenAI.ConflictError, () =>
    c.chat.completions.create({ model: MODEL, messages: user() }),
  );
  assert.equal(err.status, 409);
  assert.equal(err.code, 'key_not_enrolled');
  assert.equal(err.headers.get('x-should-retry'), 'false');
  assert.equal(calls, 1, 'the SDK retried a request keygate said not to retry');
  assert.equal(await mockRequests(), before);
});

test('set-cookie from the upstream never reaches the app', async () => {
  const { response } = await client()
    .chat.completions.create(
      { model: MODEL, messages: user() },
      { headers: { 'x-mock-scenario': 'set-cookie' } },
    )
    .withResponse();
  assert.equal(response.status, 200);
  assert.equal(response.headers.get('set-cookie'), null);
});

test('reset mid-stream makes iteration throw', async () => {
  const stream = await client().chat.completions.create(
    { model: MODEL, messages: user(), stream: true },
    { headers: { 'x-mock-scenario': 'reset-mid-stream' } },
  );
  const received = [];
  let finished = false;
  let caught;
  try {
    for await (const chunk of stream) {
      for (const choice of chunk.choices) if (choice.delta?.content) received.push(choice.delta.content);
    }
    finished = true;
  } catch (err) {
    caught = err;
  }
  // A proxy that ended the stream cleanly (or with a fake [DONE]) would let the loop finish.
  assert.ok(!finished, `stream ended cleanly after ${JSON.stringify(received.join(''))}`);
  // keygate ends a broken upstream stream abnormally: an SSE `error` event (the SDK throws
  // it as OpenAI.APIError) and/or a truncated chunked body (undici: TypeError('terminated')).
  assert.ok(
    caught instanceof OpenAI.APIError || caught instanceof TypeError,
    `expected OpenAI.APIError or a fetch TypeError, got ${caught?.constructor?.name}: ${caught?.message}`,
  );
  if (caught instanceof OpenAI.APIError && !(caught instanceof OpenAI.APIConnectionError)) {
    assert.equal(caught.code, 'upstream_unavailable');
  }
  assert.notEqual(received.join(''), REPLY_TEXT);
});
