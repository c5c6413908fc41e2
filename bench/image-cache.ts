// Pull-through cache versus `vind image load`, for a locally built image of about 200 MB and a
// 3-replica Deployment on 3 workers: time until every pod runs.
//
//   node dist/bench/image-cache.js [--size-mb 200]
//
// 1. cold cache: cluster A, an image the cache has never seen (export from the host, then pulls);
// 2. load: cluster A, another image of the same size, `vind image load` (save, import into every
//    node) and then the Deployment;
// 3. warm cache: cluster B, the image of step 1 (the cache already holds it).

import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { execa } from 'execa';
import tar from 'tar-stream';
import { dockerRuntime } from '../cli/runtime/docker-runtime.js';
import { formatDuration } from '../cli/progress.js';
import { docker, ensureTestImage, kubectlBinary, spreadDeployment } from '../test/support/workloads.js';

const CLI = join(import.meta.dirname, '..', 'cli', 'main.js');
const sizeIndex = process.argv.indexOf('--size-mb');
const sizeMb = sizeIndex >= 0 ? Number(process.argv[sizeIndex + 1]) : 200;
const run = `${process.pid}`;

async function vind(args: string[], env: Record<string, string> = {}) {
  const result = await execa('node', [CLI, ...args], { env, reject: false, stdin: 'ignore' });
  if (result.exitCode !== 0) throw new Error(`vind ${args.join(' ')} failed:\n${result.stderr}`);
  return result;
}

/** An image of random content (so nothing is shared with another run), built on the host. */
async function buildBigImage(tag: string, scratch: string): Promise<void> {
  const pack = tar.pack();
  pack.entry({ name: 'payload' }, randomBytes(sizeMb * 1024 * 1024));
  pack.entry(
    { name: 'Dockerfile' },
    'FROM vind-test/busybox:1\nCOPY payload /payload\nENTRYPOINT ["sleep", "3600"]\n',
  );
  pack.finalize();
  await dockerRuntime().buildImage(Readable.from(pack as unknown as AsyncIterable<Buffer>), {
    tag,
    labels: {},
    logFile: join(scratch, 'build.log'),
  });
}

function deployment(name: string, image: string, pullPolicy: 'IfNotPresent' | 'Never') {
  return JSON.stringify(spreadDeployment(name, { image, imagePullPolicy: pullPolicy }, 3));
}

async function deployAndWait(
  kubectl: string,
  kubeconfig: string,
  name: string,
  image: string,
  policy: 'IfNotPresent' | 'Never',
) {
  await execa(kubectl, ['--kubeconfig', kubeconfig, 'apply', '-f', '-'], {
    input: deployment(name, image, policy),
  });
  await execa(kubectl, [
    '--kubeconfig',
    kubeconfig,
    'rollout',
    'status',
    `deployment/${name}`,
    '--timeout=300s',
  ]);
}

async function main(): Promise<void> {
  await ensureTestImage();
  const kubectl = await kubectlBinary();
  const scratch = await mkdtemp(join(tmpdir(), 'vind-bench-cache-'));
  const [a, b] = [`bench-cache-a-${run}`, `bench-cache-b-${run}`];
  const imageCache = `vind-bench/cache:${run}`;
  const imageLoad = `vind-bench/load:${run}`;
  const configA = join(scratch, 'a.conf');
  const configB = join(scratch, 'b.conf');
  try {
    process.stdout.write(`building two ${sizeMb} MB images on the host …\n`);
    await buildBigImage(imageCache, scratch);
    await buildBigImage(imageLoad, scratch);
    await vind(['create', a, '--workers', '3'], { KUBECONFIG: configA });

    let started = performance.now();
    await deployAndWait(kubectl, configA, 'through-cache', imageCache, 'IfNotPresent');
    const cold = performance.now() - started;
    // The cache logs how long the export from the host took; the rest of a cold pull is the nodes' own.
    const cacheLog = (await execa('docker', ['logs', 'vind-image-cache'], { reject: false })).stdout;
    const exportMs = Number(
      new RegExp(`cached docker.io/${imageCache}.* in (\\d+)ms`).exec(cacheLog)?.[1] ?? NaN,
    );

    started = performance.now();
    await vind(['image', 'load', imageLoad, '--cluster', a]);
    const loaded = performance.now() - started;
    await deployAndWait(kubectl, configA, 'through-load', imageLoad, 'Never');
    const load = performance.now() - started;

    await vind(['create', b, '--workers', '3'], { KUBECONFIG: configB });
    // A fresh control plane is busy for a few seconds after create returns; measure on a settled one.
    await new Promise((resolve) => setTimeout(resolve, 15_000));
    started = performance.now();
    await deployAndWait(kubectl, configB, 'through-cache', imageCache, 'IfNotPresent');
    const warm = performance.now() - started;

    const size = (await docker().getImage(imageCache).inspect()).Size;
    process.stdout.write(
      `image ${(size / 1e6).toFixed(0)} MB, 3 replicas on 3 workers, until all pods run:\n`,
    );
    process.stdout.write(
      `  pull-through cache, cold            ${formatDuration(cold)} (export from the host ${formatDuration(exportMs)})\n`,
    );
    process.stdout.write(
      `  vind image load + deploy            ${formatDuration(load)} (load alone ${formatDuration(loaded)})\n`,
    );
    process.stdout.write(`  pull-through cache, warm (cluster B) ${formatDuration(warm)}\n`);
    process.stdout.write(
      `  cold cache / load                   ${(cold / load).toFixed(2)} (target <= 0.5)\n`,
    );
    process.stdout.write(
      `  cold / warm                         ${(cold / warm).toFixed(1)}x (target >= 3x)\n`,
    );
  } finally {
    await vind(['delete', a, b]).catch(() => undefined);
    for (const image of [imageCache, imageLoad]) {
      await docker()
        .getImage(image)
        .remove({ force: true })
        .catch(() => undefined);
    }
    await rm(scratch, { recursive: true, force: true });
  }
}

await main();
