#!/usr/bin/env node
// Runs the conformance cases through the Node client and prints the outcome as JSON
// (tests/test_conformance.py runs the same cases in Python, Go and Java):
//
//   node conformance.js ADDRESS TOKEN BAD_FILE IMAGE...
'use strict';

const fs = require('node:fs');
const { Image2SdrClient } = require('./image2sdr');

// The error a call had to end with; null when it wrongly succeeded.
async function refusal(promise) {
  try {
    await promise;
    return null;
  } catch (error) {
    return { code: error.code, message: error.message, fields: error.fields };
  }
}

async function main([address, token, badFile, ...files]) {
  const bad = fs.readFileSync(badFile);
  const images = files.map((file) => fs.readFileSync(file));
  const client = new Image2SdrClient(address, { token });
  const anonymous = new Image2SdrClient(address);
  try {
    const encode = [];
    for (const image of images) encode.push(await client.encode(image));
    const stream = (await client.encodeStream(images, 'stream-')).map(({ request_id, sdr, indexed }) => ({
      request_id,
      sdr,
      indexed,
    }));
    const outcome = {
      encode,
      stream,
      bad_request: await refusal(client.encode(bad)),
      no_token: await refusal(anonymous.encode(images[0])),
    };
    process.stdout.write(`${JSON.stringify(outcome)}\n`);
  } finally {
    client.close();
    anonymous.close();
  }
}

if (process.argv.length < 6) {
  process.stderr.write('usage: node conformance.js ADDRESS TOKEN BAD_FILE IMAGE...\n');
  process.exitCode = 2;
} else {
  main(process.argv.slice(2)).catch((error) => {
    process.stderr.write(`error: ${error.message}\n`);
    process.exitCode = 1;
  });
}
