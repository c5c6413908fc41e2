// Prints the cold and warm build times of the node image and its size.
//
//   node dist/bench/image-build.js            warm runs only (caches as they are)
//   node dist/bench/image-build.js --cold     first a cold build: empty vind cache, empty Go build
//                                             cache, base image removed (Go module downloads kept)
//
// Each run goes through the real CLI, so the figures include everything a user waits for.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { docker } from '../test/support/workloads.js';
import { formatDuration } from '../cli/progress.js';
import { DEFAULT_KUBERNETES_VERSION, BASE_IMAGE_REPOSITORY } from '../images/recipe.js';

const CLI = join(import.meta.dirname, '..', 'cli', 'main.js');
const version = process.env.VIND_BENCH_KUBERNETES_VERSION ?? DEFAULT_KUBERNETES_VERSION;
const reference = `vind/node:${version}`;

interface Run {
  label: string;
  ms: number;
  stages: string[];
}

async function build(label: string, args: string[], env: Record<string, string> = {}): Promise<Run> {
  const started = performance.now();
  const result = await execa('node', [CLI, 'image', 'build', '--kubernetes-version', version, ...args], {
    env,
    reject: false,
    stdin: 'ignore',
  });
  const ms = performance.now() - started;
  if (result.exitCode !== 0) throw new Error(`${label} build failed:\n${result.stderr}`);
  const stages = result.stderr.split('\n').filter((l) => l.startsWith(' ✓'));
  return { label, ms, stages };
}

async function removeBaseImages(): Promise<void> {
  const images = await docker().listImages({ filters: { reference: [`${BASE_IMAGE_REPOSITORY}:*`] } });
  for (const image of images) {
    for (const tag of image.RepoTags ?? []) await docker().getImage(tag).remove({ force: true });
  }
}

async function main(): Promise<void> {
  const runs: Run[] = [];
  if (process.argv.includes('--cold')) {
    const scratch = await mkdtemp(join(tmpdir(), 'vind-bench-'));
    try {
      await removeBaseImages();
      runs.push(
        await build('cold (no caches)', ['--force'], {
          VIND_CACHE_DIR: join(scratch, 'vind'),
          GOCACHE: join(scratch, 'go-build'),
        }),
      );
    } finally {
      await rm(scratch, { recursive: true, force: true });
    }
  }
  runs.push(await build('warm, inputs unchanged (skip)', []));
  runs.push(await build('warm, forced rebuild (compiled binaries cached)', ['--force']));

  const image = await docker().getImage(reference).inspect();
  console.log(`node image ${reference}`);
  for (const run of runs) {
    console.log(`  ${run.label.padEnd(50)} ${formatDuration(run.ms)}`);
    for (const stage of run.stages) console.log(`      ${stage.trim()}`);
  }
  console.log(`  ${'image size'.padEnd(50)} ${(image.Size / 1e6).toFixed(0)} MB`);
}

await main();
