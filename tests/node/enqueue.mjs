// A queue_async producer in Node.js, written from docs/wire-format.md alone: it shares no
// code with the Python package. Run by tests/test_node_producer.py.
//
//   node enqueue.mjs '<request JSON>'
//
// The request: {
//   "url": "redis://127.0.0.1:6379/0", "prefix": "qa", "queue": "default",
//   "jobs": [{"id": "...", "task": "...", "args": [...], "kwargs": {...},
//             "options": {"priority": 3, "delay": 600, "retries": 2,
//                         "headers": {"name": "value"}}}],
//   "raw": "...",        // instead of jobs: send this text as the packed batch, unchecked
//   "enqueue": false,    // only read (and wait for) the jobs named, enqueue nothing
//   "wait": true,        // poll every job until it reaches a final state
//   "timeout_ms": 10000  // how long to wait at most
// }
// Prints one JSON object on stdout: {entry, replies, first, final} where first and final
// are the jobs as read right after the enqueue and at their end (see readJob). A Redis error
// reply to the enqueue call is printed as {entry, error} with exit code 2; anything else that
// goes wrong is a stack trace on stderr and exit code 1.
//
// The only dependency is the npm package "redis" (node-redis), found under $QA_NODE_PREFIX
// (the directory npm installed it into) or next to this file.

import { createRequire } from 'node:module';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

const require = createRequire(
  process.env.QA_NODE_PREFIX
    ? path.join(process.env.QA_NODE_PREFIX, 'package.json')
    : import.meta.url,
);
const { createClient } = require('redis');

// --- The wire format (docs/wire-format.md, "Packed fields") ---------------------------------

// Fields joined as "<length>:<bytes>", the length in bytes, in decimal.
function packFields(fields) {
  const parts = [];
  for (const field of fields) {
    const raw = Buffer.isBuffer(field) ? field : Buffer.from(String(field), 'utf8');
    parts.push(Buffer.from(`${raw.length}:`, 'ascii'), raw);
  }
  return Buffer.concat(parts);
}

function unpackFields(buf) {
  const fields = [];
  let pos = 0;
  while (pos < buf.length) {
    const colon = buf.indexOf(0x3a, pos); // ':'
    if (colon < 0) throw new Error(`malformed packed fields at byte ${pos}`);
    const length = Number(buf.subarray(pos, colon).toString('ascii'));
    const end = colon + 1 + length;
    if (!Number.isInteger(length) || end > buf.length) {
      throw new Error(`malformed packed fields at byte ${pos}`);
    }
    fields.push(buf.subarray(colon + 1, end));
    pos = end;
  }
  return fields;
}

// Option places, 0-based ("Job options").
const OPT = {
  priority: 0, delay: 1, at: 2, retries: 3, timeout: 4, keep: 5, ckey: 6, climit: 7,
  ukey: 8, uwindow: 9, urunning: 10, headers: 11,
};
const OPTIONAL = ['retries', 'timeout', 'keep', 'headers'];
const FINAL = new Set(['done', 'dead', 'cancelled', 'aborted']);

function packHeaders(headers) {
  return packFields(Object.entries(headers).flat());
}

function unpackHeaders(buf) {
  const parts = buf && buf.length ? unpackFields(buf) : [];
  const headers = {};
  for (let i = 0; i + 1 < parts.length; i += 2) {
    headers[parts[i].toString('utf8')] = parts[i + 1].toString('utf8');
  }
  return headers;
}

function packOptions(options = {}) {
  const places = new Array(Object.keys(OPT).length).fill('');
  for (const [name, value] of Object.entries(options)) {
    if (!(name in OPT)) throw new Error(`unknown option ${name}`);
    places[OPT[name]] = name === 'headers' ? packHeaders(value) : String(value);
  }
  while (places.length && places[places.length - 1] === '') places.pop();
  return places.length ? packFields(places) : Buffer.alloc(0);
}

// The default codec: JSON of [args, kwargs].
function packJob(job) {
  const payload = Buffer.from(JSON.stringify([job.args ?? [], job.kwargs ?? {}]), 'utf8');
  return packFields([job.id, packOptions(job.options), job.task, payload]);
}

// --- Keys ("Key layout") -------------------------------------------------------------------

function queueKeys(prefix, queue) {
  const base = `${prefix}:{${queue}}:`;
  const k = (name) => base + name;
  return {
    base,
    entry: k('entry'),
    fresh: k('fresh'),
    job: (id) => k(`job:${id}`),
    // The enqueue call's KEYS, in order.
    enqueue: [k('ready'), k('scheduled'), k('wake'), k('seq'), k('idle'), k('active')],
  };
}

// --- Calling enqueue ("The entry point") ---------------------------------------------------

async function readEntry(client, keys) {
  const entry = await client.get(keys.entry);
  if (entry === null) throw new Error(`${keys.entry} is absent: no worker has started yet`);
  const [how, name] = entry.split(' ');
  if (how !== 'fcall' && how !== 'evalsha') throw new Error(`unknown entry ${entry}`);
  return { how, name, text: entry };
}

async function enqueue(client, keys, batch) {
  let entry = await readEntry(client, keys);
  for (let tries = 1; ; tries++) {
    const command = entry.how === 'fcall' ? 'FCALL' : 'EVALSHA';
    try {
      const replies = await client.sendCommand([
        command, entry.name, String(keys.enqueue.length), ...keys.enqueue, keys.base, batch,
      ]);
      return { entry: entry.text, replies };
    } catch (err) {
      const missing = /function not found|NOSCRIPT/i.test(String(err.message));
      if (!missing || tries >= 20) {
        err.entry = entry.text;
        throw err;
      }
      // A worker loads the scripts again on its next call: look again in a moment.
      await sleep(250);
      entry = await readEntry(client, keys);
    }
  }
}

// --- Reading a job ("Reading a job") -------------------------------------------------------

function fieldsOfRecord(record) {
  const [enqueued, options, task, payload] = unpackFields(record);
  const fields = { state: Buffer.from('ready'), attempts: Buffer.from('0'), task, payload, enqueued };
  const opts = options.length ? unpackFields(options) : [];
  const priority = opts[OPT.priority];
  if (priority && priority.length && priority.toString() !== '0') fields.priority = priority;
  for (const name of OPTIONAL) {
    const value = opts[OPT[name]];
    if (value && value.length) fields[name] = value;
  }
  return fields;
}

// The job as plain values, or null if it does not exist (any more).
async function readJob(client, keys, id) {
  // The fresh record first, then the hash: a fresh job only ever becomes a hash.
  const record = await client.sendCommand(['HGET', keys.fresh, id], { returnBuffers: true });
  const flat = await client.sendCommand(['HGETALL', keys.job(id)], { returnBuffers: true });
  let fields = null;
  let form = null;
  if (flat.length) {
    const hash = {};
    for (let i = 0; i < flat.length; i += 2) hash[flat[i].toString('utf8')] = flat[i + 1];
    if ('state' in hash) {
      fields = hash;
      form = 'hash';
    }
  }
  if (fields === null && record !== null) {
    fields = fieldsOfRecord(record);
    form = 'fresh';
  }
  if (fields === null) return null;
  const text = (name) => (name in fields ? fields[name].toString('utf8') : null);
  const number = (name) => (name in fields ? Number(fields[name].toString()) : null);
  const [args, kwargs] = JSON.parse(text('payload'));
  return {
    id,
    form,
    state: text('state'),
    task: text('task'),
    args,
    kwargs,
    attempts: number('attempts'),
    priority: number('priority') ?? 0,
    retries: number('retries'),
    headers: unpackHeaders(fields.headers),
    enqueued: number('enqueued'),
    due: number('due'),
    started: number('started'),
    finished: number('finished'),
    // A kept result is the codec's bytes: JSON here.
    result: 'result' in fields && fields.result.length ? JSON.parse(text('result')) : null,
    error: text('error'),
  };
}

async function waitFinished(client, keys, id, deadline) {
  let last = null;
  while (Date.now() < deadline) {
    const job = await readJob(client, keys, id);
    if (job === null && last !== null) return { id, state: 'missing' }; // not kept
    if (job !== null && FINAL.has(job.state)) return job;
    last = job;
    await sleep(20);
  }
  throw new Error(`job ${id} did not finish in time; last seen ${JSON.stringify(last)}`);
}

// --- Main ----------------------------------------------------------------------------------

async function main() {
  const request = JSON.parse(process.argv[2]);
  const keys = queueKeys(request.prefix ?? 'qa', request.queue);
  const client = createClient({ url: request.url });
  client.on('error', (err) => console.error('redis client error:', err));
  await client.connect();
  try {
    const jobs = request.jobs ?? [];
    const batch = request.raw !== undefined
      ? Buffer.from(request.raw, 'utf8')
      : Buffer.concat(jobs.map(packJob));
    let sent = { entry: null, replies: null };
    try {
      if (request.enqueue !== false) sent = await enqueue(client, keys, batch);
    } catch (err) {
      if (err.entry === undefined) throw err;
      process.stdout.write(`${JSON.stringify({ entry: err.entry, error: err.message })}\n`);
      process.exitCode = 2;
      return;
    }
    const out = { entry: sent.entry, replies: sent.replies, first: [], final: [] };
    for (const job of jobs) out.first.push(await readJob(client, keys, job.id));
    if (request.wait) {
      const deadline = Date.now() + (request.timeout_ms ?? 10000);
      for (const job of jobs) out.final.push(await waitFinished(client, keys, job.id, deadline));
    }
    process.stdout.write(`${JSON.stringify(out)}\n`);
  } finally {
    await client.quit();
  }
}

await main();
