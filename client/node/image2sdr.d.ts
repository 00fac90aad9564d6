// Types of image2sdr.js, the thin Node client (the messages follow protos/image2sdr/v1/image2sdr.proto).
import type { ChannelCredentials, ServiceError } from '@grpc/grpc-js';

export interface Sdr {
  size: number;
  dimensions: number[]; // [128, 128]
  active: number[]; // sorted positions of the active bits
}

export interface Encoding {
  request_id: string;
  sdr?: Sdr;
  indexed?: boolean;
  error?: Image2SdrError; // a refused item of a stream
}

export class Image2SdrError extends Error {
  code: number; // grpc.status: 3 INVALID_ARGUMENT, 16 UNAUTHENTICATED, ...
  fields: string[]; // the request fields a google.rpc.BadRequest names
}

export interface ClientOptions {
  token?: string;
  timeoutMs?: number;
  credentials?: ChannelCredentials;
}

export class Image2SdrClient {
  constructor(address: string, options?: ClientOptions);
  call(method: string, request: object): Promise<any>;
  encode(image: Buffer): Promise<Sdr>;
  encodeStream(images: Buffer[], prefix?: string): Promise<Encoding[]>;
  close(): void;
}

export function errorFromGrpc(error: ServiceError): Image2SdrError;
