// A node image with and without the datastore seed, made from one image, so that a seeded and an
// unseeded cluster run the same binaries: the seed is written (the agent's `image-seed` in a
// container without a network, then committed, as the image build does) or removed.

import { SEED } from '../../shared/contract.js';
import { docker } from './workloads.js';

export interface SeedVariants {
  seeded: string;
  unseeded: string;
  /** Images made here, for the caller to remove. */
  made: string[];
}

type Container = ReturnType<ReturnType<typeof docker>['getContainer']>;

/** Runs a container of the image to its end, without a network; the caller commits or removes it. */
async function runToEnd(
  image: string,
  command: { Entrypoint?: string[]; Cmd: string[] },
): Promise<{ exitCode: number; output: string; container: Container }> {
  const container = await docker().createContainer({
    Image: image,
    ...command,
    HostConfig: { NetworkMode: 'none' },
  });
  await container.start();
  const { StatusCode } = (await container.wait()) as { StatusCode: number };
  const output = (await container.logs({ stdout: true, stderr: true })).toString();
  return { exitCode: StatusCode, output, container };
}

async function hasSeed(image: string): Promise<boolean> {
  const run = await runToEnd(image, { Entrypoint: ['test'], Cmd: ['-f', SEED.datastore] });
  await run.container.remove({ force: true });
  return run.exitCode === 0;
}

/** Commits a finished container as `reference` with the image's own entrypoint and command, and removes it. */
async function commitAs(
  run: { exitCode: number; output: string; container: Container },
  from: string,
  reference: string,
): Promise<void> {
  try {
    if (run.exitCode !== 0) throw new Error(`making ${reference} from ${from}: ${run.output.trim()}`);
    const config = (await docker().getImage(from).inspect()).Config;
    const [repo, tag] = reference.split(':');
    await run.container.commit({
      repo,
      tag,
      changes: [`ENTRYPOINT ${JSON.stringify(config.Entrypoint)}`, `CMD ${JSON.stringify(config.Cmd)}`],
    });
  } finally {
    await run.container.remove({ force: true });
  }
}

export async function seedVariants(image: string): Promise<SeedVariants> {
  const id = (await docker().getImage(image).inspect()).Id.replace(/^sha256:/, '').slice(0, 12);
  if (await hasSeed(image)) {
    const unseeded = `vind-test/node-unseeded:${id}`;
    await commitAs(await runToEnd(image, { Entrypoint: ['rm'], Cmd: [SEED.datastore] }), image, unseeded);
    return { seeded: image, unseeded, made: [unseeded] };
  }
  const seeded = `vind-test/node-seeded:${id}`;
  await commitAs(await runToEnd(image, { Cmd: [SEED.command] }), image, seeded);
  return { seeded, unseeded: image, made: [seeded] };
}

export async function removeImages(references: string[]): Promise<void> {
  for (const reference of references) {
    await docker()
      .getImage(reference)
      .remove()
      .catch(() => undefined);
  }
}
