// containerd inside a node: its configuration (pure), its start under the supervisor, and the
// import of the image archives every node holds from the start (the pod sandbox, CoreDNS, ...). The
// image build runs that import once and ships containerd's root (containerd-seed.ts); a node imports
// only what its root lacks.

import { chmod, readdir, mkdir } from 'node:fs/promises';
import { connect } from 'node:net';
import { join } from 'node:path';
import { execa } from 'execa';
import { writeFileAtomic } from '../shared/atomic-write.js';
import {
  IMAGE_CACHE,
  LOCAL_PATH_HELPER_IMAGE,
  LOCAL_PATH_PROVISIONER_IMAGE,
  PRELOADED_IMAGES_DIR,
} from '../shared/contract.js';
import { qualifiedReference } from '../shared/image-reference.js';
import { poll } from '../shared/poll.js';
import { log } from './log.js';
import type { Supervisor } from './supervisor.js';

export const CONTAINERD_SOCKET = '/run/containerd/containerd.sock';
export const CONTAINERD_ROOT = '/var/lib/containerd';
export const CONTAINERD_CONFIG = '/etc/containerd/config.toml';
export const REGISTRY_HOSTS_DIR = '/etc/containerd/certs.d';
export const K8S_NAMESPACE = 'k8s.io';

export interface ContainerdOptions {
  sandboxImage: string;
  /** Hosts that withhold CAP_SYS_RESOURCE refuse a negative oom_score_adj. */
  restrictOomScoreAdj: boolean;
  cgroupDriver: 'cgroupfs' | 'systemd';
  /** Where CNI plugins are looked up, in order; each is also in the plugins' CNI_PATH for delegation. */
  cniBinDirs: string[];
  cniConfDir: string;
  /** URL of the image cache that mirrors every registry, if any. */
  imageCache?: string;
  /** This cluster's token for the image cache. */
  imageCacheToken?: string;
}

function quote(value: string): string {
  return JSON.stringify(value);
}

/**
 * Preloaded images that no registry can give back, kept from the kubelet's image collection (which
 * removes unused images on a full disk): the local-path helper runs only while a volume is made or
 * removed, and nothing would be left to run it with.
 */
export const PINNED_PRELOADED_IMAGES: Record<string, string> = {
  'local-path-provisioner': LOCAL_PATH_PROVISIONER_IMAGE,
  'local-path-helper': LOCAL_PATH_HELPER_IMAGE,
};

/** Where containerd keeps its data and state and answers: a node's own, unless the seed's. */
export interface ContainerdFolders {
  root: string;
  state: string;
  socket: string;
}

const NODE_FOLDERS: ContainerdFolders = {
  root: CONTAINERD_ROOT,
  state: '/run/containerd',
  socket: CONTAINERD_SOCKET,
};

export function containerdConfig(options: ContainerdOptions, folders = NODE_FOLDERS): string {
  return `# Written by vind node-agent; rewritten at every start of the node.
version = 3
root = ${quote(folders.root)}
state = ${quote(folders.state)}

[grpc]
  address = ${quote(folders.socket)}

[plugins]
  [plugins.'io.containerd.cri.v1.images']
    snapshotter = "overlayfs"
    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = ${quote(options.sandboxImage)}
${Object.entries(PINNED_PRELOADED_IMAGES)
  .map(([key, image]) => `      ${key} = ${quote(image)}\n`)
  .join('')}    [plugins.'io.containerd.cri.v1.images'.registry]
      config_path = ${quote(REGISTRY_HOSTS_DIR)}

  [plugins.'io.containerd.cri.v1.runtime']
    restrict_oom_score_adj = ${options.restrictOomScoreAdj}
    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dirs = [${options.cniBinDirs.map(quote).join(', ')}]
      conf_dir = ${quote(options.cniConfDir)}
    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = "runc"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
          BinaryName = "/usr/local/bin/runc"
          SystemdCgroup = ${options.cgroupDriver === 'systemd'}

  [plugins.'io.containerd.grpc.v1.cri']
    disable_tcp_service = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
`;
}

export async function ctr(args: string[], address = CONTAINERD_SOCKET) {
  return execa('ctr', ['--address', address, ...args], { reject: false });
}

/** Whether something accepts connections on a unix socket. */
function socketAnswers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(path);
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

export async function waitForContainerd(timeoutMs: number, address = CONTAINERD_SOCKET): Promise<void> {
  // Its socket rather than `ctr version`: a process every 100 ms cost more CPU than the wait.
  await poll('containerd to answer', async () => ((await socketAnswers(address)) ? true : undefined), {
    timeoutMs,
    intervalMs: 50,
  });
  const result = await ctr(['version'], address);
  if (result.exitCode !== 0) throw new Error(`containerd does not answer: ${result.stderr.trim()}`);
}

/**
 * Every registry (the _default host folder) is mirrored by the image cache; containerd falls back to
 * the registry itself when the cache cannot serve an image. The cluster's token goes to the cache
 * alone, as a header of that host (the registries themselves never see it).
 */
export function mirrorHostsToml(cacheUrl: string, token?: string): string {
  const host = `host.${JSON.stringify(cacheUrl)}`;
  const lines = ['# Written by vind node-agent.', `[${host}]`, '  capabilities = ["pull", "resolve"]'];
  if (token) {
    lines.push(`  [${host}.header]`, `    ${IMAGE_CACHE.tokenHeader} = [${JSON.stringify(token)}]`);
  }
  return `${lines.join('\n')}\n`;
}

export async function startContainerd(supervisor: Supervisor, options: ContainerdOptions): Promise<void> {
  await mkdir('/etc/containerd', { recursive: true });
  await mkdir(REGISTRY_HOSTS_DIR, { recursive: true });
  if (options.imageCache) {
    await mkdir(join(REGISTRY_HOSTS_DIR, '_default'), { recursive: true });
    // It holds the token: for root alone (pods never see the node's /etc/containerd anyway).
    const hostsToml = join(REGISTRY_HOSTS_DIR, '_default', 'hosts.toml');
    await writeFileAtomic(hostsToml, mirrorHostsToml(options.imageCache, options.imageCacheToken), {
      mode: 0o600,
    });
    await chmod(hostsToml, 0o600);
  }
  await writeFileAtomic(CONTAINERD_CONFIG, containerdConfig(options));
  supervisor.start({ name: 'containerd', command: 'containerd', args: ['--config', CONTAINERD_CONFIG] });
  await waitForContainerd(60_000);
}

export interface ImportOptions {
  /** The containerd to import into. */
  address?: string;
  /**
   * Let containerd's garbage collector drop each layer blob once it is unpacked: the snapshot is
   * what runs, and the blob would hold the same bytes a second time.
   */
  discardLayers?: boolean;
}

/**
 * Imports the image archives in the node image, skipping those containerd already holds, and
 * returns the references imported. A node image whose build seeded containerd ships no archives.
 */
export async function importPreloadedImages(options: ImportOptions = {}): Promise<string[]> {
  const archives = (await readdir(PRELOADED_IMAGES_DIR).catch(() => [] as string[])).filter((f) =>
    f.endsWith('.tar'),
  );
  if (archives.length === 0) return [];
  const present = await ctr(['-n', K8S_NAMESPACE, 'images', 'ls', '-q'], options.address);
  const known = new Set(present.stdout.split('\n').filter(Boolean));
  const imported = await Promise.all(
    archives.map(async (archive) => {
      const references = await archiveReferences(join(PRELOADED_IMAGES_DIR, archive));
      if (references.length > 0 && references.every((r) => known.has(r))) return [];
      const discard = options.discardLayers ? ['--local', '--discard-unpacked-layers'] : [];
      const result = await ctr(
        [
          '-n',
          K8S_NAMESPACE,
          'images',
          'import',
          '--platform',
          'linux/amd64',
          ...discard,
          join(PRELOADED_IMAGES_DIR, archive),
        ],
        options.address,
      );
      if (result.exitCode !== 0) throw new Error(`importing ${archive}: ${result.stderr.trim()}`);
      log(`imported ${references.join(', ') || archive}`);
      return references;
    }),
  );
  return imported.flat();
}

/** Image references named in a docker-archive's manifest.json, read with tar. */
async function archiveReferences(archive: string): Promise<string[]> {
  const result = await execa('tar', ['-xOf', archive, 'manifest.json'], { reject: false });
  if (result.exitCode !== 0) return [];
  const manifest = JSON.parse(result.stdout) as { RepoTags?: string[] }[];
  return manifest.flatMap((m) => m.RepoTags ?? []).map(qualifiedReference);
}
