// The images of the default StorageClass, preloaded on every node as CoreDNS's is: local-path-provisioner,
// compiled from its Go module, and the shell its helper pods run to make and remove a volume's folder
// on a node: the static busybox of Debian's busybox-static, downloaded with apt. No registry is needed,
// and the package's version and SHA256 go into the node image's inputs hash, so a new Debian revision
// makes a new image.

import { createHash } from 'node:crypto';
import { copyFile, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { LOCAL_PATH_HELPER_IMAGE, LOCAL_PATH_PROVISIONER_IMAGE } from '../shared/contract.js';
import { VindError } from '../shared/errors.js';
import { type ArchiveFile, buildDockerArchive } from './docker-archive.js';
import { type BuildDirs, cachedBinaries, type Note } from './go-build.js';
import { BUSYBOX_PACKAGE } from './recipe.js';
import { requireCommand, stageRunner } from './stage-runner.js';

export interface DebianPackage {
  name: string;
  version: string;
  sha256: string;
}

/**
 * The candidate of NAME in the output of `apt-cache show --no-all-versions NAME...`: the version and
 * SHA256 of its stanza (one per package asked for).
 */
export function parseAptShow(name: string, text: string): DebianPackage | undefined {
  const stanza = text.split(/\n\s*\n/).find((s) => s.split('\n').includes(`Package: ${name}`)) ?? '';
  const field = (key: string) => new RegExp(`^${key}: *(\\S+)$`, 'm').exec(stanza)?.[1];
  const version = field('Version');
  const sha256 = field('SHA256');
  if (field('Package') !== name || !version || !sha256 || !/^[0-9a-f]{64}$/.test(sha256)) return undefined;
  return { name, version, sha256 };
}

/** What apt here would download; read before the inputs hash is made, from apt's lists (no network). */
export async function busyboxPackage(): Promise<DebianPackage> {
  const hint = 'the local-path helper image is built from a Debian package (a Debian or Ubuntu host)';
  await requireCommand('apt-cache', hint);
  const shown = await execa('apt-cache', ['show', '--no-all-versions', BUSYBOX_PACKAGE], { reject: false });
  const found = parseAptShow(BUSYBOX_PACKAGE, shown.stdout);
  if (!found) {
    throw new VindError(
      `apt knows no ${BUSYBOX_PACKAGE} here (the local-path helper image is built from it): run \`sudo apt-get update\``,
    );
  }
  return found;
}

/** Where the extracted package keeps what the helper image needs. */
const BUSYBOX_FILES = { binary: 'bin/busybox', copyright: `usr/share/doc/${BUSYBOX_PACKAGE}/copyright` };

/**
 * Downloads the package once per version and SHA256, checks the file against the SHA256 apt listed,
 * and keeps busybox, its copyright and its list of applets in a cached folder, which it returns.
 */
export async function fetchBusybox(dirs: BuildDirs, pkg: DebianPackage, note: Note): Promise<string> {
  const runner = await stageRunner(dirs.logDir, 'busybox');
  const folder = `${pkg.name}-${pkg.version.replace(/[^A-Za-z0-9.+-]/g, '_')}`;
  const { dir, cached } = await cachedBinaries(dirs.cacheDir, folder, pkg.sha256, async (outDir) => {
    await requireCommand('apt-get', 'the local-path helper image is built from a Debian package');
    await requireCommand('dpkg-deb', 'the local-path helper image is built from a Debian package');
    await mkdir(join(dirs.cacheDir, 'tmp'), { recursive: true });
    const work = await mkdtemp(join(dirs.cacheDir, 'tmp', 'busybox-'));
    try {
      await runner.run('apt-get', ['download', `${pkg.name}=${pkg.version}`], { cwd: work });
      const deb = (await readdir(work)).find((f) => f.endsWith('.deb'));
      if (!deb) throw runner.fail(`apt-get download ${pkg.name}=${pkg.version} left no .deb`);
      const actual = createHash('sha256')
        .update(await readFile(join(work, deb)))
        .digest('hex');
      if (actual !== pkg.sha256) {
        throw runner.fail(`${deb} has SHA256 ${actual}, apt listed ${pkg.sha256}`);
      }
      const root = join(work, 'root');
      await runner.run('dpkg-deb', ['-x', join(work, deb), root]);
      await copyFile(join(root, BUSYBOX_FILES.binary), join(outDir, 'busybox'));
      await copyFile(join(root, BUSYBOX_FILES.copyright), join(outDir, 'copyright'));
      // The applets and where busybox's own installer would link them (bin/sh, usr/bin/env, ...).
      const { stdout } = await runner.run(join(outDir, 'busybox'), ['--list-full']);
      await writeFile(join(outDir, 'applets'), `${stdout.trim()}\n`);
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  });
  if (cached) note('cached');
  return dir;
}

/** The helper image's files: busybox, a link to it for every applet, and the package's copyright. */
export function helperImageFiles(busybox: Buffer, applets: string[], copyright: Buffer): ArchiveFile[] {
  const links = applets
    .map((path) => path.trim().replace(/^\/+/, ''))
    .filter((path) => path !== '' && path !== BUSYBOX_FILES.binary)
    .map((path) => ({ path, content: Buffer.alloc(0), mode: 0o777, linkTarget: `/${BUSYBOX_FILES.binary}` }));
  return [
    { path: BUSYBOX_FILES.binary, content: busybox, mode: 0o755 },
    ...links,
    { path: BUSYBOX_FILES.copyright, content: copyright, mode: 0o644 },
  ];
}

/** The two docker-archives to preload: file name and content. */
export async function localPathArchives(
  provisionerBinary: string,
  busyboxDir: string,
): Promise<{ file: string; tar: Buffer }[]> {
  const provisioner = await buildDockerArchive({
    reference: LOCAL_PATH_PROVISIONER_IMAGE,
    files: [{ path: 'local-path-provisioner', content: await readFile(provisionerBinary), mode: 0o755 }],
    entrypoint: ['/local-path-provisioner'],
  });
  const applets = (await readFile(join(busyboxDir, 'applets'), 'utf8')).split('\n');
  const helper = await buildDockerArchive({
    reference: LOCAL_PATH_HELPER_IMAGE,
    files: helperImageFiles(
      await readFile(join(busyboxDir, 'busybox')),
      applets,
      await readFile(join(busyboxDir, 'copyright')),
    ),
    entrypoint: ['/bin/sh'],
    env: ['PATH=/usr/sbin:/usr/bin:/sbin:/bin'],
  });
  return [
    { file: 'local-path-provisioner.tar', tar: provisioner.tar },
    { file: 'local-path-helper.tar', tar: helper.tar },
  ];
}
