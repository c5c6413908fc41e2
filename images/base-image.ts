// The Debian base of the node image: debootstrap of the recipe's packages, cleaned, imported through
// the engine as vind/base:<suite>-<hash of its inputs>, so a changed package list makes a new base.

import { mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { VindError } from '../shared/errors.js';
import type { BuildReporter, ImageEngine } from './engine.js';
import type { BuildDirs } from './go-build.js';
import { inputsHash, shortHash } from './inputs.js';
import { CRIU_REMOVALS, criuWrapper, unpackCriu } from './criu.js';
import { ROOTFS_REMOVALS } from './node-dockerfile.js';
import { BASE_IMAGE_REPOSITORY, CNI_PLUGINS_KEPT, CRIU, DEBIAN_PACKAGES, DEBIAN_SUITE } from './recipe.js';
import { requireCommand, StageFailure, stageRunner } from './stage-runner.js';

export function baseImageReference(): string {
  const hash = inputsHash({
    suite: DEBIAN_SUITE,
    packages: DEBIAN_PACKAGES.join(','),
    removals: ROOTFS_REMOVALS.join(','),
    cni: CNI_PLUGINS_KEPT.join(','),
    criu: `${JSON.stringify(CRIU)}\n${CRIU_REMOVALS.join(',')}\n${criuWrapper()}`,
  });
  return `${BASE_IMAGE_REPOSITORY}:${DEBIAN_SUITE}-${shortHash(hash)}`;
}

export async function ensureBaseImage(
  engine: ImageEngine,
  dirs: BuildDirs,
  reference: string,
  reporter: BuildReporter,
): Promise<void> {
  if (await engine.inspectImage(reference)) return;
  await reporter.step(`debootstrap Debian ${DEBIAN_SUITE} base (${reference})`, async () => {
    if (process.getuid?.() !== 0) {
      throw new VindError('building the base root file system needs root (debootstrap): run it with sudo');
    }
    await requireCommand('debootstrap', 'install it with `sudo apt-get install debootstrap`');
    // CRIU comes from another Debian suite, fetched with apt (a sources list of its own) and unpacked.
    for (const command of ['apt-get', 'apt-cache', 'dpkg-deb']) {
      await requireCommand(command, 'the base image is built on a Debian or Ubuntu host');
    }
    const runner = await stageRunner(dirs.logDir, 'base');
    await mkdir(join(dirs.cacheDir, 'tmp'), { recursive: true });
    const root = await mkdtemp(join(dirs.cacheDir, 'tmp', 'rootfs-'));
    const criuWork = await mkdtemp(join(dirs.cacheDir, 'tmp', 'criu-'));
    try {
      const mirror = process.env.VIND_DEBIAN_MIRROR ?? 'http://deb.debian.org/debian';
      await runner.run('debootstrap', [
        '--variant=minbase',
        `--include=${DEBIAN_PACKAGES.join(',')}`,
        DEBIAN_SUITE,
        root,
        mirror,
      ]);
      for (const path of ROOTFS_REMOVALS) await rm(join(root, path), { recursive: true, force: true });
      // apt inside a node still works: it needs these folders to exist.
      await mkdir(join(root, 'var/lib/apt/lists/partial'), { recursive: true });
      await mkdir(join(root, 'var/cache/apt/archives/partial'), { recursive: true });
      await unpackCriu(
        runner,
        root,
        criuWork,
        mirror,
        join(root, 'usr/share/keyrings/debian-archive-keyring.gpg'),
      );
      const cniDir = join(root, 'usr/lib/cni');
      for (const plugin of await readdir(cniDir)) {
        if (!CNI_PLUGINS_KEPT.includes(plugin)) await rm(join(cniDir, plugin), { force: true });
      }
      const tarProcess = execa('tar', ['--numeric-owner', '-C', root, '-cf', '-', '.'], {
        stdout: 'pipe',
        reject: true,
        stderr: { file: runner.logFile, append: true },
        buffer: false,
      });
      const imported = engine.importRootfs(tarProcess.stdout, reference, [
        'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
        'CMD ["/bin/bash"]',
      ]);
      const [packError, importError] = await Promise.all([
        tarProcess.then(
          () => undefined,
          (error: Error) => error,
        ),
        imported.then(
          () => undefined,
          (error: Error) => error,
        ),
      ]);
      if (packError || importError) {
        // Docker tags an import as it reads it: an interrupted stream must not stay as the base.
        await engine.removeImage(reference);
        const reason = (importError ?? packError)!.message.split('\n')[0];
        throw new StageFailure(`importing ${reference}: ${reason} (full log: ${runner.logFile})`);
      }
    } finally {
      await rm(criuWork, { recursive: true, force: true });
      await rm(root, { recursive: true, force: true });
    }
  });
}
