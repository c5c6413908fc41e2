// Reads an image archive as `docker save` writes it, as a stream, and keeps its blobs on disk by
// digest. Two layouts exist: the classic docker-archive (manifest.json, <id>.json configs and
// <layer>/layer.tar) of Docker's own image store, and the OCI image layout (index.json and
// blobs/sha256/...) of the containerd image store. Either way the result is a registry manifest
// whose digest is the same for every export of the same image.

import { createHash } from 'node:crypto';
import { createWriteStream, existsSync } from 'node:fs';
import { mkdir, readdir, readFile, rename, rm, stat, unlink, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { once } from 'node:events';
import type { Readable } from 'node:stream';
import tar from 'tar-stream';

export const MEDIA_DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json';
export const MEDIA_DOCKER_MANIFEST_LIST = 'application/vnd.docker.distribution.manifest.list.v2+json';
export const MEDIA_DOCKER_CONFIG = 'application/vnd.docker.container.image.v1+json';
export const MEDIA_DOCKER_LAYER = 'application/vnd.docker.image.rootfs.diff.tar';
export const MEDIA_OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
export const MEDIA_OCI_INDEX = 'application/vnd.oci.image.index.v1+json';

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

export interface StoredManifest {
  digest: string;
  mediaType: string;
  size: number;
}

interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  platform?: Platform;
  annotations?: Record<string, string>;
}

/** A blob on disk: its size, and when it was last stored or served (its mtime). */
export interface BlobEntry {
  digest: string;
  size: number;
  lastUsed: number;
}

/** Called with a blob's digest as soon as it is known, before the blob is checked or kept. */
export type BlobListener = (digest: string) => void;

/**
 * Blobs by digest under one folder: blobs/sha256/<hex>, written once, never changed. A blob's mtime
 * is its last use: set when it is stored (again) and when it is served.
 */
export class BlobStore {
  constructor(readonly root: string) {}

  path(digest: string): string {
    const hex = parseDigest(digest);
    return join(this.root, 'blobs', 'sha256', hex);
  }

  has(digest: string): boolean {
    return existsSync(this.path(digest));
  }

  async read(digest: string): Promise<Buffer> {
    return readFile(this.path(digest));
  }

  /** Marks a blob as used now; false when it is not there (any more). */
  async touch(digest: string): Promise<boolean> {
    const now = new Date();
    let path: string;
    try {
      path = this.path(digest);
    } catch {
      return false; // not a digest this store holds
    }
    try {
      await utimes(path, now, now);
      return true;
    } catch (error) {
      // Not ours to touch (a blob left by root): there all the same.
      return (error as NodeJS.ErrnoException).code !== 'ENOENT';
    }
  }

  /** Every blob with its size and last use. */
  async entries(): Promise<BlobEntry[]> {
    const dir = join(this.root, 'blobs', 'sha256');
    const names = await readdir(dir).catch(() => [] as string[]);
    const entries: BlobEntry[] = [];
    for (const name of names) {
      if (!/^[a-f0-9]{64}$/.test(name)) continue;
      try {
        const info = await stat(join(dir, name));
        entries.push({ digest: `sha256:${name}`, size: info.size, lastUsed: info.mtimeMs });
      } catch {
        // removed meanwhile
      }
    }
    return entries;
  }

  /** Unlinks at once (no look first, as rm does): callers decide in the same tick that it may go. */
  async remove(digest: string): Promise<void> {
    await unlink(this.path(digest)).catch((error: NodeJS.ErrnoException) => {
      if (error.code !== 'ENOENT') throw error;
    });
  }

  /** Streams content into the store, hashing it on the way; returns its digest and size. */
  async put(
    content: AsyncIterable<Uint8Array>,
    expected?: string,
    onDigest?: BlobListener,
  ): Promise<{ digest: string; size: number }> {
    await mkdir(join(this.root, 'tmp'), { recursive: true });
    await mkdir(join(this.root, 'blobs', 'sha256'), { recursive: true });
    const temp = join(this.root, 'tmp', `${process.pid}-${Math.random().toString(36).slice(2)}`);
    const hash = createHash('sha256');
    let size = 0;
    const out = createWriteStream(temp);
    try {
      for await (const chunk of content) {
        hash.update(chunk);
        size += chunk.length;
        if (!out.write(chunk)) await once(out, 'drain');
      }
      out.end();
      await once(out, 'finish');
      const digest = `sha256:${hash.digest('hex')}`;
      if (expected && expected !== digest) throw new Error(`blob ${expected} has content ${digest}`);
      onDigest?.(digest);
      // A blob already there is used again; one evicted in the meantime is put back.
      if (await this.touch(digest)) await rm(temp, { force: true });
      else await rename(temp, this.path(digest));
      return { digest, size };
    } catch (error) {
      out.destroy();
      await rm(temp, { force: true });
      throw error;
    }
  }

  async putBuffer(content: Buffer, onDigest?: BlobListener): Promise<{ digest: string; size: number }> {
    const digest = `sha256:${createHash('sha256').update(content).digest('hex')}`;
    onDigest?.(digest);
    if (!(await this.touch(digest))) {
      await mkdir(join(this.root, 'blobs', 'sha256'), { recursive: true });
      const temp = `${this.path(digest)}.${process.pid}-${Math.random().toString(36).slice(2)}.tmp`;
      await writeFile(temp, content);
      await rename(temp, this.path(digest));
    }
    return { digest, size: content.length };
  }
}

const DIGEST = /^sha256:([a-f0-9]{64})$/;

/** The hex of a sha256 digest; anything else (other algorithms, path tricks) is refused. */
export function parseDigest(digest: string): string {
  const match = DIGEST.exec(digest);
  if (!match) throw new Error(`invalid digest "${digest}"`);
  return match[1]!;
}

interface ClassicManifestEntry {
  Config: string;
  RepoTags?: string[] | null;
  Layers: string[];
}

/** The registry manifest of a classic archive; its bytes depend only on the image's content. */
export function classicManifest(
  config: { digest: string; size: number },
  layers: { digest: string; size: number }[],
) {
  return Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MEDIA_DOCKER_MANIFEST,
      config: { mediaType: MEDIA_DOCKER_CONFIG, size: config.size, digest: config.digest },
      layers: layers.map((l) => ({ mediaType: MEDIA_DOCKER_LAYER, size: l.size, digest: l.digest })),
    }),
  );
}

function platformMatches(candidate: Platform | undefined, wanted: Platform): boolean {
  if (!candidate) return false;
  if (candidate.os !== wanted.os || candidate.architecture !== wanted.architecture) return false;
  return !wanted.variant || !candidate.variant || candidate.variant === wanted.variant;
}

/** Picks the manifest for a platform out of an OCI index or Docker manifest list. */
export function selectPlatform(manifests: Descriptor[], wanted: Platform): Descriptor | undefined {
  const images = manifests.filter(
    // Attestations are stored as manifests with platform unknown/unknown.
    (m) => m.annotations?.['vnd.docker.reference.type'] !== 'attestation-manifest',
  );
  return (
    images.find((m) => platformMatches(m.platform, wanted)) ?? (images.length === 1 ? images[0] : undefined)
  );
}

/**
 * Stores every blob of a `docker save` stream and returns the manifest to serve for the platform.
 * Entries are handled one at a time, as they arrive; nothing is held in memory but small JSON files.
 * `onBlob` hears of every blob the image stores, so that nothing evicts it while the import runs.
 */
export async function importArchive(
  stream: Readable,
  store: BlobStore,
  platform: Platform,
  onBlob?: BlobListener,
): Promise<StoredManifest> {
  const extract = tar.extract();
  const files = new Map<string, { digest: string; size: number }>();
  const small = new Map<string, Buffer>();

  extract.on('entry', (header, entry, next) => {
    const name = header.name.replace(/^\.\//, '');
    if (header.type !== 'file') {
      entry.resume();
      entry.on('end', next);
      return;
    }
    const done = (error?: unknown) => (error ? extract.destroy(error as Error) : next());
    if (
      name === 'manifest.json' ||
      name === 'index.json' ||
      name === 'repositories' ||
      name === 'oci-layout'
    ) {
      const chunks: Buffer[] = [];
      entry.on('data', (c: unknown) => chunks.push(c as Buffer));
      entry.on('end', () => {
        small.set(name, Buffer.concat(chunks));
        done();
      });
      entry.on('error', done);
      return;
    }
    const ociBlob = /^blobs\/sha256\/([a-f0-9]{64})$/.exec(name);
    store
      .put(entry as AsyncIterable<Uint8Array>, ociBlob ? `sha256:${ociBlob[1]}` : undefined, onBlob)
      .then((stored) => {
        files.set(name, stored);
        done();
      })
      .catch(done);
  });

  await new Promise<void>((resolve, reject) => {
    extract.on('finish', resolve);
    extract.on('error', reject);
    stream.on('error', reject);
    stream.pipe(extract as unknown as NodeJS.WritableStream);
  });

  const index = small.get('index.json');
  if (index) {
    // OCI layout: the manifests are blobs already; follow the index down to one platform.
    let descriptors = (JSON.parse(index.toString()) as { manifests: Descriptor[] }).manifests;
    for (let depth = 0; depth < 3; depth++) {
      const chosen =
        descriptors.length === 1 && !descriptors[0]!.platform
          ? descriptors[0]
          : selectPlatform(descriptors, platform);
      if (!chosen) throw new Error(`the image has no manifest for ${platform.os}/${platform.architecture}`);
      if (chosen.mediaType === MEDIA_OCI_INDEX || chosen.mediaType === MEDIA_DOCKER_MANIFEST_LIST) {
        descriptors = (
          JSON.parse((await store.read(chosen.digest)).toString()) as { manifests: Descriptor[] }
        ).manifests;
        continue;
      }
      if (!store.has(chosen.digest)) throw new Error(`the archive lacks manifest ${chosen.digest}`);
      return { digest: chosen.digest, mediaType: chosen.mediaType, size: chosen.size };
    }
    throw new Error('the image index nests too deep');
  }

  const manifestJson = small.get('manifest.json');
  if (!manifestJson) throw new Error('the archive has neither index.json nor manifest.json');
  const [entry] = JSON.parse(manifestJson.toString()) as ClassicManifestEntry[];
  if (!entry) throw new Error('the archive holds no image');
  const config = files.get(entry.Config);
  if (!config) throw new Error(`the archive lacks ${entry.Config}`);
  const layers = entry.Layers.map((path) => {
    const layer = files.get(path);
    if (!layer) throw new Error(`the archive lacks ${path}`);
    return layer;
  });
  const manifest = await store.putBuffer(classicManifest(config, layers), onBlob);
  return { digest: manifest.digest, mediaType: MEDIA_DOCKER_MANIFEST, size: manifest.size };
}
