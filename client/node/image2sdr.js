// image2sdr.js: a thin typed client for image2sdr.v1 (types in image2sdr.d.ts).
//
// It loads the contract at run time with @grpc/proto-loader (no generated code) and adds what
// every caller needs once: the bearer token on every call, a deadline per unary call,
// EncodeStream answers checked against the request order, and failed calls as Image2SdrError
// (the status code, its message and the fields a google.rpc.BadRequest detail names).
'use strict';

const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const protobuf = require('protobufjs');

// The contract lives at the top of the repository; google/rpc/{status,error_details}.proto are
// verbatim copies from googleapis kept beside this file (tests/test_conformance.py checks them).
const INCLUDE_DIRS = [path.join(__dirname, '..', '..', 'protos'), path.join(__dirname, 'protos')];
const LOADER_OPTIONS = {
  keepCase: true, // the proto's field names: request_id, add_to_index
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
  includeDirs: INCLUDE_DIRS,
};
const STATUS_DETAILS_KEY = 'grpc-status-details-bin';
const BAD_REQUEST_URL = 'type.googleapis.com/google.rpc.BadRequest';

function loadService() {
  const definition = protoLoader.loadSync('image2sdr/v1/image2sdr.proto', LOADER_OPTIONS);
  return grpc.loadPackageDefinition(definition).image2sdr.v1.Image2Sdr;
}

// google.rpc.Status and BadRequest, to read the details a refusal carries.
let rpcTypes;
function statusTypes() {
  if (!rpcTypes) {
    const root = new protobuf.Root();
    root.resolvePath = (origin, target) => path.join(__dirname, 'protos', target);
    root.loadSync(['google/rpc/status.proto', 'google/rpc/error_details.proto'], { keepCase: true });
    rpcTypes = { status: root.lookupType('google.rpc.Status'), badRequest: root.lookupType('google.rpc.BadRequest') };
  }
  return rpcTypes;
}

class Image2SdrError extends Error {
  constructor(code, message, fields) {
    super(message);
    this.name = 'Image2SdrError';
    this.code = code; // grpc.status value: 3 INVALID_ARGUMENT, 16 UNAUTHENTICATED, ...
    this.fields = fields; // the request fields the server refused
  }
}

// The fields a list of google.protobuf.Any details names in its BadRequest violations.
function badRequestFields(details) {
  const fields = [];
  for (const detail of details || []) {
    if (detail.type_url === BAD_REQUEST_URL) {
      for (const violation of statusTypes().badRequest.decode(detail.value).field_violations) fields.push(violation.field);
    }
  }
  return fields;
}

// A failed call (a grpc-js ServiceError) as an Image2SdrError, with the details of its status trailer.
function errorFromGrpc(error) {
  const packed = error.metadata ? error.metadata.get(STATUS_DETAILS_KEY) : [];
  const status = packed.length ? statusTypes().status.decode(packed[0]) : { details: [] };
  return new Image2SdrError(error.code, error.details || error.message, badRequestFields(status.details));
}

// An in-band google.rpc.Status (EncodeResponse.error) as an Image2SdrError.
function errorFromStatus(status) {
  return new Image2SdrError(status.code, status.message, badRequestFields(status.details));
}

function sdrFromPb(sdr) {
  return { size: sdr.size, dimensions: sdr.dimensions, active: sdr.active };
}

class Image2SdrClient {
  constructor(address, { token = '', timeoutMs = 30000, credentials = grpc.credentials.createInsecure() } = {}) {
    this.stub = new (loadService())(address, credentials);
    this.token = token;
    this.timeoutMs = timeoutMs;
  }

  metadata() {
    const metadata = new grpc.Metadata();
    if (this.token) metadata.set('authorization', `Bearer ${this.token}`);
    return metadata;
  }

  // Any unary method by its proto name, as a promise; rejects with Image2SdrError.
  call(method, request) {
    const options = { deadline: new Date(Date.now() + this.timeoutMs) };
    return new Promise((resolve, reject) => {
      this.stub[method](request, this.metadata(), options, (error, response) =>
        error ? reject(errorFromGrpc(error)) : resolve(response),
      );
    });
  }

  async encode(image) {
    return sdrFromPb((await this.call('Encode', { image })).sdr);
  }

  // Every image over one stream (request ids prefix + i), answered in request order.
  encodeStream(images, prefix = '') {
    return new Promise((resolve, reject) => {
      const call = this.stub.EncodeStream(this.metadata());
      const answers = [];
      call.on('data', (response) => {
        const expected = `${prefix}${answers.length}`;
        if (response.request_id !== expected) {
          call.cancel();
          reject(new Error(`answers out of order: expected ${expected}, got ${response.request_id}`));
          return;
        }
        answers.push(
          response.error
            ? { request_id: response.request_id, error: errorFromStatus(response.error) }
            : { request_id: response.request_id, sdr: sdrFromPb(response.sdr), indexed: response.indexed },
        );
      });
      call.on('error', (error) => reject(errorFromGrpc(error)));
      call.on('end', () =>
        answers.length === images.length
          ? resolve(answers)
          : reject(new Error(`the stream ended after ${answers.length} answers to ${images.length} requests`)),
      );
      images.forEach((image, i) => call.write({ image, request_id: `${prefix}${i}` }));
      call.end();
    });
  }

  close() {
    this.stub.close();
  }
}

module.exports = { Image2SdrClient, Image2SdrError, errorFromGrpc, errorFromStatus, loadService, LOADER_OPTIONS };
