// The official `openai` npm client against squeezeserve's OpenAI-compatible endpoints (a real server
// on loopback): models, completions and chat completions, streamed (SSE) and not, usage, stop,
// max_tokens, temperature / top_p / seed, logprobs, a stored context through the context_id extension,
// and errors in OpenAI's shape with their HTTP codes.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import OpenAI from 'openai';

import { MODEL, TOKEN, startServer } from './server.mjs';

let server;
let client;

before(async () => {
  server = await startServer();
  client = new OpenAI({ baseURL: server.openai, apiKey: TOKEN, maxRetries: 0 });
});

after(async () => {
  assert.equal(await server.stop(), 0, 'the server drains and exits 0 on SIGTERM');
});

const greedy = { model: MODEL, temperature: 0, max_tokens: 8 };

test('models lists the served model', async () => {
  const models = await client.models.list();
  assert.deepEqual(models.data.map((m) => m.id), [MODEL]);
});

test('completions: greedy text, usage and length finish', async () => {
  const a = await client.completions.create({ ...greedy, prompt: 'The license grants' });
  assert.equal(a.object, 'text_completion');
  assert.equal(typeof a.choices[0].text, 'string');
  assert.ok(a.choices[0].text.length > 0);
  assert.equal(a.usage.completion_tokens, 8);
  assert.equal(a.choices[0].finish_reason, 'length');
  assert.ok(a.usage.prompt_tokens >= 3);
  assert.equal(a.usage.total_tokens, a.usage.prompt_tokens + a.usage.completion_tokens);
  const b = await client.completions.create({ ...greedy, prompt: 'The license grants' });
  assert.equal(b.choices[0].text, a.choices[0].text, 'greedy is deterministic');
});

test('completions: streaming gives the same text, then usage, then [DONE]', async () => {
  const whole = await client.completions.create({ ...greedy, prompt: 'Licensor means' });
  const stream = await client.completions.create({
    ...greedy, prompt: 'Licensor means', stream: true, stream_options: { include_usage: true } });
  let text = '';
  let finish = null;
  let usage = null;
  for await (const chunk of stream) {
    if (chunk.choices.length > 0) {
      text += chunk.choices[0].text;
      finish = chunk.choices[0].finish_reason ?? finish;
    }
    if (chunk.usage) usage = chunk.usage;
  }
  assert.equal(text, whole.choices[0].text);
  assert.equal(finish, 'length');
  assert.equal(usage.completion_tokens, 8);
});

test('completions: stop strings cut the text and finish with stop', async () => {
  const free = await client.completions.create({ ...greedy, max_tokens: 16, prompt: 'The Work' });
  const text = free.choices[0].text;
  const stop = text.trim().slice(2, 4);
  assert.ok(stop.length === 2, `usable stop string from ${JSON.stringify(text)}`);
  const cut = await client.completions.create({ ...greedy, max_tokens: 16, prompt: 'The Work', stop: [stop] });
  assert.equal(cut.choices[0].text, text.slice(0, text.indexOf(stop)));
  assert.equal(cut.choices[0].finish_reason, 'stop');
});

test('completions: logprobs, one per token', async () => {
  const r = await client.completions.create({ ...greedy, prompt: 'Copyright', logprobs: 1 });
  const lp = r.choices[0].logprobs;
  assert.equal(lp.tokens.length, r.usage.completion_tokens);
  assert.equal(lp.token_logprobs.length, r.usage.completion_tokens);
  for (const x of lp.token_logprobs) assert.ok(x <= 0 && Number.isFinite(x));
  assert.equal(lp.tokens.join(''), r.choices[0].text);
});

test('sampling: a seed repeats, temperature and top_p are accepted', async () => {
  const args = { model: MODEL, prompt: 'You may', max_tokens: 12, temperature: 1.0, top_p: 0.9, seed: 7 };
  const a = await client.completions.create(args);
  const b = await client.completions.create(args);
  assert.equal(a.choices[0].text, b.choices[0].text);
});

test('chat: the chat template, streamed and not, with logprobs', async () => {
  const messages = [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'What is a license?' }];
  const whole = await client.chat.completions.create({ ...greedy, messages, logprobs: true });
  assert.equal(whole.object, 'chat.completion');
  assert.equal(whole.choices[0].message.role, 'assistant');
  assert.equal(whole.choices[0].logprobs.content.length, whole.usage.completion_tokens);
  const stream = await client.chat.completions.create({
    ...greedy, messages, stream: true, stream_options: { include_usage: true } });
  let text = '';
  let role = null;
  let usage = null;
  for await (const chunk of stream) {
    if (chunk.choices.length > 0) {
      role = chunk.choices[0].delta.role ?? role;
      text += chunk.choices[0].delta.content ?? '';
    }
    if (chunk.usage) usage = chunk.usage;
  }
  assert.equal(role, 'assistant');
  assert.equal(text, whole.choices[0].message.content);
  assert.equal(usage.prompt_tokens, whole.usage.prompt_tokens);
});

test('chat: a conversation the template refuses is a 400 with its message', async () => {
  await assert.rejects(
    client.chat.completions.create({
      ...greedy, messages: [{ role: 'user', content: 'a' }, { role: 'user', content: 'b' }] }),
    (error) => error instanceof OpenAI.BadRequestError && /roles must alternate/.test(error.message));
});

test('errors: OpenAI shapes and HTTP codes', async () => {
  await assert.rejects(client.completions.create({ ...greedy, prompt: 'x', temperature: 3 }),
    (e) => e instanceof OpenAI.BadRequestError && e.status === 400 && e.error.param === 'temperature');
  await assert.rejects(client.completions.create({ ...greedy, prompt: 'x', n: 2 }),
    (e) => e.status === 400 && e.error.param === 'n');
  await assert.rejects(client.completions.create({ ...greedy, model: 'gpt-4', prompt: 'x' }),
    (e) => e instanceof OpenAI.NotFoundError && e.status === 404);
  await assert.rejects(client.completions.create({ ...greedy, prompt: 'x', context_id: 'no-such-context' }),
    (e) => e.status === 404 && /no-such-context/.test(e.message));
  const stranger = new OpenAI({ baseURL: server.openai, apiKey: 'wrong', maxRetries: 0 });
  await assert.rejects(stranger.models.list(), (e) => e instanceof OpenAI.AuthenticationError && e.status === 401);
  const raw = await fetch(`${server.openai}/completions`, {
    method: 'POST', headers: { Authorization: `Bearer ${TOKEN}`, 'Content-Type': 'application/json' }, body: '{' });
  assert.equal(raw.status, 400);
  const body = await raw.json();
  assert.equal(body.error.type, 'invalid_request_error');
});

test('tokenize and detokenize over HTTP', async () => {
  const headers = { Authorization: `Bearer ${TOKEN}`, 'Content-Type': 'application/json' };
  const tok = await (await fetch(`${server.openai}/tokenize`, {
    method: 'POST', headers, body: JSON.stringify({ prompt: 'Hello world', add_special_tokens: false }) })).json();
  assert.equal(tok.count, tok.tokens.length);
  const detok = await (await fetch(`${server.openai}/detokenize`, {
    method: 'POST', headers, body: JSON.stringify({ tokens: tok.tokens }) })).json();
  assert.equal(detok.prompt, 'Hello world');
});

// The value of the Prometheus sample `name{labels}` whose labels include every one given (in any
// order, beside others such as `model`), 0 when absent: metric('x{a="1"}').
async function metric(selector) {
  const [, name, wanted] = selector.match(/^([^{]+)\{(.*)\}$/);
  const text = await (await fetch(server.metrics)).text();
  for (const line of text.split('\n')) {
    const sample = line.match(/^([^{ ]+)\{(.*)\} (\S+)$/);
    if (!sample || sample[1] !== name) continue;
    const labels = new Set(sample[2].split(','));
    if (wanted.split(',').every((label) => labels.has(label))) return Number(sample[3]);
  }
  return 0;
}

test('a client that goes away mid-stream is cancelled, counted in the same metrics', async () => {
  const cancelled = 'squeezeserve_request_success_total{finished_reason="cancelled"}';
  const before = await metric(cancelled);
  for (let i = 0; i < 3; ++i) {
    const stream = await client.completions.create({
      model: MODEL, prompt: 'The license', max_tokens: 4000, ignore_eos: true, temperature: 0, stream: true });
    for await (const chunk of stream) {
      if (chunk.choices.length > 0 && chunk.choices[0].text) break;  // leaving the loop aborts the request
    }
  }
  let now = before;
  for (let i = 0; i < 100 && now < before + 3; ++i) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    now = await metric(cancelled);
  }
  assert.equal(now, before + 3, 'each abandoned generation stops as cancelled, not after its 4000 tokens');
  const after = await client.completions.create({ ...greedy, prompt: 'Hello' });
  assert.equal(after.usage.completion_tokens, 8);
  assert.ok(await metric('squeezeserve_requests_total{method="OpenAI.Completions",code="OK"}') >= 1);
});
