// Starts the real squeezeserve for a Node test: a tiny reference checkpoint with a tokenizer.json and
// a chat template (models/tokenizer, converted from its sentencepiece model), gRPC and the OpenAI
// endpoints on free loopback ports, and a bearer token.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';

export const TOKEN = 'node-test-token';
export const MODEL = 'tiny-llama';

export function sourceDir() {
  return process.env.SQUEEZESERVE_SOURCE_DIR;
}

function modelDir() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'squeezeserve-node-'));
  const reference = path.join(sourceDir(), 'models', 'reference', 'llama-gqa-llama3rope-tied');
  for (const file of ['config.json', 'model.safetensors']) fs.symlinkSync(path.join(reference, file), path.join(dir, file));
  for (const file of ['tokenizer.json', 'tokenizer_config.json']) {
    fs.copyFileSync(path.join(sourceDir(), 'models', 'tokenizer', file), path.join(dir, file));
  }
  fs.writeFileSync(path.join(dir, 'tokens.txt'), `${TOKEN}\n`);
  return dir;
}

// Resolves to { grpc: 'HOST:PORT', openai: 'http://HOST:PORT/v1', metrics: URL, stop() } once the model has loaded.
export async function startServer() {
  const dir = modelDir();
  const child = spawn(process.env.SQUEEZESERVE_BIN, [
    '--model', dir, '--listen', '127.0.0.1:0', '--openai_listen', '127.0.0.1:0', '--served_model_name', MODEL,
    '--threads', '1', '--log_level', 'warn', '--auth_token_file', path.join(dir, 'tokens.txt'),
    '--max_concurrent_streams', '4', '--metrics_listen', '127.0.0.1:0'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const lines = readline.createInterface({ input: child.stdout });
  const addresses = {};
  for await (const line of lines) {
    if (line.startsWith('squeezeserve openai on ')) addresses.openai = line.slice('squeezeserve openai on '.length);
    if (line.startsWith('squeezeserve metrics on ')) addresses.metrics = line.slice('squeezeserve metrics on '.length);
    if (line.startsWith('squeezeserve listening on ')) {
      addresses.grpc = line.slice('squeezeserve listening on '.length);
      break;
    }
  }
  if (!addresses.grpc || !addresses.openai) throw new Error('the server did not print its addresses');
  const base = `http://${addresses.openai}`;
  for (let i = 0; i < 600; ++i) {  // the model loads after the ports open
    const health = await fetch(`${base}/health`).catch(() => null);
    if (health && health.status === 200) break;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  const exited = new Promise((resolve) => child.on('exit', (code) => resolve(code)));
  return {
    grpc: addresses.grpc,
    openai: `${base}/v1`,
    base,
    metrics: `http://${addresses.metrics}/metrics`,
    async stop() {
      child.kill('SIGTERM');
      const code = await exited;
      fs.rmSync(dir, { recursive: true, force: true });
      return code;
    },
  };
}
