// The read side of the OCI distribution API, served from the host's Docker images. Every node's
// containerd uses it as a mirror for every registry; containerd names the registry it wanted in
// the `ns` query parameter, so /v2/library/redis/manifests/7?ns=docker.io is docker.io/library/redis:7.

import { createHash } from 'node:crypto';
import { createReadStream, existsSync } from 'node:fs';
import { mkdir, readdir, readFile, stat } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { join } from 'node:path';
import { writeFileAtomic } from '../../shared/atomic-write.js';
import { log } from '../log.js';
import { BlobStore, importArchive, parseDigest, type Platform, type StoredManifest } from './archive.js';

export interface ImageSource {
  inspect(reference: string): Promise<{ Id: string } | undefined>;
  export(reference: string): Promise<NodeJS.ReadableStream>;
  pull(reference: string, registry: string): Promise<void>;
}

export interface CachedImage {
  reference: string;
  imageId: string;
  manifest: StoredManifest;
  /** Bytes of the config and layers. */
  size: number;
  at: string;
}

const NAME = /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$/;
const TAG = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/;
const NS = /^[A-Za-z0-9.-]+(?::\d+)?$/;

type ErrorCode =
  'NAME_INVALID' | 'TAG_INVALID' | 'DIGEST_INVALID' | 'MANIFEST_UNKNOWN' | 'BLOB_UNKNOWN' | 'UNSUPPORTED';

export class RegistryError extends Error {
  constructor(
    readonly status: number,
    readonly code: ErrorCode,
    message: string,
  ) {
    super(message);
  }
}

export interface ParsedPath {
  name: string;
  kind: 'manifests' | 'blobs';
  reference: string;
}

/**
 * Splits /v2/<name>/(manifests|blobs)/<reference> as sent (still percent-encoded), then checks the
 * decoded name and reference against the distribution grammar: encoded slashes and dots cannot
 * smuggle a path through.
 */
export function parseRegistryPath(rawPath: string): ParsedPath | 'base' {
  if (rawPath === '/v2' || rawPath === '/v2/') return 'base';
  const match = /^\/v2\/(.+)\/(manifests|blobs)\/([^/]+)$/.exec(rawPath);
  if (!match) throw new RegistryError(404, 'UNSUPPORTED', `no such endpoint ${rawPath}`);
  const kind = match[2] as 'manifests' | 'blobs';
  const decode = (text: string, code: ErrorCode) => {
    try {
      return decodeURIComponent(text);
    } catch {
      throw new RegistryError(400, code, `malformed ${text}`);
    }
  };
  const name = decode(match[1]!, 'NAME_INVALID');
  const reference = decode(match[3]!, kind === 'blobs' ? 'DIGEST_INVALID' : 'TAG_INVALID');
  if (!NAME.test(name)) throw new RegistryError(400, 'NAME_INVALID', `invalid repository name "${name}"`);
  if (reference.startsWith('sha256:') || kind === 'blobs') {
    try {
      parseDigest(reference);
    } catch {
      throw new RegistryError(400, 'DIGEST_INVALID', `invalid digest "${reference}"`);
    }
  } else if (!TAG.test(reference)) {
    throw new RegistryError(400, 'TAG_INVALID', `invalid tag "${reference}"`);
  }
  return { name, kind, reference };
}

/** The registry a request is for: containerd's `ns` parameter, Docker Hub when absent. */
export function registryOf(ns: string | null): string {
  if (!ns) return 'docker.io';
  if (!NS.test(ns)) throw new RegistryError(400, 'NAME_INVALID', `invalid registry "${ns}"`);
  return ns;
}

export function hostPlatform(): Platform {
  const architecture = (
    { x64: 'amd64', arm64: 'arm64', arm: 'arm', s390x: 's390x', ppc64: 'ppc64le' } as Record<string, string>
  )[process.arch];
  return { os: 'linux', architecture: architecture ?? process.arch };
}

export class ImageCache {
  readonly store: BlobStore;
  private readonly exports = new Map<string, Promise<StoredManifest>>();

  constructor(
    readonly root: string,
    private readonly source: ImageSource,
    private readonly platform: Platform = hostPlatform(),
  ) {
    this.store = new BlobStore(root);
  }

  private metaPath(kind: 'images' | 'refs' | 'manifests', key: string): string {
    return join(this.root, kind, `${key}.json`);
  }

  private async writeMeta(kind: 'images' | 'refs' | 'manifests', key: string, value: unknown): Promise<void> {
    await mkdir(join(this.root, kind), { recursive: true });
    // Concurrent requests may write the same entry: each through its own temporary file.
    await writeFileAtomic(this.metaPath(kind, key), JSON.stringify(value));
  }

  private async readMeta<T>(kind: 'images' | 'refs' | 'manifests', key: string): Promise<T | undefined> {
    try {
      return JSON.parse(await readFile(this.metaPath(kind, key), 'utf8')) as T;
    } catch {
      return undefined;
    }
  }

  /** The manifest for an image of the host, exported once per image id; concurrent asks share one export. */
  private async manifestForImage(reference: string, imageId: string): Promise<StoredManifest> {
    const key = parseDigest(imageId);
    const known = await this.readMeta<StoredManifest>('images', key);
    if (known && this.store.has(known.digest)) return known;
    let pending = this.exports.get(key);
    if (!pending) {
      pending = (async () => {
        const started = Date.now();
        const archive = await this.source.export(reference);
        const manifest = await importArchive(
          archive as unknown as import('node:stream').Readable,
          this.store,
          this.platform,
        );
        await this.writeMeta('images', key, manifest);
        await this.writeMeta('manifests', parseDigest(manifest.digest), manifest);
        log(
          `cached ${reference} (${imageId.slice(0, 19)}) as ${manifest.digest} in ${Date.now() - started}ms`,
        );
        return manifest;
      })().finally(() => this.exports.delete(key));
      this.exports.set(key, pending);
    }
    return pending;
  }

  private async imageSize(manifest: StoredManifest): Promise<number> {
    const body = JSON.parse((await this.store.read(manifest.digest)).toString()) as {
      config?: { size: number };
      layers?: { size: number }[];
    };
    return (body.config?.size ?? 0) + (body.layers ?? []).reduce((sum, l) => sum + l.size, 0);
  }

  async resolveTag(registry: string, name: string, tag: string): Promise<StoredManifest> {
    const reference = `${registry}/${name}:${tag}`;
    let image = await this.source.inspect(reference);
    if (!image) {
      try {
        log(`pulling ${reference} through the host's Docker`);
        await this.source.pull(reference, registry);
      } catch (error) {
        throw new RegistryError(
          404,
          'MANIFEST_UNKNOWN',
          `image ${reference} is not on the Docker host and could not be pulled: ${(error as Error).message}`,
        );
      }
      image = await this.source.inspect(reference);
      if (!image)
        throw new RegistryError(404, 'MANIFEST_UNKNOWN', `image ${reference} is not on the Docker host`);
    }
    const manifest = await this.manifestForImage(reference, image.Id);
    const size = await this.imageSize(manifest);
    const entry: CachedImage = { reference, imageId: image.Id, manifest, size, at: new Date().toISOString() };
    await this.writeMeta('refs', createHash('sha256').update(reference).digest('hex'), entry);
    return manifest;
  }

  async resolveDigest(digest: string): Promise<StoredManifest> {
    const known = await this.readMeta<StoredManifest>('manifests', parseDigest(digest));
    if (known && this.store.has(digest)) return known;
    throw new RegistryError(404, 'MANIFEST_UNKNOWN', `manifest ${digest} is not in the cache`);
  }

  async list(): Promise<CachedImage[]> {
    const dir = join(this.root, 'refs');
    if (!existsSync(dir)) return [];
    const entries: CachedImage[] = [];
    for (const file of await readdir(dir)) {
      if (!file.endsWith('.json')) continue;
      const entry = await this.readMeta<CachedImage>('refs', file.slice(0, -5));
      if (entry) entries.push(entry);
    }
    return entries.sort((a, b) => a.reference.localeCompare(b.reference));
  }

  async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    res.setHeader('Docker-Distribution-API-Version', 'registry/2.0');
    try {
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        throw new RegistryError(405, 'UNSUPPORTED', 'this registry is read-only');
      }
      const raw = req.url ?? '/';
      const query = new URLSearchParams(raw.includes('?') ? raw.slice(raw.indexOf('?') + 1) : '');
      // The path as sent, not as a URL parser would resolve it: "/v2/%2e%2e/..." must be refused, not followed.
      const parsed = parseRegistryPath(raw.split('?')[0]!);
      if (parsed === 'base') {
        res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': 2 });
        res.end(req.method === 'HEAD' ? undefined : '{}');
        return;
      }
      const registry = registryOf(query.get('ns'));
      if (parsed.kind === 'manifests') {
        const manifest = parsed.reference.startsWith('sha256:')
          ? await this.resolveDigest(parsed.reference)
          : await this.resolveTag(registry, parsed.name, parsed.reference);
        const body = await this.store.read(manifest.digest);
        res.writeHead(200, {
          'Content-Type': manifest.mediaType,
          'Content-Length': body.length,
          'Docker-Content-Digest': manifest.digest,
        });
        res.end(req.method === 'HEAD' ? undefined : body);
        return;
      }
      await this.serveBlob(parsed.reference, req, res);
    } catch (error) {
      const registryError =
        error instanceof RegistryError
          ? error
          : new RegistryError(500, 'UNSUPPORTED', (error as Error).message ?? 'internal error');
      if (!(error instanceof RegistryError)) log(`error: ${registryError.message}`);
      const body = JSON.stringify({ errors: [{ code: registryError.code, message: registryError.message }] });
      if (res.headersSent) {
        res.destroy();
        return;
      }
      res.writeHead(registryError.status, {
        'Content-Type': 'application/json',
        'Content-Length': Buffer.byteLength(body),
      });
      res.end(req.method === 'HEAD' ? undefined : body);
    }
  }

  private async serveBlob(digest: string, req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (!this.store.has(digest))
      throw new RegistryError(404, 'BLOB_UNKNOWN', `blob ${digest} is not in the cache`);
    const path = this.store.path(digest);
    const { size } = await stat(path);
    const headers: Record<string, string | number> = {
      'Content-Type': 'application/octet-stream',
      'Docker-Content-Digest': digest,
      'Accept-Ranges': 'bytes',
      ETag: `"${digest}"`,
    };
    const range = parseRange(req.headers.range, size);
    if (range === 'unsatisfiable') {
      res.writeHead(416, { ...headers, 'Content-Range': `bytes */${size}` });
      res.end();
      return;
    }
    const [start, end] = range ?? [0, size - 1];
    const length = size === 0 ? 0 : end - start + 1;
    res.writeHead(range ? 206 : 200, {
      ...headers,
      'Content-Length': length,
      ...(range ? { 'Content-Range': `bytes ${start}-${end}/${size}` } : {}),
    });
    if (req.method === 'HEAD' || length === 0) {
      res.end();
      return;
    }
    createReadStream(path, { start, end }).pipe(res);
  }
}

/** One byte range of "bytes=a-b", "bytes=a-" or "bytes=-n"; multiple ranges are served whole. */
export function parseRange(
  header: string | undefined,
  size: number,
): [number, number] | 'unsatisfiable' | undefined {
  if (!header) return undefined;
  const match = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!match || (match[1] === '' && match[2] === '')) return undefined;
  let start: number;
  let end: number;
  if (match[1] === '') {
    const suffix = Number(match[2]);
    if (suffix === 0) return 'unsatisfiable';
    start = Math.max(0, size - suffix);
    end = size - 1;
  } else {
    start = Number(match[1]);
    end = match[2] === '' ? size - 1 : Math.min(Number(match[2]), size - 1);
  }
  if (start >= size || start > end) return 'unsatisfiable';
  return [start, end];
}

export function startRegistry(cache: ImageCache, port: number, host = '0.0.0.0'): Server {
  const server = createServer((req, res) => {
    void cache.handle(req, res);
  });
  server.listen(port, host);
  return server;
}
