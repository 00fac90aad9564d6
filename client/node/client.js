#!/usr/bin/env node
// A small Node.js client for image2sdr.v1.Image2Sdr.
//
// It loads the contract at run time through image2sdr.js (no generated code), then: Encode of the first image, EncodeStream of every image into the index
// (checking that answers come back in request order), FindSimilar by the id
// of the first stored image, and FindDuplicates of the first image's bytes
// (its stored copy, at least).  Results are printed as one JSON document.
//
//   node client.js [options] ADDRESS IMAGE...
'use strict';

const fs = require('node:fs');
const path = require('node:path');
const { parseArgs } = require('node:util');
const grpc = require('@grpc/grpc-js');
const { loadService } = require('./image2sdr');

const USAGE = `usage: node client.js [options] ADDRESS IMAGE...

Encode IMAGE[0], stream every IMAGE into the index (ids PREFIX + file name),
check the answers come back in request order, find the items most similar
to the first one (in --space), and the stored copies of IMAGE[0].  Prints JSON.  Exit codes: 0 ok, 1 server or order error, 2 usage.

options:
  --token TOKEN      bearer token (default: $IMAGE2SDR_TOKEN)
  --tls-ca FILE      PEM CA bundle: connect with TLS
  --timeout S        seconds per call (default 120)
  -k N               matches to ask FindSimilar for (default 10)
  --space S          FindSimilar's space: semantic, visual or blend (default semantic)
  --id-prefix P      prefix of the ids stored in the index (default "node/")
  --remove           remove the stored items again at the end
  -h, --help         this help`;

// --space names -> the proto's Space enum (the loader takes and gives enum names as strings).
const SPACES = { semantic: 'SPACE_SEMANTIC', visual: 'SPACE_VISUAL', blend: 'SPACE_BLEND' };

class UsageError extends Error {}

function parse(argv) {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      token: { type: 'string', default: process.env.IMAGE2SDR_TOKEN || '' },
      'tls-ca': { type: 'string' },
      timeout: { type: 'string', default: '120' },
      k: { type: 'string', short: 'k', default: '10' },
      space: { type: 'string', default: 'semantic' },
      'id-prefix': { type: 'string', default: 'node/' },
      remove: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) return { help: true };
  if (positionals.length < 2) throw new UsageError('need an ADDRESS and at least one IMAGE');
  const timeout = Number(values.timeout);
  const k = Number(values.k);
  if (!(timeout > 0)) throw new UsageError('--timeout must be a positive number of seconds');
  if (!Number.isInteger(k) || k < 1) throw new UsageError('-k must be a positive integer');
  if (!SPACES[values.space]) throw new UsageError(`--space must be one of ${Object.keys(SPACES).join(', ')}`);
  return {
    address: positionals[0],
    images: positionals.slice(1),
    token: values.token,
    tlsCa: values['tls-ca'],
    timeoutMs: timeout * 1000,
    k,
    space: SPACES[values.space],
    idPrefix: values['id-prefix'],
    remove: values.remove,
  };
}

function connect(Service, options) {
  const credentials = options.tlsCa
    ? grpc.credentials.createSsl(fs.readFileSync(options.tlsCa))
    : grpc.credentials.createInsecure();
  return new Service(options.address, credentials);
}

function callMetadata(options) {
  const metadata = new grpc.Metadata();
  if (options.token) metadata.set('authorization', `Bearer ${options.token}`);
  return metadata;
}

function callOptions(options) {
  return { deadline: new Date(Date.now() + options.timeoutMs) };
}

// grpc-js unary calls take a callback; this turns one into a promise.
function unary(client, method, request, options) {
  return new Promise((resolve, reject) => {
    client[method](request, callMetadata(options), callOptions(options), (error, response) =>
      error ? reject(error) : resolve(response),
    );
  });
}

// Writes every request, half-closes, and collects the answers in arrival order.
function encodeStream(client, requests, options) {
  return new Promise((resolve, reject) => {
    const call = client.EncodeStream(callMetadata(options), callOptions(options));
    const responses = [];
    call.on('data', (response) => responses.push(response));
    call.on('error', reject);
    call.on('end', () => resolve(responses));
    for (const request of requests) call.write(request);
    call.end();
  });
}

// An in-band google.rpc.Status; its details stay packed (their type names are listed).
function summarizeStatus(status) {
  return {
    code: status.code,
    code_name: statusName(status.code),
    message: status.message,
    details: status.details.map((detail) => detail.type_url),
  };
}

function summarizeEncoding(response) {
  if (response.error) return { request_id: response.request_id, error: summarizeStatus(response.error) };
  return {
    request_id: response.request_id,
    sdr: response.sdr,
    concepts: response.concepts.map(({ name, confidence, used }) => ({ name, confidence, used })),
    short: response.short,
    indexed: response.indexed,
  };
}

function itemId(options, image) {
  return options.idPrefix + path.basename(image);
}

async function run(options) {
  const client = connect(loadService(), options);
  try {
    const images = options.images.map((file) => fs.readFileSync(file));
    const encoded = await unary(client, 'Encode', { image: images[0], request_id: 'encode-0' }, options);
    const requests = images.map((image, i) => ({
      image,
      request_id: `stream-${i}`,
      add_to_index: { id: itemId(options, options.images[i]), metadata: { file: options.images[i] } },
    }));
    const streamed = await encodeStream(client, requests, options);
    const sent = requests.map((request) => request.request_id);
    const received = streamed.map((response) => response.request_id);
    const inOrder = JSON.stringify(sent) === JSON.stringify(received);
    const id = itemId(options, options.images[0]);
    const similar = await unary(client, 'FindSimilar', { id, k: options.k, space: options.space }, options);
    const copies = await unary(client, 'FindDuplicates', { image: images[0], k: 100 }, options); // every stored copy, up to 100
    if (options.remove) {
      for (const image of options.images) await unary(client, 'RemoveItem', { id: itemId(options, image) }, options);
    }
    const result = {
      encode: summarizeEncoding(encoded),
      stream: { in_order: inOrder, sent, received, responses: streamed.map(summarizeEncoding) },
      similar: {
        id,
        space: options.space,
        skipped_without_visual: Number(similar.skipped_without_visual),
        matches: similar.matches.map(({ id: match, overlap, score, scored_by: scoredBy }) => ({
          id: match,
          overlap,
          score,
          scored_by: scoredBy,
        })),
      },
      duplicates: {
        fingerprint: copies.fingerprint,
        thresholds: copies.thresholds,
        copies: copies.duplicates.map(({ id: copy, kind, phash_distance: phash, visual_overlap: visual }) => ({
          id: copy,
          kind,
          phash_distance: phash,
          visual_overlap: visual,
        })),
      },
    };
    process.stdout.write(`${toJson(result)}\n`);
    if (!inOrder) throw new Error(`EncodeStream answered out of order: sent ${sent}, got ${received}`);
  } finally {
    client.close();
  }
}

// Indented JSON, but with arrays of numbers (the active bits) kept on one line.
function toJson(value) {
  return JSON.stringify(value, null, 2).replace(/\[\s+(-?\d[\d.,\s-]*?)\s+\]/g, (_, inner) =>
    `[${inner.split(/,\s*/).join(', ')}]`,
  );
}

function statusName(code) {
  return Object.keys(grpc.status).find((name) => grpc.status[name] === code) || String(code);
}

async function main(argv) {
  let options;
  try {
    options = parse(argv);
  } catch (error) {
    process.stderr.write(`error: ${error.message}\n\n${USAGE}\n`);
    return 2;
  }
  if (options.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  try {
    await run(options);
    return 0;
  } catch (error) {
    const where = typeof error.code === 'number' ? `${statusName(error.code)}: ` : '';
    process.stderr.write(`error: ${where}${error.details || error.message}\n`);
    return 1;
  }
}

main(process.argv.slice(2)).then((code) => {
  process.exitCode = code;
});
