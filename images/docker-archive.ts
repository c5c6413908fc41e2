// Writes a single-layer image in the docker-archive layout (what `docker save` writes and
// `ctr images import` reads). The pause and CoreDNS images are built this way from binaries we
// compiled, without a registry and without leaving images in the host's Docker.

import { createHash } from 'node:crypto';
import tar from 'tar-stream';

export interface ArchiveFile {
  /** Path inside the image, without a leading slash. */
  path: string;
  content: Buffer;
  mode: number;
  /** Makes the entry a symbolic link to this target; content is ignored. */
  linkTarget?: string;
}

export interface ImageSpec {
  reference: string;
  files: ArchiveFile[];
  entrypoint: string[];
  cmd?: string[];
  user?: string;
  env?: string[];
  exposedPorts?: string[];
  architecture?: string;
  /** Fixed so that the same inputs give the same image id. */
  created?: string;
}

export interface BuiltArchive {
  tar: Buffer;
  imageId: string;
  layerDiffId: string;
}

const FIXED_TIME = new Date('2000-01-01T00:00:00Z');

function sha256(data: Buffer | string): string {
  return createHash('sha256').update(data).digest('hex');
}

async function packToBuffer(add: (pack: tar.Pack) => void): Promise<Buffer> {
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  const done = new Promise<Buffer>((resolve, reject) => {
    pack.on('data', (chunk: unknown) => chunks.push(chunk as Buffer));
    pack.on('end', () => resolve(Buffer.concat(chunks)));
    pack.on('error', reject);
  });
  add(pack);
  pack.finalize();
  return done;
}

/** Parent directories every file needs, in order, so the layer unpacks on any snapshotter. */
export function parentDirectories(paths: string[]): string[] {
  const dirs = new Set<string>();
  for (const path of paths) {
    const parts = path.split('/').slice(0, -1);
    for (let i = 1; i <= parts.length; i++) dirs.add(parts.slice(0, i).join('/'));
  }
  return [...dirs].sort();
}

export async function buildLayer(files: ArchiveFile[]): Promise<Buffer> {
  const sorted = [...files].sort((a, b) => a.path.localeCompare(b.path));
  return packToBuffer((pack) => {
    for (const dir of parentDirectories(sorted.map((f) => f.path))) {
      pack.entry({ name: `${dir}/`, type: 'directory', mode: 0o755, mtime: FIXED_TIME, uid: 0, gid: 0 });
    }
    for (const file of sorted) {
      const header = { name: file.path, mode: file.mode, mtime: FIXED_TIME, uid: 0, gid: 0 };
      if (file.linkTarget) pack.entry({ ...header, type: 'symlink', linkname: file.linkTarget });
      else pack.entry(header, file.content);
    }
  });
}

export async function buildDockerArchive(spec: ImageSpec): Promise<BuiltArchive> {
  const layer = await buildLayer(spec.files);
  const layerHex = sha256(layer);
  const config = {
    architecture: spec.architecture ?? 'amd64',
    os: 'linux',
    created: spec.created ?? FIXED_TIME.toISOString(),
    config: {
      Entrypoint: spec.entrypoint,
      Cmd: spec.cmd ?? null,
      Env: spec.env ?? ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'],
      User: spec.user ?? '',
      ExposedPorts: spec.exposedPorts ? Object.fromEntries(spec.exposedPorts.map((p) => [p, {}])) : undefined,
      WorkingDir: '/',
    },
    rootfs: { type: 'layers', diff_ids: [`sha256:${layerHex}`] },
    history: [{ created: spec.created ?? FIXED_TIME.toISOString(), created_by: 'vind image build' }],
  };
  const configJson = JSON.stringify(config);
  const configHex = sha256(configJson);
  const manifest = [
    { Config: `${configHex}.json`, RepoTags: [spec.reference], Layers: [`${layerHex}/layer.tar`] },
  ];
  const archive = await packToBuffer((pack) => {
    const entry = { mtime: FIXED_TIME, uid: 0, gid: 0, mode: 0o644 };
    pack.entry({ ...entry, name: `${layerHex}/`, type: 'directory', mode: 0o755 });
    pack.entry({ ...entry, name: `${layerHex}/layer.tar` }, layer);
    pack.entry({ ...entry, name: `${configHex}.json` }, configJson);
    pack.entry({ ...entry, name: 'manifest.json' }, JSON.stringify(manifest));
  });
  return { tar: archive, imageId: `sha256:${configHex}`, layerDiffId: `sha256:${layerHex}` };
}
