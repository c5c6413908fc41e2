// The preloaded images unpacked once, by the image build, instead of at every node's start.
//
// Build (`seedPreloadedImages`, in the seeding container): containerd runs with its root on that
// container's tmpfs, imports the archives and lets go of each layer blob once it is unpacked (the
// snapshot is what runs); it stops, the root is checked and copied to SEED.containerdRoot, and the
// archives are removed, so the committed image holds the images once. A tmpfs rather than the image's
// overlay: an overlay whiteout (a character device 0/0) or a trusted.overlay.* attribute written
// through an overlay, or shipped in a layer, is read as the overlay's own metadata, so the seed is
// refused when it holds either.
//
// Node start (`containerdRootFromSeed`): a node whose containerd root has no metadata yet gets one
// from the seed without copying the big parts. The bolt databases and small blobs are copied
// (containerd writes there); each committed snapshot folder is a symlink into the seed, so a pod's
// read-only lower layers stay in the image (an overlay may stack on the node's own) while its upper
// layer is on the node's volume. A root that exists (a restart, a wake) is used as it is.

import { existsSync } from 'node:fs';
import {
  chmod,
  copyFile,
  lstat,
  mkdir,
  readdir,
  readFile,
  readlink,
  rename,
  rm,
  symlink,
  writeFile,
} from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { PAUSE_IMAGE, PRELOADED_IMAGES_DIR, SEED } from '../shared/contract.js';
import {
  CONTAINERD_ROOT,
  containerdConfig,
  ctr,
  importPreloadedImages,
  K8S_NAMESPACE,
  waitForContainerd,
} from './containerd.js';
import { log } from './log.js';

/** containerd's metadata database: a root that holds it has been used. */
const METADATA_DB = 'io.containerd.metadata.v1.bolt/meta.db';
/** A committed overlayfs snapshot: the unpacked layer, read-only once committed. */
const SNAPSHOT_FOLDER = /^io\.containerd\.snapshotter\.v1\.overlayfs\/snapshots\/[^/]+$/;
const CONTENT_BLOB = /^io\.containerd\.content\.v1\.content\/blobs\/[^/]+\/[^/]+$/;
/** Blobs above this are linked: a layer blob the garbage collector has not taken yet. */
export const LINKED_BLOB_BYTES = 1024 * 1024;

export interface SeedEntry {
  /** Relative to the seed's root, with `/`. */
  path: string;
  type: 'directory' | 'file' | 'symlink';
  size: number;
  mode: number;
}

export interface SeedStep {
  action: 'mkdir' | 'copy' | 'link';
  entry: SeedEntry;
}

/** What a node does with one entry of the seed. */
export function seedAction(entry: SeedEntry): SeedStep['action'] {
  if (entry.type === 'directory') return SNAPSHOT_FOLDER.test(entry.path) ? 'link' : 'mkdir';
  if (entry.type === 'file' && CONTENT_BLOB.test(entry.path) && entry.size > LINKED_BLOB_BYTES) return 'link';
  return 'copy';
}

/** The steps that make a containerd root from the seed's listing (parents listed before children). */
export function seededRootPlan(entries: SeedEntry[]): SeedStep[] {
  const linked: string[] = [];
  const steps: SeedStep[] = [];
  for (const entry of entries) {
    if (linked.some((folder) => entry.path.startsWith(`${folder}/`))) continue;
    const action = seedAction(entry);
    if (action === 'link' && entry.type === 'directory') linked.push(entry.path);
    steps.push({ action, entry });
  }
  return steps;
}

/**
 * What in `tar --xattrs --xattrs-include='trusted.overlay.*' -cvv` output an image layer would
 * misread: overlay whiteouts (character devices 0/0) and entries with trusted.overlay.* attributes
 * (the `*` after the mode). One line each.
 */
export function seedLayerProblems(listing: string): string[] {
  const problems: string[] = [];
  for (const line of listing.split('\n')) {
    const match = /^([-a-z])[-rwxsStTl]{9}(\*?)\s+\S+\s+(\S+)\s+\S+\s+\S+\s+(.*)$/.exec(line);
    if (!match) continue;
    const [, type, attributes, size, name] = match;
    if (type === 'c' && size === '0,0') problems.push(`${name}: an overlay whiteout (character device 0/0)`);
    if (attributes === '*') problems.push(`${name}: trusted.overlay.* attributes`);
  }
  return problems;
}

async function listSeed(root: string): Promise<SeedEntry[]> {
  const entries: SeedEntry[] = [];
  const walk = async (relative: string): Promise<void> => {
    for (const name of (await readdir(join(root, relative))).sort()) {
      const path = relative ? `${relative}/${name}` : name;
      const info = await lstat(join(root, path));
      const type = info.isDirectory() ? 'directory' : info.isSymbolicLink() ? 'symlink' : 'file';
      const entry: SeedEntry = { path, type, size: info.size, mode: info.mode & 0o7777 };
      entries.push(entry);
      if (type === 'directory' && seedAction(entry) === 'mkdir') await walk(path);
    }
  };
  await walk('');
  return entries;
}

/**
 * Before containerd starts on a node: its root made from the seed in the image, unless the root was
 * used already or the image has no seed. Built aside and renamed into place, so a start cut short
 * leaves no half-made root behind.
 */
export async function containerdRootFromSeed(
  seed: string = SEED.containerdRoot,
  root: string = CONTAINERD_ROOT,
): Promise<'kept' | 'seeded' | 'no seed'> {
  if (existsSync(join(root, METADATA_DB))) return 'kept';
  if (!existsSync(join(seed, METADATA_DB))) return 'no seed';
  const started = performance.now();
  const building = `${root}.seeding`;
  await rm(building, { recursive: true, force: true });
  await mkdir(building, { recursive: true });
  const steps = seededRootPlan(await listSeed(seed));
  for (const { action, entry } of steps) {
    const from = join(seed, entry.path);
    const to = join(building, entry.path);
    if (action === 'link') await symlink(from, to);
    else if (action === 'mkdir') await mkdir(to);
    else if (entry.type === 'symlink') await symlink(await readlink(from), to);
    else await copyFile(from, to);
    if (action !== 'link' && entry.type !== 'symlink') await chmod(to, entry.mode);
  }
  // A root that holds no metadata never ran containerd: nothing in it to keep.
  await rm(root, { recursive: true, force: true });
  await rename(building, root);
  const count = (action: SeedStep['action']) => steps.filter((s) => s.action === action).length;
  log(
    `containerd root from the image's seed: ${count('copy')} files copied, ${count('link')} linked ` +
      `in ${Math.round(performance.now() - started)}ms`,
  );
  return 'seeded';
}

// ---- the build side, in the seeding container ----

const WORK_ROOT = join(SEED.work, 'containerd');
const WORK_SOCKET = join(SEED.work, 'containerd.sock');
const WORK_CONFIG = join(SEED.work, 'containerd.toml');
const WORK_LOG = join(SEED.work, 'containerd.log');

/**
 * A node's configuration (the CRI labels its images as a node's would, pinned ones included), with
 * every folder containerd makes on the tmpfs: nothing but the seed lands in the image.
 */
export function seedContainerdConfig(): string {
  const node = containerdConfig(
    {
      sandboxImage: PAUSE_IMAGE,
      restrictOomScoreAdj: true,
      cgroupDriver: 'cgroupfs',
      cniBinDirs: [join(SEED.work, 'cni', 'bin')],
      cniConfDir: join(SEED.work, 'cni', 'net.d'),
    },
    { root: WORK_ROOT, state: join(SEED.work, 'state'), socket: WORK_SOCKET },
  );
  return `${node}
  [plugins.'io.containerd.internal.v1.opt']
    path = ${JSON.stringify(join(SEED.work, 'opt'))}
`;
}

/** A synchronous garbage collection, through the removal of a tag made for it. */
async function collectGarbage(image: string): Promise<void> {
  const marker = 'vind.dev/seed-collect:done';
  const tagged = await ctr(['-n', K8S_NAMESPACE, 'images', 'tag', '--force', image, marker], WORK_SOCKET);
  if (tagged.exitCode !== 0) throw new Error(`tagging ${image}: ${tagged.stderr.trim()}`);
  const removed = await ctr(['-n', K8S_NAMESPACE, 'images', 'rm', '--sync', marker], WORK_SOCKET);
  if (removed.exitCode !== 0) throw new Error(`collecting garbage: ${removed.stderr.trim()}`);
}

async function lastLogLine(): Promise<string> {
  const lines = (await readFile(WORK_LOG, 'utf8').catch(() => '')).trim().split('\n');
  return lines.at(-1) ?? '';
}

export async function seedPreloadedImages(): Promise<void> {
  await mkdir(WORK_ROOT, { recursive: true });
  await writeFile(WORK_CONFIG, seedContainerdConfig());
  const containerd = execa('containerd', ['--config', WORK_CONFIG], {
    reject: false,
    stdin: 'ignore',
    stdout: { file: WORK_LOG },
    stderr: { file: WORK_LOG },
  });
  let imported: string[];
  try {
    await waitForContainerd(60_000, WORK_SOCKET).catch(async (error: Error) => {
      throw new Error(`${error.message} (containerd: ${await lastLogLine()})`);
    });
    imported = await importPreloadedImages({ address: WORK_SOCKET, discardLayers: true });
    if (imported.length === 0) throw new Error(`no image archives in ${PRELOADED_IMAGES_DIR}`);
    await collectGarbage(imported[0]!);
  } finally {
    containerd.kill('SIGTERM');
  }
  const stopped = await containerd;
  if (stopped.exitCode !== 0) {
    throw new Error(`containerd ended with ${stopped.exitCode ?? stopped.signal}: ${await lastLogLine()}`);
  }

  const listing = await execa(
    'tar',
    ['--xattrs', '--xattrs-include=trusted.overlay.*', '-cvvf', '/dev/null', '-C', WORK_ROOT, '.'],
    { reject: false },
  );
  if (listing.exitCode !== 0) throw new Error(`listing the seed: ${listing.stderr.trim()}`);
  const problems = seedLayerProblems(listing.stdout);
  if (problems.length > 0) {
    throw new Error(
      `the seed holds what an image layer would misread as overlay metadata: ${problems.slice(0, 3).join('; ')}`,
    );
  }

  await rm(SEED.containerdRoot, { recursive: true, force: true });
  await mkdir(SEED.dir, { recursive: true });
  const copied = await execa('cp', ['-a', WORK_ROOT, SEED.containerdRoot], { reject: false });
  if (copied.exitCode !== 0) throw new Error(`copying the seed: ${copied.stderr.trim()}`);
  // The seed holds these images now; the archives would only be the same bytes again.
  await rm(PRELOADED_IMAGES_DIR, { recursive: true, force: true });
  log(`seeded containerd with ${imported.join(', ')}`);
}
