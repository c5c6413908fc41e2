// Just enough of the etcd v3 API to look at a datastore before the API server does: Range, Put,
// the Txn form of a delete and Compact, over gRPC (HTTP/2 without TLS, as kine and an etcd on its
// client URL speak it). Node has HTTP/2 built in, and these messages are small enough to encode by
// hand, so the node agent needs no gRPC or protobuf library. Field numbers follow etcd's rpc.proto and kv.proto.

import { connect, type ClientHttp2Session } from 'node:http2';

// ---- protobuf wire format: varints, and length-delimited fields ----

function varint(value: number | bigint): Buffer {
  let n = BigInt(value);
  const bytes: number[] = [];
  do {
    let byte = Number(n & 0x7fn);
    n >>= 7n;
    if (n > 0n) byte |= 0x80;
    bytes.push(byte);
  } while (n > 0n);
  return Buffer.from(bytes);
}

export function bytesField(field: number, value: Buffer): Buffer {
  return Buffer.concat([varint((field << 3) | 2), varint(value.length), value]);
}

export function intField(field: number, value: number | boolean): Buffer {
  return Buffer.concat([varint(field << 3), varint(typeof value === 'boolean' ? Number(value) : value)]);
}

/** Every field of a message, in order: numbers for varints, buffers for length-delimited ones. */
export function decodeFields(message: Buffer): { field: number; value: bigint | Buffer }[] {
  const fields: { field: number; value: bigint | Buffer }[] = [];
  let at = 0;
  const readVarint = (): bigint => {
    let result = 0n;
    for (let shift = 0n; ; shift += 7n) {
      const byte = message[at++];
      if (byte === undefined) throw new Error('truncated protobuf message');
      result |= BigInt(byte & 0x7f) << shift;
      if (!(byte & 0x80)) return result;
    }
  };
  while (at < message.length) {
    const key = Number(readVarint());
    const field = key >> 3;
    const wire = key & 7;
    if (wire === 0) fields.push({ field, value: readVarint() });
    else if (wire === 2) {
      const length = Number(readVarint());
      fields.push({ field, value: message.subarray(at, at + length) });
      at += length;
    } else if (wire === 1) at += 8;
    else if (wire === 5) at += 4;
    else throw new Error(`unsupported protobuf wire type ${wire}`);
  }
  return fields;
}

/** The end of a prefix range: the prefix with its last byte raised by one. */
export function prefixEnd(prefix: string): Buffer {
  const end = Buffer.from(prefix);
  end[end.length - 1] = end[end.length - 1]! + 1;
  return end;
}

export interface KeyValue {
  key: string;
  value: Buffer;
  modRevision: number;
}

// ---- gRPC over HTTP/2 ----

export class EtcdClient {
  private session: ClientHttp2Session | undefined;

  /** `http://127.0.0.1:2379` */
  constructor(private readonly endpoint: string) {}

  private call(method: string, request: Buffer, timeoutMs = 5000): Promise<Buffer> {
    const session = this.connection();
    return new Promise((resolve, reject) => {
      session.once('error', reject);
      const stream = session.request({
        ':method': 'POST',
        ':path': `/etcdserverpb.KV/${method}`,
        'content-type': 'application/grpc',
        te: 'trailers',
      });
      stream.setTimeout(timeoutMs, () => stream.close());
      const chunks: Buffer[] = [];
      let status: string | undefined;
      let message = '';
      stream.on('response', (headers) => {
        status = headers['grpc-status'] as string | undefined;
        message = (headers['grpc-message'] as string | undefined) ?? '';
      });
      stream.on('trailers', (trailers) => {
        status = trailers['grpc-status'] as string | undefined;
        message = (trailers['grpc-message'] as string | undefined) ?? message;
      });
      stream.on('data', (chunk: Buffer) => chunks.push(chunk));
      stream.on('error', reject);
      stream.on('close', () => {
        session.off('error', reject);
        if (status !== '0') {
          reject(
            new Error(
              `etcd ${method}: ${status === undefined ? 'no answer' : `status ${status} ${decodeURIComponent(message)}`}`,
            ),
          );
          return;
        }
        // One gRPC message: a compression flag, a 4-byte length, the message.
        const body = Buffer.concat(chunks);
        resolve(body.subarray(5, 5 + body.readUInt32BE(1)));
      });
      const header = Buffer.alloc(5);
      header.writeUInt32BE(request.length, 1);
      stream.end(Buffer.concat([header, request]));
    });
  }

  /** The HTTP/2 session, made anew after one that failed or closed (the datastore restarted). */
  private connection(): ClientHttp2Session {
    if (this.session && !this.session.closed && !this.session.destroyed) return this.session;
    const session = connect(this.endpoint);
    session.on('error', () => {
      if (this.session === session) this.session = undefined;
    });
    session.on('close', () => {
      if (this.session === session) this.session = undefined;
    });
    this.session = session;
    return session;
  }

  /** Keys (and values) under a prefix, or one key when `prefix` is false. */
  async range(
    key: string,
    options: { prefix?: boolean; keysOnly?: boolean; limit?: number } = {},
  ): Promise<KeyValue[]> {
    const request = Buffer.concat([
      bytesField(1, Buffer.from(key)),
      ...(options.prefix ? [bytesField(2, prefixEnd(key))] : []),
      ...(options.limit ? [intField(3, options.limit)] : []),
      ...(options.keysOnly ? [intField(8, true)] : []),
    ]);
    const response = decodeFields(await this.call('Range', request));
    return response
      .filter((f) => f.field === 2 && Buffer.isBuffer(f.value))
      .map((f) => {
        const kv = decodeFields(f.value as Buffer);
        const key = kv.find((x) => x.field === 1)?.value as Buffer | undefined;
        const value = kv.find((x) => x.field === 5)?.value as Buffer | undefined;
        const modRevision = kv.find((x) => x.field === 3)?.value as bigint | undefined;
        return {
          key: key?.toString() ?? '',
          value: value ?? Buffer.alloc(0),
          modRevision: Number(modRevision ?? 0n),
        };
      });
  }

  async put(key: string, value: string | Buffer): Promise<void> {
    await this.call(
      'Put',
      Buffer.concat([bytesField(1, Buffer.from(key)), bytesField(2, Buffer.from(value))]),
    );
  }

  /**
   * Deletes a key at the revision it was read at, in the Txn form the API server uses (compare the
   * key's mod revision, then delete it), which kine accepts where it refuses a plain DeleteRange.
   * Returns whether it was deleted (false: it changed in between).
   */
  async delete(entry: Pick<KeyValue, 'key' | 'modRevision'>): Promise<boolean> {
    const key = bytesField(1, Buffer.from(entry.key));
    const compare = Buffer.concat([
      intField(2, 2),
      bytesField(3, Buffer.from(entry.key)),
      intField(6, entry.modRevision),
    ]);
    const request = Buffer.concat([
      bytesField(1, compare),
      bytesField(2, bytesField(3, key)),
      bytesField(3, bytesField(1, key)),
    ]);
    const response = decodeFields(await this.call('Txn', request));
    return response.some((f) => f.field === 2 && f.value === 1n);
  }

  /** The datastore's current revision, from the header of a read. */
  async revision(): Promise<number> {
    const response = decodeFields(await this.call('Range', bytesField(1, Buffer.from('/'))));
    const header = response.find((f) => f.field === 1)?.value;
    const revision = Buffer.isBuffer(header)
      ? decodeFields(header).find((f) => f.field === 3)?.value
      : undefined;
    if (typeof revision !== 'bigint') throw new Error('etcd Range: no revision in the answer');
    return Number(revision);
  }

  /** Drops every key's history up to a revision (what kine does only while it compacts on request). */
  async compact(revision: number): Promise<void> {
    await this.call('Compact', Buffer.concat([intField(1, revision), intField(2, true)]), 30_000);
  }

  close(): void {
    this.session?.close();
    this.session = undefined;
  }
}
