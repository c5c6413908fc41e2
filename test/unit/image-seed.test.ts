import { lstat, mkdir, mkdtemp, readFile, readlink, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  containerdRootFromSeed,
  LINKED_BLOB_BYTES,
  type SeedEntry,
  seededRootPlan,
  seedContainerdConfig,
  seedLayerProblems,
} from '../../node-agent/containerd-seed.js';
import { runImageSeed } from '../../node-agent/image-seed.js';
import { PAUSE_IMAGE, SEED } from '../../shared/contract.js';

// `tar --xattrs --xattrs-include='trusted.overlay.*' -cvvf /dev/null -C root .` on a tmpfs holding an
// opaque folder, a whiteout, a device that is not one, a link and a file.
const LISTING = `\
drwxr-xr-x  root/root         0 2026-11-23 01:02 ./
drwxr-xr-x* root/root         0 2026-11-23 01:02 ./d/
lrwxrwxrwx  root/root         0 2026-11-23 01:02 ./d/link -> f
crw-r--r--  root/root       1,3 2026-11-23 01:02 ./d/nul
crw-r--r--  root/root       0,0 2026-11-23 01:02 ./d/wh
-rw-r--r--  root/root         2 2026-11-23 01:02 ./d/f
`;

describe('seedLayerProblems', () => {
  it('names overlay whiteouts and entries with trusted.overlay.* attributes', () => {
    expect(seedLayerProblems(LISTING)).toEqual([
      './d/: trusted.overlay.* attributes',
      './d/wh: an overlay whiteout (character device 0/0)',
    ]);
  });

  it('finds nothing in a seed of plain files, links and other devices', () => {
    const clean = LISTING.split('\n')
      .filter((line) => !line.includes('./d/wh'))
      .map((line) => line.replace('drwxr-xr-x*', 'drwxr-xr-x '))
      .join('\n');
    expect(seedLayerProblems(clean)).toEqual([]);
  });
});

const SNAPSHOTS = 'io.containerd.snapshotter.v1.overlayfs/snapshots';
const BLOBS = 'io.containerd.content.v1.content/blobs/sha256';

function dir(path: string): SeedEntry {
  return { path, type: 'directory', size: 4096, mode: 0o700 };
}

function file(path: string, size = 400): SeedEntry {
  return { path, type: 'file', size, mode: 0o444 };
}

describe('seededRootPlan', () => {
  it('copies the databases and small blobs, links snapshot folders and large blobs', () => {
    const listing: SeedEntry[] = [
      dir('io.containerd.content.v1.content'),
      dir('io.containerd.content.v1.content/blobs'),
      dir(BLOBS),
      file(`${BLOBS}/${'a'.repeat(64)}`),
      file(`${BLOBS}/${'b'.repeat(64)}`, LINKED_BLOB_BYTES + 1),
      dir('io.containerd.metadata.v1.bolt'),
      file('io.containerd.metadata.v1.bolt/meta.db', 262_144),
      dir('io.containerd.snapshotter.v1.overlayfs'),
      file('io.containerd.snapshotter.v1.overlayfs/metadata.db', 32_768),
      dir(SNAPSHOTS),
      dir(`${SNAPSHOTS}/1`),
      dir(`${SNAPSHOTS}/1/fs`),
      file(`${SNAPSHOTS}/1/fs/coredns`, 78_000_000),
      dir(`${SNAPSHOTS}/2`),
    ];
    const plan = seededRootPlan(listing).map((step) => `${step.action} ${step.entry.path}`);
    expect(plan).toEqual([
      'mkdir io.containerd.content.v1.content',
      'mkdir io.containerd.content.v1.content/blobs',
      `mkdir ${BLOBS}`,
      `copy ${BLOBS}/${'a'.repeat(64)}`,
      `link ${BLOBS}/${'b'.repeat(64)}`,
      'mkdir io.containerd.metadata.v1.bolt',
      'copy io.containerd.metadata.v1.bolt/meta.db',
      'mkdir io.containerd.snapshotter.v1.overlayfs',
      'copy io.containerd.snapshotter.v1.overlayfs/metadata.db',
      `mkdir ${SNAPSHOTS}`,
      `link ${SNAPSHOTS}/1`,
      `link ${SNAPSHOTS}/2`,
    ]);
  });

  it('never links a database, whatever its size', () => {
    const big = file('io.containerd.metadata.v1.bolt/meta.db', 64 * LINKED_BLOB_BYTES);
    expect(seededRootPlan([big]).map((step) => step.action)).toEqual(['copy']);
  });
});

describe('containerdRootFromSeed', () => {
  let scratch: string;
  let seed: string;
  let root: string;

  beforeEach(async () => {
    scratch = await mkdtemp(join(tmpdir(), 'vind-seed-'));
    seed = join(scratch, 'seed');
    root = join(scratch, 'var', 'lib', 'containerd');
    await mkdir(join(seed, 'io.containerd.metadata.v1.bolt'), { recursive: true });
    await writeFile(join(seed, 'io.containerd.metadata.v1.bolt', 'meta.db'), 'metadata');
    await mkdir(join(seed, SNAPSHOTS, '1', 'fs'), { recursive: true });
    await writeFile(join(seed, SNAPSHOTS, '1', 'fs', 'pause'), 'binary');
    await writeFile(join(seed, 'io.containerd.snapshotter.v1.overlayfs', 'metadata.db'), 'snapshots');
    await mkdir(join(seed, BLOBS), { recursive: true });
    await writeFile(join(seed, BLOBS, 'c'.repeat(64)), '{}', { mode: 0o444 });
  });

  afterEach(async () => {
    await rm(scratch, { recursive: true, force: true });
  });

  it('makes a root of copies and links, then keeps it as it is', async () => {
    expect(await containerdRootFromSeed(seed, root)).toBe('seeded');
    const metadata = join(root, 'io.containerd.metadata.v1.bolt', 'meta.db');
    expect((await lstat(metadata)).isFile()).toBe(true);
    expect((await lstat(join(root, BLOBS, 'c'.repeat(64)))).mode & 0o777).toBe(0o444);
    expect(await readlink(join(root, SNAPSHOTS, '1'))).toBe(join(seed, SNAPSHOTS, '1'));
    expect(await readFile(join(root, SNAPSHOTS, '1', 'fs', 'pause'), 'utf8')).toBe('binary');

    // A root in use is never made again: what containerd wrote there stays.
    await writeFile(metadata, 'written by containerd');
    expect(await containerdRootFromSeed(seed, root)).toBe('kept');
    expect(await readFile(metadata, 'utf8')).toBe('written by containerd');
  });

  it('replaces a root that never held metadata, and leaves nothing aside', async () => {
    await mkdir(join(root, 'tmpmounts'), { recursive: true });
    expect(await containerdRootFromSeed(seed, root)).toBe('seeded');
    expect((await lstat(join(root, 'io.containerd.metadata.v1.bolt', 'meta.db'))).isFile()).toBe(true);
    await expect(lstat(`${root}.seeding`)).rejects.toThrow(/ENOENT/);
  });

  it('does nothing in an image without a seed', async () => {
    expect(await containerdRootFromSeed(join(scratch, 'none'), root)).toBe('no seed');
    await expect(lstat(root)).rejects.toThrow(/ENOENT/);
  });
});

describe('seedContainerdConfig', () => {
  it("is a node's configuration with every folder containerd makes on the seeding tmpfs", () => {
    const config = seedContainerdConfig();
    expect(config).toContain(`root = "${SEED.work}/containerd"`);
    expect(config).toContain(`state = "${SEED.work}/state"`);
    expect(config).toContain(`address = "${SEED.work}/containerd.sock"`);
    expect(config).toContain(`conf_dir = "${SEED.work}/cni/net.d"`);
    expect(config).toContain(`path = "${SEED.work}/opt"`);
    expect(config).toContain(`sandbox = "${PAUSE_IMAGE}"`);
    expect(config).not.toContain('/var/lib/containerd');
  });
});

describe('runImageSeed', () => {
  it('runs each seeder in turn and names the one that failed', async () => {
    const ran: string[] = [];
    const seeder = (what: string, fail = false) => ({
      what,
      seed: async () => {
        ran.push(what);
        if (fail) throw new Error('no space left');
      },
    });
    await expect(
      runImageSeed([seeder('images'), seeder('datastore', true), seeder('never')]),
    ).rejects.toThrow('seeding datastore: no space left');
    expect(ran).toEqual(['images', 'datastore']);
  });
});
