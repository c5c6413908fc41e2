import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { type IncomingMessage, request } from 'node:http';
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
import { readCacheLimit } from '../../node-agent/image-cache/limit.js';
import {
  ImageCache,
  type ImageSource,
  parseRange,
  parseRegistryPath,
  startRegistry,
  tagReference,
} from '../../node-agent/image-cache/registry.js';
import { IMAGE_CACHE } from '../../shared/contract.js';

const amd64 = { os: 'linux', architecture: 'amd64' };
const sha = (data: Buffer | string) => `sha256:${createHash('sha256').update(data).digest('hex')}`;
const TOKEN = IMAGE_CACHE.tokenHeader;

async function classicArchive(content: string | Buffer, reference = 'vind-test/app:1') {
  return buildDockerArchive({
    reference,
    files: [{ path: 'app/data.txt', content: Buffer.from(content), mode: 0o644 }],
    entrypoint: ['/app/run'],
  });
}

/** A cluster's token, as the CLI writes it into the cache's tokens folder. */
async function registerToken(root: string, cluster: string): Promise<string> {
  const token = randomBytes(32).toString('hex');
  await mkdir(join(root, 'tokens'), { recursive: true });
  await writeFile(join(root, 'tokens', cluster), `${token}\n`);
  return token;
}

async function listen(cache: ImageCache): Promise<{ base: string; close: () => void }> {
  const server = startRegistry(cache, 0, '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  return {
    base: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () => server.close(),
  };
}

const noSource: ImageSource = {
  inspect: async () => undefined,
  export: async () => Readable.from([]),
  pull: async () => undefined,
};

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
  let token: string;
  let exports = 0;
  let archive: Awaited<ReturnType<typeof classicArchive>>;
  let close: () => void;

  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'vind-registry-'));
    token = await registerToken(root, 'dev');
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
    ({ base, close } = await listen(cache));
  });

  /** fetch with this cluster's token. */
  const get = (path: string, init: RequestInit = {}) =>
    fetch(`${base}${path}`, { ...init, headers: { ...(init.headers as object), [TOKEN]: token } });

  afterAll(async () => {
    close();
    await rm(root, { recursive: true, force: true });
  });

  it('answers the version check', async () => {
    const response = await get('/v2/');
    expect(response.status).toBe(200);
    expect(response.headers.get('docker-distribution-api-version')).toBe('registry/2.0');
  });

  it('serves a manifest by tag with one export for concurrent requests, then by digest', async () => {
    const [a, b] = await Promise.all([
      get('/v2/vind-test/app/manifests/1?ns=docker.io'),
      get('/v2/vind-test/app/manifests/1?ns=docker.io', { method: 'HEAD' }),
    ]);
    expect(exports).toBe(1);
    expect(a.status).toBe(200);
    expect(a.headers.get('content-type')).toBe(MEDIA_DOCKER_MANIFEST);
    const body = Buffer.from(await a.arrayBuffer());
    const digest = a.headers.get('docker-content-digest')!;
    expect(digest).toBe(sha(body));
    expect(b.headers.get('docker-content-digest')).toBe(digest);
    expect(Number(b.headers.get('content-length'))).toBe(body.length);
    const byDigest = await get(`/v2/vind-test/app/manifests/${digest}`);
    expect(Buffer.from(await byDigest.arrayBuffer()).equals(body)).toBe(true);
  });

  it('serves blobs whole and by range', async () => {
    const layer = archive.layerDiffId;
    const whole = Buffer.from(await (await get(`/v2/vind-test/app/blobs/${layer}`)).arrayBuffer());
    expect(sha(whole)).toBe(layer);
    const part = await get(`/v2/vind-test/app/blobs/${layer}`, {
      headers: { Range: 'bytes=10-19' },
    });
    expect(part.status).toBe(206);
    expect(part.headers.get('content-range')).toBe(`bytes 10-19/${whole.length}`);
    expect(Buffer.from(await part.arrayBuffer()).equals(whole.subarray(10, 20))).toBe(true);
    const head = await get(`/v2/vind-test/app/blobs/${layer}`, { method: 'HEAD' });
    expect(Number(head.headers.get('content-length'))).toBe(whole.length);
    expect(head.headers.get('docker-content-digest')).toBe(layer);
  });

  it('answers bad requests with registry error codes and keeps serving', async () => {
    const errorCode = async (path: string, status: number) => {
      const response = await get(path);
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
      req.setHeader(TOKEN, token);
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
    expect((await get('/v2/vind-test/app/manifests/1', { method: 'DELETE' })).status).toBe(405);
    expect((await get('/v2/')).status).toBe(200);
  });

  it('lists what it cached with sizes, the bytes used and the limit', async () => {
    const cache = new ImageCache(root, noSource);
    const { images, used, limit } = await cache.list();
    const [entry] = images;
    expect(entry).toMatchObject({ reference: 'docker.io/vind-test/app:1', imageId: archive.imageId });
    const config = await readFile(join(root, 'blobs', 'sha256', archive.imageId.slice(7)));
    expect(entry!.size).toBeGreaterThan(config.length);
    expect(used).toBeGreaterThan(entry!.size);
    expect(limit).toBe(IMAGE_CACHE.defaultLimit);
  });
});

describe('tagReference', () => {
  it('writes the image in full, and refuses a registry that would read as a Docker Hub path', () => {
    expect(tagReference('docker.io', 'library/redis', '7')).toBe('docker.io/library/redis:7');
    expect(tagReference('docker.io', 'redis', '7')).toBe('docker.io/library/redis:7');
    expect(tagReference('127.0.0.1:5000', 'app', 'v1')).toBe('127.0.0.1:5000/app:v1');
    expect(tagReference('localhost:5000', 'team/app', 'v1')).toBe('localhost:5000/team/app:v1');
    expect(() => tagReference('registry', 'app', 'v1')).toThrow(
      expect.objectContaining({ code: 'NAME_INVALID' }),
    );
  });
});

describe('cluster tokens', () => {
  let root: string;
  let base: string;
  let close: () => void;
  let archive: Awaited<ReturnType<typeof classicArchive>>;

  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'vind-tokens-'));
    archive = await classicArchive('served only to clusters');
    const cache = new ImageCache(root, {
      inspect: async (reference) =>
        reference === 'docker.io/vind-test/app:1' ? { Id: archive.imageId } : undefined,
      export: async () => Readable.from(archive.tar),
      pull: async () => undefined,
    });
    ({ base, close } = await listen(cache));
  });

  afterAll(async () => {
    close();
    await rm(root, { recursive: true, force: true });
  });

  const paths = () => [
    '/v2/',
    '/v2/vind-test/app/manifests/1?ns=docker.io',
    `/v2/vind-test/app/blobs/${archive.layerDiffId}`,
  ];

  async function status(path: string, token?: string, method = 'GET') {
    const response = await fetch(`${base}${path}`, { method, headers: token ? { [TOKEN]: token } : {} });
    const text = await response.text();
    const json = response.headers.get('content-type') === 'application/json' && text;
    return { status: response.status, body: json ? (JSON.parse(text) as unknown) : undefined };
  }

  const refused = {
    status: 401,
    body: { errors: [{ code: 'UNAUTHORIZED', message: expect.stringContaining(TOKEN) }] },
  };

  it('refuses every request without a token, /v2/ included, before anything is looked up', async () => {
    for (const path of paths()) {
      expect(await status(path)).toEqual(refused);
      expect((await status(path, undefined, 'HEAD')).status).toBe(401);
    }
    // Nothing was exported for the refused manifest request.
    expect((await stat(join(root, 'blobs')).catch(() => undefined)) === undefined).toBe(true);
  });

  it('refuses a token no cluster has, and one that is not a token', async () => {
    await registerToken(root, 'other');
    for (const path of paths()) {
      expect(await status(path, 'ab'.repeat(32))).toEqual(refused);
      expect(await status(path, 'not a token')).toEqual(refused);
      expect(await status(path, '')).toEqual(refused);
    }
  });

  it("serves a registered cluster's nodes, and refuses them again once the token is removed", async () => {
    const token = await registerToken(root, 'dev');
    for (const path of paths()) expect((await status(path, token)).status).toBe(200);
    await rm(join(root, 'tokens', 'dev'));
    for (const path of paths()) expect(await status(path, token)).toEqual(refused);
    // A half-written file of the CLI (name.tmp) is no token.
    await writeFile(join(root, 'tokens', 'dev.tmp'), token);
    expect(await status('/v2/', token)).toEqual(refused);
  });
});

describe('readCacheLimit', () => {
  let root: string;
  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'vind-limit-'));
  });
  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it('takes the limit file over the environment, and the default without either', async () => {
    const file = join(root, 'limit');
    expect(await readCacheLimit(file, {})).toBe(20 * 1024 ** 3);
    expect(await readCacheLimit(file, { VIND_CACHE_LIMIT: '5G' })).toBe(5 * 1024 ** 3);
    await writeFile(file, '512MiB\n');
    expect(await readCacheLimit(file, { VIND_CACHE_LIMIT: '5G' })).toBe(512 * 1024 ** 2);
    await writeFile(file, 'lots');
    expect(await readCacheLimit(file, { VIND_CACHE_LIMIT: '5G' })).toBe(5 * 1024 ** 3);
  });
});

describe('the size limit', () => {
  let root: string;
  let base: string;
  let close: () => void;
  let token: string;
  let limit = Number.MAX_SAFE_INTEGER;
  const archives = new Map<string, Awaited<ReturnType<typeof classicArchive>>>();
  const exported: string[] = [];

  async function addImage(name: string, content: Buffer) {
    archives.set(name, await classicArchive(content, `vind-test/${name}:1`));
  }

  const get = (path: string) => fetch(`${base}${path}`, { headers: { [TOKEN]: token } });

  /** Pulls an image's manifest through the registry; returns every blob digest the image has. */
  async function pull(name: string): Promise<string[]> {
    const response = await get(`/v2/vind-test/${name}/manifests/1?ns=docker.io`);
    expect(response.status).toBe(200);
    const body = JSON.parse(await response.text()) as {
      config: { digest: string };
      layers: { digest: string }[];
    };
    return [
      response.headers.get('docker-content-digest')!,
      body.config.digest,
      ...body.layers.map((l) => l.digest),
    ];
  }

  const blobPath = (digest: string) => join(root, 'blobs', 'sha256', digest.slice(7));
  const present = async (digest: string) =>
    (await stat(blobPath(digest)).catch(() => undefined)) !== undefined;
  const bytes = async (digests: string[]) => {
    let total = 0;
    for (const digest of digests) total += (await stat(blobPath(digest))).size;
    return total;
  };
  /** Sets a blob's last use to a moment long ago, in seconds since the epoch. */
  const lastUsed = (digests: string[], seconds: number) =>
    Promise.all(digests.map((digest) => utimes(blobPath(digest), seconds, seconds)));

  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'vind-lru-'));
    token = await registerToken(root, 'dev');
    // "big" is large enough that its response cannot sit whole in the socket buffers.
    await addImage('big', randomBytes(48 * 1024 * 1024));
    for (const name of ['b', 'c', 'd', 'e']) await addImage(name, randomBytes(64 * 1024));
    const cache = new ImageCache(
      root,
      {
        inspect: async (reference) => {
          const name = /^docker\.io\/vind-test\/(\w+):1$/.exec(reference)?.[1];
          const archive = name ? archives.get(name) : undefined;
          return archive ? { Id: archive.imageId } : undefined;
        },
        export: async (reference) => {
          const name = /^docker\.io\/vind-test\/(\w+):1$/.exec(reference)![1]!;
          exported.push(name);
          return Readable.from(archives.get(name)!.tar);
        },
        pull: async () => undefined,
      },
      { limit: async () => limit },
    );
    ({ base, close } = await listen(cache));
  });

  afterAll(async () => {
    close();
    await rm(root, { recursive: true, force: true });
  });

  it('evicts the least recently used blobs, never one being served nor the new image', async () => {
    const big = await pull('big');
    const b = await pull('b');
    const c = await pull('c');
    const [bigManifest, bigConfig, bigLayer] = big as [string, string, string];
    // Last used: the big layer longest ago, then b, then c, then the big image's manifest and config.
    await lastUsed([bigLayer], 1_000);
    await lastUsed(b, 2_000);
    await lastUsed(c, 3_000);
    await lastUsed([bigManifest, bigConfig], 4_000);

    // A node starts fetching the big layer and reads slowly: the response stays open.
    const slow = await new Promise<IncomingMessage>((resolve, reject) => {
      const req = request(`${base}/v2/vind-test/big/blobs/${bigLayer}`, { headers: { [TOKEN]: token } });
      req.on('response', (res) => {
        res.pause();
        resolve(res);
      });
      req.on('error', reject);
      req.end();
    });
    expect(slow.statusCode).toBe(200);
    // Served long ago as far as the clock goes: only being served now keeps it.
    await lastUsed([bigLayer], 1_000);

    // d needs room: exactly b's bytes must go.
    const dScratch = new BlobStore(join(root, '..', `${root.split('/').at(-1)}-d`));
    await importArchive(Readable.from(archives.get('d')!.tar), dScratch, amd64);
    const dBytes = (await dScratch.entries()).reduce((sum, blob) => sum + blob.size, 0);
    await rm(dScratch.root, { recursive: true, force: true });
    limit = (await bytes(big)) + (await bytes(c)) + dBytes;
    const d = await pull('d');

    for (const digest of b) expect(await present(digest)).toBe(false);
    for (const digest of [...big, ...c, ...d]) expect(await present(digest)).toBe(true);
    const listing = await new ImageCache(root, noSource, { limit: async () => limit }).list();
    expect(listing.images.map((i) => i.reference)).toEqual([
      'docker.io/vind-test/big:1',
      'docker.io/vind-test/c:1',
      'docker.io/vind-test/d:1',
    ]);
    expect(listing).toMatchObject({ used: limit, limit });

    // The slow node still gets the whole layer.
    slow.resume();
    const chunks: Buffer[] = [];
    for await (const chunk of slow) chunks.push(chunk as Buffer);
    expect(sha(Buffer.concat(chunks))).toBe(bigLayer);
    await new Promise((resolve) => setTimeout(resolve, 50));

    // b is exported again when asked for; now the big layer, no longer served, is the one to go.
    exported.length = 0;
    await pull('b');
    expect(exported).toEqual(['b']);
    for (const digest of b) expect(await present(digest)).toBe(true);
    expect(await present(bigLayer)).toBe(false);
    expect((await get(`/v2/vind-test/big/blobs/${bigLayer}`)).status).toBe(404);
  });

  it("keeps the new image's blobs even when they alone are over the limit", async () => {
    limit = 1;
    const e = await pull('e');
    for (const digest of e) expect(await present(digest)).toBe(true);
    const { images } = await new ImageCache(root, noSource).list();
    expect(images.map((i) => i.reference)).toEqual(['docker.io/vind-test/e:1']);
    const layer = await get(`/v2/vind-test/e/blobs/${e[2]}`);
    expect(sha(Buffer.from(await layer.arrayBuffer()))).toBe(e[2]);
  });
});
