// keygate's own limits, as the official `openai` npm package sees them.
//
// Each test makes its own person and grant through the admin API (the suites never share a
// limiter state), then uses the SDK exactly as an app would. keygate refuses before the
// upstream is called, in OpenAI's error shape: RateLimitError for the 429s,
// AuthenticationError for an expired key, PermissionDeniedError for a model with no price
// under a USD budget. `Retry-After` / `retry-after-ms` drive the SDK's own retry;
// `x-should-retry: false` stops it.
//
// Run through tests/sdk/run.sh (exports KG_BASE_URL, KG_PUBLIC_URL, KG_MOCK_URL,
// KG_ADMIN_KEY, KG_OPENAI_KEY, KG_CONTROL_URL).
import { test, before as setup } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import OpenAI from 'openai';

const MODEL = 'gpt-4o-mini';
const TIMEOUT_MS = 30_000;
const NAMES = ['KG_BASE_URL', 'KG_PUBLIC_URL', 'KG_MOCK_URL', 'KG_ADMIN_KEY', 'KG_OPENAI_KEY', 'KG_CONTROL_URL'];
const env = {};

setup(() => {
  const missing = NAMES.filter((n) => !process.env[n]);
  if (missing.length > 0) {
    throw new Error(`missing ${missing.join(', ')}: run these tests through tests/sdk/run.sh`);
  }
  env.baseURL = process.env.KG_BASE_URL;
  env.publicURL = process.env.KG_PUBLIC_URL.replace(/\/+$/, '');
  env.mockURL = process.env.KG_MOCK_URL.replace(/\/+$/, '');
  env.controlURL = process.env.KG_CONTROL_URL.replace(/\/+$/, '');
});

async function admin(method, path, body) {
  const res = await fetch(env.publicURL + path, {
    method,
    headers: {
      authorization: `Bearer ${process.env.KG_ADMIN_KEY}`,
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  assert.ok(res.ok, `admin ${method} ${path}: ${res.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

// A new person with the mock's OpenAI key and a grant made from `fields`; its apiKey.
async function grant(fields) {
  const user = await admin('POST', '/admin/users', { name: `sdk-limits-${randomBytes(4).toString('hex')}` });
  await admin('PUT', `/admin/users/${user.id}/openai-key`, { api_key: process.env.KG_OPENAI_KEY });
  const made = await admin('POST', `/admin/users/${user.id}/grants`, { name: 'sdk limits test', ...fields });
  assert.ok(made.grant.limits);
  return made.api_key;
}

// A client that counts its HTTP attempts (first try and retries).
function client(apiKey, opts = {}) {
  const sent = [];
  const countingFetch = (url, init) => {
    sent.push(new Headers(init?.headers).get('x-stainless-retry-count'));
    return fetch(url, init);
  };
  const c = new OpenAI({ apiKey, baseURL: env.baseURL, maxRetries: 0, timeout: TIMEOUT_MS, fetch: countingFetch, ...opts });
  return { c, sent };
}

const mockRequests = async () => Number((await (await fetch(`${env.mockURL}/__mock/stats`)).json()).requests);
const user = (content = 'Say hello') => [{ role: 'user', content }];

async function expectError(cls, fn) {
  let caught;
  try {
    await fn();
  } catch (err) {
    caught = err;
  }
  assert.ok(caught, `expected ${cls.name}, but the call succeeded`);
  assert.ok(caught instanceof cls, `expected ${cls.name}, got ${caught?.constructor?.name}: ${caught?.message}`);
  return caught;
}

test('rpm: RateLimitError rate_limit_exceeded, and the SDK waits Retry-After before retrying', async () => {
  // 30 a minute refills one request every 2 s: longer than the SDK's own first backoff.
  const key = await grant({ limits: { rpm: 30 } });
  const { c } = client(key);
  for (let i = 0; i < 30; i += 1) {
    await c.chat.completions.create({ model: MODEL, messages: user(), max_tokens: 5 });
  }
  const before = await mockRequests();
  const err = await expectError(OpenAI.RateLimitError, () =>
    c.chat.completions.create({ model: MODEL, messages: user(), max_tokens: 5 }),
  );
  assert.equal(err.status, 429);
  assert.equal(err.code, 'rate_limit_exceeded');
  const retryAfter = Number(err.headers.get('retry-after'));
  const retryAfterMs = Number(err.headers.get('retry-after-ms'));
  assert.ok(retryAfter >= 1 && retryAfter <= 2, `retry-after ${retryAfter}`);
  assert.ok(retryAfterMs >= 1000 && retryAfterMs <= 2000, `retry-after-ms ${retryAfterMs}`);
  assert.equal(err.headers.get('x-ratelimit-limit-requests'), '30');
  assert.equal(await mockRequests(), before, 'a refused request must not reach the upstream');

  const { c: retrying, sent } = client(key, { maxRetries: 2 });
  const started = performance.now();
  const done = await retrying.chat.completions.create({ model: MODEL, messages: user(), max_tokens: 5 });
  const waited = performance.now() - started;
  assert.ok(done.choices[0].message.content);
  assert.deepEqual(sent, ['0', '1']);
  assert.ok(waited >= 1000, `the SDK retried after ${waited} ms, before keygate's Retry-After`);
});

test('tpm: RateLimitError naming tokens per minute', async () => {
  const key = await grant({ limits: { tpm: 200 } });
  const { c } = client(key);
  // The first answer really uses ~160 tokens (the mock writes 150); the second reserves its
  // prompt plus max_tokens (150), which no longer fits the minute.
  await c.chat.completions.create(
    { model: MODEL, messages: user(), max_tokens: 150 },
    { headers: { 'x-mock-completion-tokens': '150' } },
  );
  const err = await expectError(OpenAI.RateLimitError, () =>
    c.chat.completions.create({ model: MODEL, messages: user(), max_tokens: 150 }),
  );
  assert.equal(err.code, 'rate_limit_exceeded');
  assert.match(err.message, /tokens per minute/);
  assert.equal(err.headers.get('x-ratelimit-limit-tokens'), '200');
});

test('budget spent: RateLimitError insufficient_quota, never retried', async () => {
  const key = await grant({ limits: { budget: { usd: 0.000001, period: 'day' } } });
  const { c, sent } = client(key, { maxRetries: 2 });
  const before = await mockRequests();
  const err = await expectError(OpenAI.RateLimitError, () =>
    c.chat.completions.create({ model: MODEL, messages: user(), max_tokens: 5 }),
  );
  assert.equal(err.code, 'insufficient_quota');
  assert.equal(err.headers.get('x-should-retry'), 'false');
  assert.equal(sent.length, 1, 'x-should-retry: false must stop the SDK retrying');
  assert.equal(await mockRequests(), before);
});

test('concurrency cap: RateLimitError concurrency_limit_exceeded with Retry-After: 1', async () => {
  const key = await grant({ limits: { max_concurrency: 1 } });
  const { c } = client(key);
  const stream = await c.chat.completions.create(
    { model: MODEL, messages: user(), stream: true },
    { headers: { 'x-mock-scenario': 'long-stream', 'x-mock-delay-ms': '100' } },
  );
  const it = stream[Symbol.asyncIterator]();
  assert.ok((await it.next()).value.choices);
  try {
    const err = await expectError(OpenAI.RateLimitError, () =>
      c.chat.completions.create({ model: MODEL, messages: user() }),
    );
    assert.equal(err.code, 'concurrency_limit_exceeded');
    assert.equal(err.headers.get('retry-after'), '1');
  } finally {
    stream.controller.abort();
  }
  // The slot comes back when keygate sees the stream end; the SDK's retry (Retry-After: 1)
  // gets through.
  const { c: retrying } = client(key, { maxRetries: 5 });
  const done = await retrying.chat.completions.create({ model: MODEL, messages: user() });
  assert.ok(done.choices[0].message.content);
});

test('expired key: AuthenticationError expired_api_key', async () => {
  const expires = new Date(Date.now() + 3600_000).toISOString().replace(/\.\d+Z$/, 'Z');
  const key = await grant({ expires_at: expires });
  const { c } = client(key);
  await c.chat.completions.create({ model: MODEL, messages: user() });
  assert.equal((await fetch(`${env.controlURL}/advance?secs=7200`, { method: 'POST' })).status, 204);
  try {
    const err = await expectError(OpenAI.AuthenticationError, () =>
      c.chat.completions.create({ model: MODEL, messages: user() }),
    );
    assert.equal(err.status, 401);
    assert.equal(err.code, 'expired_api_key');
  } finally {
    assert.equal((await fetch(`${env.controlURL}/reset`, { method: 'POST' })).status, 204);
  }
});

test('a model with no price under a USD budget: PermissionDeniedError model_not_priced', async () => {
  const key = await grant({ limits: { budget: { usd: 5, period: 'month' } } });
  const { c } = client(key);
  const before = await mockRequests();
  const err = await expectError(OpenAI.PermissionDeniedError, () =>
    c.chat.completions.create({ model: 'my-own-finetune-nobody-priced', messages: user() }),
  );
  assert.equal(err.code, 'model_not_priced');
  assert.match(err.message, /my-own-finetune-nobody-priced/);
  assert.equal(await mockRequests(), before);
  await c.chat.completions.create({ model: MODEL, messages: user(), max_tokens: 5 });
});

test('a stream is counted without the app asking for usage, and the app sees no usage chunk', async () => {
  const key = await grant({ limits: { budget: { tokens: 100000, period: 'month' } } });
  const { c } = client(key);
  const stream = await c.chat.completions.create({ model: MODEL, messages: user(), stream: true });
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  assert.ok(chunks.length > 0);
  for (const chunk of chunks) {
    assert.ok(chunk.usage === undefined || chunk.usage === null, 'a usage field reached the app');
    assert.ok(!('usage' in chunk), 'the injected "usage": null reached the app');
    assert.ok(chunk.choices.length > 0, 'the injected usage-only chunk reached the app');
  }
  let body;
  const deadline = Date.now() + 10_000;
  do {
    const res = await fetch(`${env.baseURL}/key`, { headers: { authorization: `Bearer ${key}` } });
    assert.equal(res.status, 200);
    body = await res.json();
    if (body.usage.requests === 1) break;
    await new Promise((r) => setTimeout(r, 50));
  } while (Date.now() < deadline);
  assert.equal(body.usage.requests, 1);
  assert.ok(body.usage.tokens > 0);
  assert.equal(body.remaining.tokens, 100000 - body.usage.tokens);
});
