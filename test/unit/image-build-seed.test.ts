import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import tar from 'tar-stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { seedNodeImage } from '../../images/build.js';
import type { ImageEngine } from '../../images/engine.js';
import { nodeCommandLines } from '../../images/node-dockerfile.js';
import { SEED } from '../../shared/contract.js';

/** An engine that records what the seeding step asks of it; the container ends with `exitCode`. */
function fakeEngine(exitCode: number, output: string) {
  const calls: string[] = [];
  const given: { files: string[]; tmpfs: string[]; command: string[] } = {
    files: [],
    tmpfs: [],
    command: [],
  };
  const engine: ImageEngine = {
    ping: async () => undefined,
    inspectImage: async () => undefined,
    importRootfs: async () => undefined,
    buildImage: async () => '',
    removeImage: async (reference) => void calls.push(`removeImage ${reference}`),
    async runToCompletion(options) {
      calls.push(`run ${options.image}`);
      given.tmpfs = options.tmpfs;
      given.command = options.command;
      const extract = tar.extract();
      extract.on('entry', (header, stream, next) => {
        given.files.push(header.name);
        stream.resume();
        stream.on('end', next);
      });
      await new Promise<void>((resolve) => {
        extract.on('finish', () => resolve());
        (options.files as Readable).pipe(extract);
      });
      return { container: 'seed-1', exitCode, output };
    },
    async commitContainer(container, tag, changes) {
      calls.push(`commit ${container} ${tag} ${changes.join(' | ')}`);
      return 'sha256:seeded';
    },
    removeContainer: async (container) => void calls.push(`removeContainer ${container}`),
  };
  return { engine, calls, given };
}

describe('seedNodeImage', () => {
  let scratch: string;
  const archive = 'opt/vind/images/pause.tar';

  beforeEach(async () => {
    scratch = await mkdtemp(join(tmpdir(), 'vind-seed-build-'));
    await mkdir(join(scratch, 'opt/vind/images'), { recursive: true });
    await writeFile(join(scratch, archive), 'archive');
  });

  afterEach(async () => {
    await rm(scratch, { recursive: true, force: true });
  });

  const options = () => ({
    unseeded: 'vind/node:x-unseeded',
    reference: 'vind/node:x',
    logDir: scratch,
    context: scratch,
    archives: [archive],
  });

  it('gives the archives and a tmpfs to image-seed, and commits the container with the command restored', async () => {
    const { engine, calls, given } = fakeEngine(0, 'seeded preloaded images in 2.0s\n');
    await seedNodeImage(engine, options());
    expect(given.files).toEqual([archive]);
    expect(given.command).toEqual([SEED.command]);
    expect(given.tmpfs).toContain(SEED.work);
    expect(calls).toEqual([
      'run vind/node:x-unseeded',
      `commit seed-1 vind/node:x ${nodeCommandLines().join(' | ')}`,
      'removeContainer seed-1',
      'removeImage vind/node:x-unseeded',
    ]);
    expect(await readFile(join(scratch, 'image-build-seed.log'), 'utf8')).toContain(
      'seeded preloaded images',
    );
  });

  it('fails in one line naming the log, and tags nothing', async () => {
    const { engine, calls } = fakeEngine(
      1,
      'imported vind.dev/pause:3.10\nseeding preloaded images: no space left\n',
    );
    await expect(seedNodeImage(engine, options())).rejects.toThrow(
      `image-seed: seeding preloaded images: no space left (full log: ${join(scratch, 'image-build-seed.log')})`,
    );
    expect(calls).toEqual([
      'run vind/node:x-unseeded',
      'removeContainer seed-1',
      'removeImage vind/node:x-unseeded',
    ]);
  });
});
