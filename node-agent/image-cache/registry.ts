// The read side of the OCI distribution API, served from the host's Docker images. Every node's
// containerd uses it as a mirror for every registry; containerd names the registry it wanted in
// the `ns` query parameter, so /v2/library/redis/manifests/7?ns=docker.io is docker.io/library/redis:7.
// Every request carries a cluster's token (IMAGE_CACHE.tokenHeader), or is refused. The blobs stay
// under a size limit: after each import, the least recently used go, except those being served and
// those of an image being imported. Next to the registry, one endpoint of vind's own,
// PUT HOST_PORTS_PATH: a cluster's LoadBalancer ports to publish on the Docker host, checked here
// and handed to the engine broker, which alone talks to Docker.

import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, readdir, readFile, rm, stat } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { writeFileAtomic } from '../../shared/atomic-write.js';
import {
  HOST_PORTS_PATH,
  type PowerAnswer,
  type PowerOperation,
  SLEEP_PATH,
  WAKE_PATH,
  type HostPortForward,
  IMAGE_CACHE,
  type PublishedForward,
} from '../../shared/contract.js';
import { parseImageReference, qualifiedReference } from '../../shared/image-reference.js';
import { log } from '../log.js';
import { BlobStore, importArchive, parseDigest, type Platform, type StoredManifest } from './archive.js';
import { PowerError } from './cluster-power.js';
import { HostPortError, parseHostPortBody, readBody } from './host-port-spec.js';
import { readCacheLimit } from './limit.js';
import { TokenStore } from './tokens.js';

/** The host's Docker as the registry sees it; in the cache container, the engine broker's client. */
export interface ImageSource {
  inspect(reference: string): Promise<{ Id: string } | undefined>;
  export(reference: string): Promise<NodeJS.ReadableStream>;
  /** Pulls onto the host; the credentials are chosen by the reference's registry, by whoever holds them. */
  pull(reference: string): Promise<void>;
}

/** Who may use the registry: the value of the token header decides. */
export interface TokenCheck {
  accepts(header: string | string[] | undefined): Promise<boolean>;
  /** Whose token it is; without it, no request names a cluster, and host ports are refused. */
  clusterOf?(header: string | string[] | undefined): Promise<string | undefined>;
}

/** Publishes a cluster's LoadBalancer ports on the Docker host; in the cache container, the broker. */
export interface HostPortPublisher {
  /** The whole set the cluster wants; a HostPortError carries the status of a refusal. */
  publish(cluster: string, forwards: HostPortForward[]): Promise<PublishedForward[]>;
}

/** Wakes or pauses a cluster on its front door's word; in the cache container, the broker. */
export interface ClusterPowerClient {
  /** A PowerError carries the status of a refusal. */
  run(operation: PowerOperation, cluster: string): Promise<PowerAnswer>;
}

export interface ImageCacheOptions {
  platform?: Platform;
  /** Default: the tokens in <root>/tokens. */
  tokens?: TokenCheck;
  /** Default: none, and the host-port endpoint answers 502. */
  hostPorts?: HostPortPublisher;
  /** Default: none, and the wake and sleep endpoints answer 502. */
  power?: ClusterPowerClient;
  /** Bytes of blobs to keep. Default: <root>/limit, else the environment, else 20 GiB. */
  limit?: () => Promise<number>;
}

/** What `image-cache list` prints. */
export interface CacheListing {
  images: CachedImage[];
  /** Bytes of every blob stored. */
  used: number;
  limit: number;
}

type MetaKind = 'images' | 'refs' | 'manifests';

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
  | 'UNAUTHORIZED'
  | 'NAME_INVALID'
  | 'TAG_INVALID'
  | 'DIGEST_INVALID'
  | 'MANIFEST_UNKNOWN'
  | 'BLOB_UNKNOWN'
  | 'UNSUPPORTED';

const TOKEN_HEADER = IMAGE_CACHE.tokenHeader.toLowerCase();

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

/**
 * The image a tag request names, in the one form the engine broker takes (docker.io/library/x:1).
 * A registry that would not read back as the registry (a name without a dot, colon or "localhost"
 * reads as a Docker Hub path) is refused rather than fetched from somewhere else.
 */
export function tagReference(registry: string, name: string, tag: string): string {
  const text = `${registry}/${name}:${tag}`;
  try {
    const parsed = parseImageReference(text);
    const wanted = registry === 'index.docker.io' ? 'docker.io' : registry;
    if (parsed.registry !== wanted) throw new Error(`"${registry}" does not read as a registry`);
    return qualifiedReference(text);
  } catch (error) {
    throw new RegistryError(400, 'NAME_INVALID', `invalid image ${text}: ${(error as Error).message}`);
  }
}

export function hostPlatform(): Platform {
  const architecture = (
    { x64: 'amd64', arm64: 'arm64', arm: 'arm', s390x: 's390x', ppc64: 'ppc64le' } as Record<string, string>
  )[process.arch];
  return { os: 'linux', architecture: architecture ?? process.arch };
}

export class ImageCache {
  readonly store: BlobStore;
  private readonly platform: Platform;
  private readonly tokens: TokenCheck;
  private readonly hostPorts?: HostPortPublisher;
  private readonly power?: ClusterPowerClient;
  private readonly limit: () => Promise<number>;
  private readonly exports = new Map<string, Promise<StoredManifest>>();
  /** Blobs being sent right now, with how many responses send each. */
  private readonly serving = new Map<string, number>();
  /** The blobs of each import under way, as they are stored. */
  private readonly importing = new Set<Set<string>>();
  private evicting: Promise<void> = Promise.resolve();

  constructor(
    readonly root: string,
    private readonly source: ImageSource,
    options: ImageCacheOptions = {},
  ) {
    this.store = new BlobStore(root);
    this.platform = options.platform ?? hostPlatform();
    this.tokens = options.tokens ?? new TokenStore(join(root, 'tokens'));
    this.hostPorts = options.hostPorts;
    this.power = options.power;
    this.limit = options.limit ?? (() => readCacheLimit(join(root, 'limit')));
  }

  private metaPath(kind: MetaKind, key: string): string {
    return join(this.root, kind, `${key}.json`);
  }

  private async writeMeta(kind: MetaKind, key: string, value: unknown): Promise<void> {
    await mkdir(join(this.root, kind), { recursive: true });
    // Concurrent requests may write the same entry: each through its own temporary file.
    await writeFileAtomic(this.metaPath(kind, key), JSON.stringify(value));
  }

  private async readMeta<T>(kind: MetaKind, key: string): Promise<T | undefined> {
    try {
      return JSON.parse(await readFile(this.metaPath(kind, key), 'utf8')) as T;
    } catch {
      return undefined;
    }
  }

  private async metaKeys(kind: MetaKind): Promise<string[]> {
    const names = await readdir(join(this.root, kind)).catch(() => [] as string[]);
    return names.filter((n) => n.endsWith('.json')).map((n) => n.slice(0, -5));
  }

  /** Every blob an image's manifest needs (itself, its config, its layers); undefined without the manifest. */
  private async blobsOf(manifestDigest: string): Promise<string[] | undefined> {
    try {
      const body = JSON.parse((await this.store.read(manifestDigest)).toString()) as {
        config?: { digest: string };
        layers?: { digest: string }[];
      };
      const config = body.config ? [body.config.digest] : [];
      return [manifestDigest, ...config, ...(body.layers ?? []).map((l) => l.digest)];
    } catch {
      return undefined;
    }
  }

  /** Whether every blob of an image is still stored (eviction may have taken some). */
  private async isComplete(manifestDigest: string): Promise<boolean> {
    const blobs = await this.blobsOf(manifestDigest);
    return (
      blobs !== undefined &&
      blobs.every((digest) => {
        try {
          return this.store.has(digest);
        } catch {
          return false; // not a sha256 digest: nothing this store could serve
        }
      })
    );
  }

  /** The manifest for an image of the host, exported once per image id; concurrent asks share one export. */
  private async manifestForImage(reference: string, imageId: string): Promise<StoredManifest> {
    const key = parseDigest(imageId);
    const known = await this.readMeta<StoredManifest>('images', key);
    if (known && (await this.isComplete(known.digest))) return known;
    let pending = this.exports.get(key);
    if (!pending) {
      pending = (async () => {
        const started = Date.now();
        const blobs = new Set<string>();
        this.importing.add(blobs);
        try {
          const archive = await this.source.export(reference);
          const manifest = await importArchive(
            archive as unknown as Readable,
            this.store,
            this.platform,
            (d) => blobs.add(d),
          );
          await this.writeMeta('images', key, manifest);
          await this.writeMeta('manifests', parseDigest(manifest.digest), manifest);
          log(
            `cached ${reference} (${imageId.slice(0, 19)}) as ${manifest.digest} in ${Date.now() - started}ms`,
          );
          // While this import still counts as under way: its own blobs are never the ones to go.
          await this.enforceLimit().catch((error: Error) => log(`eviction failed: ${error.message}`));
          return manifest;
        } finally {
          this.importing.delete(blobs);
        }
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
    const reference = tagReference(registry, name, tag);
    let image = await this.source.inspect(reference);
    if (!image) {
      try {
        log(`pulling ${reference} through the host's Docker`);
        await this.source.pull(reference);
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
    if (known && (await this.isComplete(digest))) return known;
    throw new RegistryError(404, 'MANIFEST_UNKNOWN', `manifest ${digest} is not in the cache`);
  }

  /** The images whose blobs are all stored, the bytes of every blob, and the limit. */
  async list(): Promise<CacheListing> {
    const images: CachedImage[] = [];
    for (const key of await this.metaKeys('refs')) {
      const entry = await this.readMeta<CachedImage>('refs', key);
      if (entry && (await this.isComplete(entry.manifest.digest))) images.push(entry);
    }
    images.sort((a, b) => a.reference.localeCompare(b.reference));
    const used = (await this.store.entries()).reduce((sum, blob) => sum + blob.size, 0);
    return { images, used, limit: await this.limit() };
  }

  /** Evicts least recently used blobs until the store is within its limit; one eviction at a time. */
  enforceLimit(): Promise<void> {
    const run = this.evicting.then(() => this.evict());
    this.evicting = run.catch(() => undefined);
    return run;
  }

  private inUse(digest: string): boolean {
    if (this.serving.has(digest)) return true;
    for (const blobs of this.importing) if (blobs.has(digest)) return true;
    return false;
  }

  private async evict(): Promise<void> {
    const limit = await this.limit();
    const blobs = await this.store.entries();
    let used = blobs.reduce((sum, blob) => sum + blob.size, 0);
    if (used <= limit) return;
    let removed = 0;
    let freed = 0;
    for (const blob of blobs.sort((a, b) => a.lastUsed - b.lastUsed)) {
      if (used <= limit) break;
      // Decided and unlinked in the same tick: a response that starts later finds the blob gone.
      if (this.inUse(blob.digest)) continue;
      await this.store.remove(blob.digest);
      used -= blob.size;
      freed += blob.size;
      removed++;
    }
    if (removed > 0) {
      log(`evicted ${removed} blobs (${freed} bytes): the cache holds ${used} of ${limit} bytes`);
      await this.forgetIncomplete();
    }
    if (used > limit) log(`the cache holds ${used} bytes, over its limit of ${limit}: the rest is in use`);
  }

  /** Drops what is known of images that lost a blob: the next request exports them again. */
  private async forgetIncomplete(): Promise<void> {
    for (const kind of ['images', 'manifests'] as const) {
      for (const key of await this.metaKeys(kind)) {
        const manifest = await this.readMeta<StoredManifest>(kind, key);
        if (manifest && !(await this.isComplete(manifest.digest))) {
          await rm(this.metaPath(kind, key), { force: true });
        }
      }
    }
    for (const key of await this.metaKeys('refs')) {
      const entry = await this.readMeta<CachedImage>('refs', key);
      if (entry && !(await this.isComplete(entry.manifest.digest))) {
        await rm(this.metaPath('refs', key), { force: true });
      }
    }
  }

  /**
   * PUT HOST_PORTS_PATH: the token names the cluster, the body is checked, the broker does the rest.
   * Answers 200 {forwards}, else {message} with 401, 405, 400 or 502 (Docker or the broker failed).
   */
  private async handleHostPorts(req: IncomingMessage, res: ServerResponse): Promise<void> {
    let cluster: string | undefined;
    let status: number;
    let answer: unknown;
    try {
      cluster = await this.tokens.clusterOf?.(req.headers[TOKEN_HEADER]);
      if (!cluster) {
        throw new HostPortError(401, `a cluster's token in ${IMAGE_CACHE.tokenHeader} is required`);
      }
      if (req.method !== 'PUT') throw new HostPortError(405, `${HOST_PORTS_PATH} takes PUT only`);
      if (!this.hostPorts)
        throw new HostPortError(502, 'this image cache has no engine broker for host ports');
      const forwards = parseHostPortBody(await readBody(req));
      status = 200;
      answer = { forwards: await this.hostPorts.publish(cluster, forwards) };
    } catch (error) {
      // A refusal is relayed as such; anything else the broker or Docker says is a 502.
      status = error instanceof HostPortError && [400, 401, 405].includes(error.status) ? error.status : 502;
      const message = ((error as Error).message ?? String(error)).split('\n')[0]!;
      if (status === 502) log(`host ports of ${cluster}: ${message}`);
      answer = { message };
    }
    const body = JSON.stringify(answer);
    // A body left unread (refused before or while reading it) is not read to its end: the connection goes.
    if (!req.complete) res.setHeader('Connection', 'close');
    res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
    res.end(body);
  }

  /**
   * POST WAKE_PATH or SLEEP_PATH, from a cluster's front door: the token names the cluster, which is
   * all the broker is told. Answers 200 PowerAnswer, else {message} with 401, 404, 405, 409 or 502.
   */
  private async handlePower(operation: PowerOperation, req: IncomingMessage, res: ServerResponse) {
    req.resume();
    let status = 200;
    let answer: unknown;
    try {
      const cluster = await this.tokens.clusterOf?.(req.headers[TOKEN_HEADER]);
      if (!cluster) throw new PowerError(401, `a cluster's token in ${IMAGE_CACHE.tokenHeader} is required`);
      if (req.method !== 'POST') throw new PowerError(405, `${req.url} takes POST only`);
      if (!this.power) throw new PowerError(502, 'this image cache has no engine broker for sleep and wake');
      answer = await this.power.run(operation, cluster);
    } catch (error) {
      status = error instanceof PowerError ? error.status : 502;
      answer = { message: ((error as Error).message ?? String(error)).split('\n')[0]! };
    }
    const body = JSON.stringify(answer);
    res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
    res.end(body);
  }

  async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0];
    if (path === HOST_PORTS_PATH) {
      await this.handleHostPorts(req, res);
      return;
    }
    if (path === WAKE_PATH || path === SLEEP_PATH) {
      await this.handlePower(path === WAKE_PATH ? 'wake' : 'sleep', req, res);
      return;
    }
    res.setHeader('Docker-Distribution-API-Version', 'registry/2.0');
    try {
      if (!(await this.tokens.accepts(req.headers[TOKEN_HEADER]))) {
        throw new RegistryError(
          401,
          'UNAUTHORIZED',
          `a cluster's token in ${IMAGE_CACHE.tokenHeader} is required`,
        );
      }
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
        // The whole image counts as used: its blobs are asked for next.
        for (const digest of (await this.blobsOf(manifest.digest)) ?? []) await this.store.touch(digest);
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

  /** Counts a blob as in use until the response is over. */
  private markServing(digest: string, res: ServerResponse): void {
    this.serving.set(digest, (this.serving.get(digest) ?? 0) + 1);
    res.once('close', () => {
      const left = (this.serving.get(digest) ?? 1) - 1;
      if (left > 0) this.serving.set(digest, left);
      else this.serving.delete(digest);
    });
  }

  private async serveBlob(digest: string, req: IncomingMessage, res: ServerResponse): Promise<void> {
    const missing = () => new RegistryError(404, 'BLOB_UNKNOWN', `blob ${digest} is not in the cache`);
    this.markServing(digest, res);
    // The touch is the blob's last use, and tells whether it is there at all.
    if (!(await this.store.touch(digest))) throw missing();
    const path = this.store.path(digest);
    let size: number;
    try {
      size = (await stat(path)).size;
    } catch {
      throw missing(); // evicted a moment before this response began
    }
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
    const content = createReadStream(path, { start, end });
    content.on('error', () => res.destroy());
    content.pipe(res);
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
