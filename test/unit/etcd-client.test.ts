// The small etcd v3 client against a real etcd (Debian's etcd-server, installed by scripts/host-deps.sh).

import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bytesField, decodeFields, EtcdClient, intField, prefixEnd } from '../../node-agent/etcd-client.js';
import { waitFor } from '../support/workloads.js';

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

describe('protobuf pieces', () => {
  it('encodes and decodes varint and length-delimited fields', () => {
    const message = Buffer.concat([bytesField(1, Buffer.from('/a')), intField(3, 300), intField(8, true)]);
    expect(decodeFields(message)).toEqual([
      { field: 1, value: Buffer.from('/a') },
      { field: 3, value: 300n },
      { field: 8, value: 1n },
    ]);
  });

  it('ends a prefix range just past the prefix', () => {
    expect(prefixEnd('/vind/dev/').toString()).toBe('/vind/dev0');
  });
});

describe('EtcdClient against etcd', () => {
  let scratch: string;
  let server: ResultPromise;
  let client: EtcdClient;

  beforeAll(async () => {
    scratch = await mkdtemp(join(tmpdir(), 'vind-etcd-client-'));
    const [clientPort, peerPort] = [await freePort(), await freePort()];
    server = execa(
      'etcd',
      [
        '--data-dir',
        join(scratch, 'data'),
        '--listen-client-urls',
        `http://127.0.0.1:${clientPort}`,
        '--advertise-client-urls',
        `http://127.0.0.1:${clientPort}`,
        '--listen-peer-urls',
        `http://127.0.0.1:${peerPort}`,
      ],
      { reject: false },
    );
    client = new EtcdClient(`http://127.0.0.1:${clientPort}`);
    await waitFor(
      'etcd to answer',
      async () =>
        await client.range('/probe').then(
          () => true,
          () => undefined,
        ),
      20_000,
    );
  });

  afterAll(async () => {
    client?.close();
    server?.kill('SIGTERM');
    await server;
    await rm(scratch, { recursive: true, force: true });
  });

  it('puts, reads by key and by prefix, and deletes', async () => {
    await client.put('/vind/dev/vind-cluster', '{"id":"1"}');
    await client.put('/vind/dev/registry/secrets/default/a', 'x');
    await client.put('/vind/other/registry/secrets/default/b', 'y');
    const [marker] = await client.range('/vind/dev/vind-cluster');
    expect(marker).toMatchObject({ key: '/vind/dev/vind-cluster', value: Buffer.from('{"id":"1"}') });
    expect(marker!.modRevision).toBeGreaterThan(0);
    const keys = (await client.range('/vind/dev/', { prefix: true, keysOnly: true })).map((kv) => kv.key);
    expect(keys).toEqual(['/vind/dev/registry/secrets/default/a', '/vind/dev/vind-cluster']);
    const [secret] = await client.range('/vind/dev/registry/secrets/default/a');
    // A revision that is no longer the key's: nothing happens.
    expect(await client.delete({ key: secret!.key, modRevision: secret!.modRevision - 1 })).toBe(false);
    expect(await client.delete(secret!)).toBe(true);
    expect(await client.range('/vind/dev/registry/', { prefix: true })).toEqual([]);
    expect(await client.range('/vind/other/', { prefix: true, keysOnly: true })).toHaveLength(1);
    expect(await client.range('/nothing/here')).toEqual([]);
  });

  it('reads the current revision and compacts up to it', async () => {
    await client.put('/compact/a', 'one');
    const before = await client.revision();
    await client.put('/compact/a', Buffer.from([0, 1, 2]));
    const revision = await client.revision();
    expect(revision).toBe(before + 1);
    await client.compact(revision);
    expect((await client.range('/compact/a'))[0]?.value).toEqual(Buffer.from([0, 1, 2]));
    // The history up to it is gone: etcd refuses to compact there again.
    await expect(client.compact(revision)).rejects.toThrow(/compacted/);
  });
});
