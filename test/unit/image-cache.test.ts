import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import tar from 'tar-stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildDockerArchive } from '../../images/docker-archive.js';
import {
  BlobStore,
  importArchive,
  MEDIA_DOCKER_LAYER,
  MEDIA_DOCKER_MANIFEST,
  MEDIA_OCI_INDEX,
  MEDIA_OCI_MANIFEST,
} from '../../node-agent/image-cache/archive.js';
import {
  ImageCache,
  parseRange,
  parseRegistryPath,
  startRegistry,
} from '../../node-agent/image-cache/registry.js';

const amd64 = { os: 'linux', architecture: 'amd64' };
const sha = (data: Buffer | string) => `sha256:${createHash('sha256').update(data).digest('hex')}`;

async function classicArchive(content: string) {
  return buildDockerArchive({
    reference: 'vind-test/app:1',
    files: [{ path: 'app/data.txt', content: Buffer.from(content), mode: 0o644 }],
    entrypoint: ['/app/run'],
  });
}

/** An OCI layout as the containerd image store exports it: an index over two platforms. */
async function ociArchive(): Promise<{ tar: Buffer; amd64Manifest: string; layer: Buffer }> {
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  pack.on('data', (c: unknown) => chunks.push(c as Buffer));
  const ended = new Promise<void>((resolve) => pack.on('end', () => resolve()));
  const blob = (data: Buffer | string) => {
    const buffer = Buffer.from(data);
    pack.entry({ name: `blobs/sha256/${sha(buffer).slice(7)}` }, buffer);
    return { digest: sha(buffer), size: buffer.length };
  };
  const layer = Buffer.from('pretend this is a gzipped layer');
  const layerDesc = blob(layer);
  const manifests = ['amd64', 'arm64'].map((architecture) => {
    const config = blob(
      JSON.stringify({ architecture, os: 'linux', rootfs: { type: 'layers', diff_ids: [] } }),
    );
    const manifest = JSON.stringify({
      schemaVersion: 2,
      mediaType: MEDIA_OCI_MANIFEST,
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', ...layerDesc }],
    });
    return { mediaType: MEDIA_OCI_MANIFEST, ...blob(manifest), platform: { os: 'linux', architecture } };
  });
  const index = blob(JSON.stringify({ schemaVersion: 2, mediaType: MEDIA_OCI_INDEX, manifests }));
  pack.entry(
    { name: 'index.json' },
    JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: MEDIA_OCI_INDEX, ...index }] }),
  );
  pack.entry({ name: 'oci-layout' }, '{"imageLayoutVersion":"1.0.0"}');
  pack.finalize();
  await ended;
  return { tar: Buffer.concat(chunks), amd64Manifest: manifests[0]!.digest, layer };
}

describe('importArchive', () => {
  let root: string;
  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'vind-cache-'));
  });
  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it('turns a classic docker-archive into a manifest of uncompressed layers, stable across exports', async () => {
    const built = await classicArchive('hello');
    const store = new BlobStore(join(root, 'a'));
    const first = await importArchive(Readable.from(built.tar), store, amd64);
    const second = await importArchive(Readable.from(built.tar), new BlobStore(join(root, 'b')), amd64);
    expect(first).toEqual(second);
    expect(first.mediaType).toBe(MEDIA_DOCKER_MANIFEST);
    const manifest = JSON.parse((await store.read(first.digest)).toString()) as {
      config: { digest: string };
      layers: { digest: string; mediaType: string }[];
    };
    expect(manifest.config.digest).toBe(built.imageId);
    expect(manifest.layers).toEqual([
      expect.objectContaining({ digest: built.layerDiffId, mediaType: MEDIA_DOCKER_LAYER }),
    ]);
    expect(store.has(built.layerDiffId)).toBe(true);
    expect(first.digest).toBe(sha(await store.read(first.digest)));
  });

  it('follows an OCI index to the manifest of the node platform', async () => {
    const oci = await ociArchive();
    const store = new BlobStore(join(root, 'oci'));
    const manifest = await importArchive(Readable.from(oci.tar), store, amd64);
    expect(manifest.digest).toBe(oci.amd64Manifest);
    expect(manifest.mediaType).toBe(MEDIA_OCI_MANIFEST);
    expect((await store.read(sha(oci.layer))).equals(oci.layer)).toBe(true);
    await expect(
      importArchive(Readable.from(oci.tar), store, { os: 'linux', architecture: 's390x' }),
    ).rejects.toThrow(/no manifest for linux\/s390x/);
  });

  it('refuses a blob whose content does not match its name', async () => {
    const pack = tar.pack();
    pack.entry({ name: `blobs/sha256/${'0'.repeat(64)}` }, 'not that');
    pack.finalize();
    await expect(
      importArchive(
        Readable.from(pack as unknown as AsyncIterable<Buffer>),
        new BlobStore(join(root, 'bad')),
        amd64,
      ),
    ).rejects.toThrow(/has content sha256:/);
  });
});

describe('parseRegistryPath', () => {
  it('splits names, kinds and references', () => {
    expect(parseRegistryPath('/v2/')).toBe('base');
    expect(parseRegistryPath('/v2/library/redis/manifests/7.2')).toEqual({
      name: 'library/redis',
      kind: 'manifests',
      reference: '7.2',
    });
  });

  it.each([
    ['/v2/../../etc/manifests/latest', 'NAME_INVALID'],
    ['/v2/Upper/manifests/latest', 'NAME_INVALID'],
    ['/v2/app/manifests/bad tag', 'TAG_INVALID'],
    ['/v2/app/blobs/sha256:1234', 'DIGEST_INVALID'],
    ['/v2/app/blobs/md5:abc', 'DIGEST_INVALID'],
    ['/v2/app/tags/list', 'UNSUPPORTED'],
  ])('refuses %s with %s', (path, code) => {
    expect(() => parseRegistryPath(path)).toThrow(expect.objectContaining({ code }));
  });
});

describe('parseRange', () => {
  it.each([
    [undefined, undefined],
    ['bytes=0-9', [0, 9]],
    ['bytes=5-', [5, 99]],
    ['bytes=-10', [90, 99]],
    ['bytes=90-200', [90, 99]],
    ['bytes=100-', 'unsatisfiable'],
    ['items=0-1', undefined],
  ])('%s of 100 bytes', (header, expected) => {
    expect(parseRange(header, 100)).toEqual(expected);
  });
});

describe('the registry endpoint', () => {
  let root: string;
  let base: string;
  let exports = 0;
  let archive: Awaited<ReturnType<typeof classicArchive>>;
  let close: () => void;

  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'vind-registry-'));
    archive = await classicArchive('x'.repeat(5000));
    const cache = new ImageCache(root, {
      inspect: async (reference) =>
        reference === 'docker.io/vind-test/app:1' ? { Id: archive.imageId } : undefined,
      export: async () => {
        exports++;
        await new Promise((resolve) => setTimeout(resolve, 50));
        return Readable.from(archive.tar);
      },
      pull: async (reference) => {
        throw new Error(`pull access denied for ${reference}`);
      },
    });
    const server = startRegistry(cache, 0);
    await new Promise((resolve) => server.once('listening', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    close = () => server.close();
  });

  afterAll(async () => {
    close();
    await rm(root, { recursive: true, force: true });
  });

  it('answers the version check', async () => {
    const response = await fetch(`${base}/v2/`);
    expect(response.status).toBe(200);
    expect(response.headers.get('docker-distribution-api-version')).toBe('registry/2.0');
  });

  it('serves a manifest by tag with one export for concurrent requests, then by digest', async () => {
    const [a, b] = await Promise.all([
      fetch(`${base}/v2/vind-test/app/manifests/1?ns=docker.io`),
      fetch(`${base}/v2/vind-test/app/manifests/1?ns=docker.io`, { method: 'HEAD' }),
    ]);
    expect(exports).toBe(1);
    expect(a.status).toBe(200);
    expect(a.headers.get('content-type')).toBe(MEDIA_DOCKER_MANIFEST);
    const body = Buffer.from(await a.arrayBuffer());
    const digest = a.headers.get('docker-content-digest')!;
    expect(digest).toBe(sha(body));
    expect(b.headers.get('docker-content-digest')).toBe(digest);
    expect(Number(b.headers.get('content-length'))).toBe(body.length);
    const byDigest = await fetch(`${base}/v2/vind-test/app/manifests/${digest}`);
    expect(Buffer.from(await byDigest.arrayBuffer()).equals(body)).toBe(true);
  });

  it('serves blobs whole and by range', async () => {
    const layer = archive.layerDiffId;
    const whole = Buffer.from(await (await fetch(`${base}/v2/vind-test/app/blobs/${layer}`)).arrayBuffer());
    expect(sha(whole)).toBe(layer);
    const part = await fetch(`${base}/v2/vind-test/app/blobs/${layer}`, {
      headers: { Range: 'bytes=10-19' },
    });
    expect(part.status).toBe(206);
    expect(part.headers.get('content-range')).toBe(`bytes 10-19/${whole.length}`);
    expect(Buffer.from(await part.arrayBuffer()).equals(whole.subarray(10, 20))).toBe(true);
    const head = await fetch(`${base}/v2/vind-test/app/blobs/${layer}`, { method: 'HEAD' });
    expect(Number(head.headers.get('content-length'))).toBe(whole.length);
    expect(head.headers.get('docker-content-digest')).toBe(layer);
  });

  it('answers bad requests with registry error codes and keeps serving', async () => {
    const errorCode = async (path: string, status: number) => {
      const response = await fetch(`${base}${path}`);
      expect(response.status).toBe(status);
      return ((await response.json()) as { errors: { code: string; message: string }[] }).errors[0]!;
    };
    expect((await errorCode(`/v2/vind-test/app/blobs/sha256:${'a'.repeat(64)}`, 404)).code).toBe(
      'BLOB_UNKNOWN',
    );
    expect((await errorCode('/v2/vind-test/app/blobs/sha256:nothex', 400)).code).toBe('DIGEST_INVALID');
    // Sent raw: a URL parser on the client side would resolve the dots away.
    const traversal = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = request(`${base}/v2/../../etc/passwd/manifests/latest`, (res) => {
        let body = '';
        res.on('data', (c: Buffer) => (body += c.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      });
      req.path = '/v2/%2e%2e/%2e%2e/etc/passwd/manifests/latest';
      req.on('error', reject);
      req.end();
    });
    expect(traversal.status).toBe(400);
    expect(JSON.parse(traversal.body).errors[0].code).toBe('NAME_INVALID');
    const missing = await errorCode('/v2/nothing/here/manifests/v1?ns=docker.io', 404);
    expect(missing).toEqual({
      code: 'MANIFEST_UNKNOWN',
      message: expect.stringContaining(
        'image docker.io/nothing/here:v1 is not on the Docker host and could not be pulled',
      ),
    });
    expect((await fetch(`${base}/v2/vind-test/app/manifests/1`, { method: 'DELETE' })).status).toBe(405);
    expect((await fetch(`${base}/v2/`)).status).toBe(200);
  });

  it('lists what it cached with sizes', async () => {
    const cache = new ImageCache(root, {
      inspect: async () => undefined,
      export: async () => Readable.from([]),
      pull: async () => undefined,
    });
    const [entry] = await cache.list();
    expect(entry).toMatchObject({ reference: 'docker.io/vind-test/app:1', imageId: archive.imageId });
    const config = await readFile(join(root, 'blobs', 'sha256', archive.imageId.slice(7)));
    expect(entry!.size).toBeGreaterThan(config.length);
  });
});
