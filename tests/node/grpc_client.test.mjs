// @grpc/grpc-js as a second-language gRPC client (stubs loaded from proto/ at run time by
// @grpc/proto-loader) against the real squeezeserve: server info, Tokenize / Detokenize, a chat
// rendered by the model's template, a prompt-only Generate, an ingested context continued by a text
// prompt, and the status codes of bad requests.
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, test } from 'node:test';

import grpc from '@grpc/grpc-js';
import protoLoader from '@grpc/proto-loader';

import { TOKEN, sourceDir, startServer } from './server.mjs';

let server;
let stub;
let metadata;

before(async () => {
  server = await startServer();
  const definition = await protoLoader.load('squeezeserve/v1/squeezeserve.proto', {
    includeDirs: [path.join(sourceDir(), 'proto')], keepCase: true, longs: Number, enums: String, defaults: true,
    oneofs: true });
  const { Squeezeserve } = grpc.loadPackageDefinition(definition).squeezeserve.v1;
  stub = new Squeezeserve(server.grpc, grpc.credentials.createInsecure());
  metadata = new grpc.Metadata();
  metadata.set('authorization', `Bearer ${TOKEN}`);
});

after(async () => {
  stub.close();
  assert.equal(await server.stop(), 0);
});

const unary = (method, request, md = metadata) =>
  new Promise((resolve, reject) => stub[method](request, md, (error, response) => (error ? reject(error) : resolve(response))));

function generate(request) {
  return new Promise((resolve, reject) => {
    const messages = [];
    const call = stub.Generate(request, metadata);
    call.on('data', (m) => messages.push(m));
    call.on('error', reject);
    call.on('end', () => resolve(messages));
  });
}

function ingest(first, chunks) {
  return new Promise((resolve, reject) => {
    let last = null;
    const call = stub.IngestContext(metadata);
    call.on('data', (progress) => { last = progress; });
    call.on('error', reject);
    call.on('end', () => resolve(last));
    call.write(first);
    for (const text of chunks) call.write({ text });
    call.end();
  });
}

test('server info names the tokenizer and the chat template', async () => {
  const info = await unary('GetServerInfo', {});
  assert.equal(info.model.tokenizer, 'tokenizer.json');
  assert.equal(info.model.has_chat_template, true);
});

test('Tokenize / Detokenize round trip; messages render with the template', async () => {
  const tok = await unary('Tokenize', { text: 'Hello world', add_special_tokens: true });
  assert.equal(tok.ids[0], 1, 'BOS with add_special_tokens');
  const detok = await unary('Detokenize', { ids: tok.ids, skip_special_tokens: true });
  assert.equal(detok.text, 'Hello world');
  const kept = await unary('Detokenize', { ids: tok.ids, skip_special_tokens: false });
  assert.ok(kept.text.startsWith('<s>'));
  const chat = await unary('Tokenize', { messages: { messages: [{ role: 'user', content: 'Hi there' }] } });
  assert.equal(chat.prompt, '<s>[INST] Hi there [/INST]');
  assert.equal(chat.ids[0], 1);
});

test('prompt-only Generate (no context) with chat messages streams tokens and usage', async () => {
  const messages = await generate({
    messages: { messages: [{ role: 'user', content: 'Tell me about the license.' }] },
    sampling: { max_new_tokens: 6 } });
  const tokens = messages.flatMap((m) => m.token_ids);
  assert.equal(tokens.length, 6);
  const last = messages[messages.length - 1];
  assert.equal(last.finish_reason, 'LENGTH');
  assert.equal(last.usage.completion_tokens, 6);
  assert.equal(last.usage.cached_tokens, 0);
  assert.equal(last.stats.mode, 'DENSE');
});

test('an ingested context continued by a text prompt', async () => {
  const done = await ingest({ context_id: 'node-doc', index: { dense_only: true } },
    ['The Licensor grants you a worldwide, royalty-free license. ', 'Redistribution is permitted.']);
  assert.equal(done.stage, 'done');
  const context = done.context;
  const messages = await generate({ context_id: 'node-doc', text: ' In short,', sampling: { max_new_tokens: 4 } });
  const last = messages[messages.length - 1];
  assert.equal(last.usage.cached_tokens, Number(context.num_tokens));
  assert.equal(messages.flatMap((m) => m.token_ids).length, 4);
});

test('status codes: NOT_FOUND, INVALID_ARGUMENT naming the field, UNAUTHENTICATED', async () => {
  await assert.rejects(generate({ context_id: 'missing', text: 'x' }), (e) => e.code === grpc.status.NOT_FOUND);
  await assert.rejects(generate({ text: 'x', sampling: { top_p: 1.5 } }),
    (e) => e.code === grpc.status.INVALID_ARGUMENT && /top_p/.test(e.details));
  await assert.rejects(unary('Detokenize', { ids: [999999] }),
    (e) => e.code === grpc.status.INVALID_ARGUMENT && /ids/.test(e.details));
  await assert.rejects(unary('GetServerInfo', {}, new grpc.Metadata()), (e) => e.code === grpc.status.UNAUTHENTICATED);
});
