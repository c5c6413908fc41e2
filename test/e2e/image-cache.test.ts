// Images built on the host run in a cluster with no load step: every node pulls through the image
// cache, which exports them from the host's Docker.

import { mkdir, mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import tar from 'tar-stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dockerRuntime } from '../../cli/runtime/docker-runtime.js';
import { IMAGE_CACHE, imageCacheTokenFile } from '../../shared/contract.js';
import { buildDockerArchive } from '../../images/docker-archive.js';
import { ImageCache, startRegistry } from '../../node-agent/image-cache/registry.js';
import {
  docker,
  ensureTestImage,
  kubectlBinary,
  kubectlFor,
  removeByLabel,
  requireNodeImage,
  runVind,
  spreadDeployment,
  uniqueName,
  waitFor,
} from './helpers.js';

const cluster = uniqueName('e2e-cache');
const APP = `vind-test/cache-app:${cluster}`;
const MISSING = '127.0.0.1:1/vind-test/exists-nowhere:v1';
let scratch: string;
let dockerConfig: string;
const builtIds: string[] = [];
let kubectl: ReturnType<typeof kubectlFor>;

/** `docker build` on the host of an image that prints a marker; never pushed anywhere. */
async function buildApp(marker: string): Promise<string> {
  const pack = tar.pack();
  pack.entry(
    { name: 'Dockerfile' },
    [
      'FROM vind-test/busybox:1',
      `RUN echo ${marker} > /marker`,
      'ENTRYPOINT ["sh", "-c"]',
      'CMD ["cat /marker; exec sleep 3600"]',
      '',
    ].join('\n'),
  );
  pack.finalize();
  const context = Readable.from(pack as unknown as AsyncIterable<Buffer>);
  await dockerRuntime().buildImage(context, { tag: APP, labels: {}, logFile: join(scratch, 'build.log') });
  const id = (await docker().getImage(APP).inspect()).Id;
  builtIds.push(id);
  return id;
}

interface Pod {
  metadata: { name: string };
  spec: { nodeName: string };
  status: {
    phase: string;
    containerStatuses?: { imageID: string; state: { waiting?: { reason: string; message?: string } } }[];
  };
}

async function pods(app: string): Promise<Pod[]> {
  const result = await kubectl(['get', 'pods', '-l', `app=${app}`, '-o', 'json']);
  return (JSON.parse(result.stdout) as { items: Pod[] }).items;
}

function deployment(name: string, image: string, replicas: number) {
  return spreadDeployment(name, { image, imagePullPolicy: 'Always' }, replicas);
}

async function cacheAddress(): Promise<string> {
  const info = await docker().getContainer(IMAGE_CACHE.container).inspect();
  return info.NetworkSettings.Networks[`vind-${cluster}`]!.IPAddress;
}

describe('the pull-through image cache', () => {
  beforeAll(async () => {
    await requireNodeImage();
    await ensureTestImage();
    scratch = await mkdtemp(join(tmpdir(), 'vind-e2e-cache-'));
    const kubeconfig = join(scratch, 'kubeconfig');
    kubectl = kubectlFor(await kubectlBinary(), kubeconfig);
    await buildApp('v1');
    // A Docker config folder of the test's own, as the user's ~/.docker: the cache mounts it.
    dockerConfig = join(scratch, 'docker-config');
    await mkdir(dockerConfig);
    await writeFile(join(dockerConfig, 'config.json'), JSON.stringify({ auths: {} }));
    const created = await runVind(['create', cluster, '--workers', '3'], {
      KUBECONFIG: kubeconfig,
      DOCKER_CONFIG: dockerConfig,
    });
    expect(created.exitCode, created.stderr).toBe(0);
  });

  afterAll(async () => {
    await removeByLabel(cluster);
    // Every build, also the one whose tag moved on to the rebuild.
    for (const id of builtIds) {
      await docker()
        .getImage(id)
        .remove({ force: true })
        .catch(() => undefined);
    }
    if (scratch) await rm(scratch, { recursive: true, force: true });
  });

  it('runs a host-built image as a 3-replica Deployment with no load step', async () => {
    const applied = await kubectl(['apply', '-f', '-'], JSON.stringify(deployment('app', APP, 3)));
    expect(applied.exitCode, applied.stderr).toBe(0);
    const rollout = await kubectl(['rollout', 'status', 'deployment/app', '--timeout=120s']);
    expect(rollout.exitCode, rollout.stderr).toBe(0);
    const running = await pods('app');
    expect(new Set(running.map((p) => p.spec.nodeName)).size).toBe(3);
    for (const pod of running) {
      expect((await kubectl(['logs', pod.metadata.name])).stdout.trim()).toBe('v1');
    }
  });

  it('gives restarted pods the new digest after the tag is rebuilt on the host', async () => {
    const before = new Set((await pods('app')).map((p) => p.status.containerStatuses?.[0]?.imageID));
    await buildApp('v2');
    expect((await kubectl(['rollout', 'restart', 'deployment/app'])).exitCode).toBe(0);
    const rollout = await kubectl(['rollout', 'status', 'deployment/app', '--timeout=120s']);
    expect(rollout.exitCode, rollout.stderr).toBe(0);
    const after = await waitFor(
      'only new pods',
      async () => {
        const current = (await pods('app')).filter((p) => p.status.phase === 'Running');
        return current.length === 3 &&
          current.every((p) => !before.has(p.status.containerStatuses?.[0]?.imageID))
          ? current
          : undefined;
      },
      60_000,
      500,
    );
    for (const pod of after) {
      expect((await kubectl(['logs', pod.metadata.name])).stdout.trim()).toBe('v2');
    }
  });

  it('fails the pull of an image that exists nowhere, naming it, without hanging', async () => {
    const applied = await kubectl(['apply', '-f', '-'], JSON.stringify(deployment('missing', MISSING, 1)));
    expect(applied.exitCode, applied.stderr).toBe(0);
    const waiting = await waitFor(
      'the pull to fail',
      async () => {
        const state = (await pods('missing'))[0]?.status.containerStatuses?.[0]?.state.waiting;
        return state && /ErrImagePull|ImagePullBackOff/.test(state.reason) ? state : undefined;
      },
      90_000,
      500,
    );
    expect(waiting.reason).toMatch(/ErrImagePull|ImagePullBackOff/);
    const events = await kubectl([
      'get',
      'events',
      '--field-selector',
      'reason=Failed',
      '-o',
      'jsonpath={.items[*].message}',
    ]);
    expect(events.stdout).toContain(MISSING);
  });

  it("pulls an image the host lacks through the host's Docker, which keeps it too", async () => {
    // A registry on the host's loopback, serving one image the host's Docker has never seen.
    const marker = `pulled-${cluster}`;
    const built = await buildDockerArchive({
      reference: 'pulled/app:1',
      files: [
        { path: 'bin/busybox', content: await readFile('/bin/busybox'), mode: 0o755 },
        { path: 'bin/sh', content: Buffer.alloc(0), mode: 0o777, linkTarget: 'busybox' },
        { path: 'bin/cat', content: Buffer.alloc(0), mode: 0o777, linkTarget: 'busybox' },
        { path: 'bin/sleep', content: Buffer.alloc(0), mode: 0o777, linkTarget: 'busybox' },
        { path: 'marker', content: Buffer.from(`${marker}\n`), mode: 0o644 },
      ],
      entrypoint: ['/bin/sh', '-c'],
      cmd: ['cat /marker; exec sleep 3600'],
    });
    const upstream = new ImageCache(
      join(scratch, 'upstream'),
      {
        inspect: async (reference) =>
          reference.endsWith('/pulled/app:1') ? { Id: built.imageId } : undefined,
        export: async () => Readable.from(built.tar),
        pull: async () => {
          throw new Error('the upstream has nothing to pull from');
        },
      }, // The host's Docker pulls from it with no token: a plain registry.
      { tokens: { accepts: async () => true } },
    );
    const server = startRegistry(upstream, 0, '127.0.0.1');
    await new Promise((resolve) => server.once('listening', resolve));
    const image = `127.0.0.1:${(server.address() as AddressInfo).port}/pulled/app:1`;
    builtIds.push(image);
    try {
      expect(
        await docker()
          .getImage(image)
          .inspect()
          .catch(() => undefined),
      ).toBeUndefined();
      const applied = await kubectl(
        ['apply', '-f', '-'],
        JSON.stringify(spreadDeployment('pulled', { image }, 1)),
      );
      expect(applied.exitCode, applied.stderr).toBe(0);
      const rollout = await kubectl(['rollout', 'status', 'deployment/pulled', '--timeout=120s']);
      expect(rollout.exitCode, rollout.stderr).toBe(0);
      const [pod] = await pods('pulled');
      const logged = await waitFor(
        'the pulled image to print its marker',
        async () => (await kubectl(['logs', pod!.metadata.name])).stdout.trim() || undefined,
        20_000,
      );
      expect(logged).toBe(marker);
      expect((await docker().getImage(image).inspect()).Id).toBe(built.imageId);
    } finally {
      server.close();
    }
  });

  it('refuses requests without the token of a cluster', async () => {
    const base = `http://${await cacheAddress()}:5000`;
    for (const headers of [{}, { [IMAGE_CACHE.tokenHeader]: 'ab'.repeat(32) }] as Record<string, string>[]) {
      const response = await fetch(`${base}/v2/`, { headers });
      expect(response.status).toBe(401);
      expect(((await response.json()) as { errors: { code: string }[] }).errors[0]!.code).toBe(
        'UNAUTHORIZED',
      );
    }
  });

  it("refuses a pod, which cannot see the nodes' token, while the nodes pull through it", async () => {
    // A pod on the cluster reaches the cache by name, as the nodes do, but sends no token.
    const probe = {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: 'cache-probe' },
      spec: {
        restartPolicy: 'Never',
        terminationGracePeriodSeconds: 1,
        containers: [
          {
            name: 'probe',
            image: 'vind-test/busybox:1',
            command: ['sh', '-c', 'wget -q -O- http://vind-image-cache:5000/v2/ 2>&1; echo "exit=$?"'],
          },
        ],
      },
    };
    expect((await kubectl(['apply', '-f', '-'], JSON.stringify(probe))).exitCode).toBe(0);
    const logs = await waitFor(
      'the probe pod to finish',
      async () => {
        const phase = (await kubectl(['get', 'pod', 'cache-probe', '-o', 'jsonpath={.status.phase}'])).stdout;
        if (phase !== 'Succeeded' && phase !== 'Failed') return undefined;
        return (await kubectl(['logs', 'cache-probe'])).stdout;
      },
      60_000,
      500,
    );
    expect(logs).toMatch(/401 Unauthorized/);
    expect(logs).not.toContain('exit=0');
    await kubectl(['delete', 'pod', 'cache-probe', '--wait=false']);
  });

  it('answers malformed requests with registry errors and keeps serving', async () => {
    const base = `http://${await cacheAddress()}:5000`;
    const token = (await dockerRuntime().readFile(
      IMAGE_CACHE.container,
      imageCacheTokenFile(cluster),
    ))!.trim();
    const headers = { [IMAGE_CACHE.tokenHeader]: token };
    const error = async (path: string) => {
      const response = await fetch(`${base}${path}`, { headers });
      return {
        status: response.status,
        code: ((await response.json()) as { errors: { code: string }[] }).errors[0]!.code,
      };
    };
    expect(await error('/v2/vind-test/cache-app/blobs/sha256:zzz')).toEqual({
      status: 400,
      code: 'DIGEST_INVALID',
    });
    expect(await error(`/v2/vind-test/cache-app/blobs/sha256:${'0'.repeat(64)}`)).toEqual({
      status: 404,
      code: 'BLOB_UNKNOWN',
    });
    expect(await error('/v2/vind-test/cache-app/manifests/..%2f..%2fetc')).toEqual({
      status: 400,
      code: 'TAG_INVALID',
    });
    expect(await error('/v2/%2e%2e%2f%2e%2e/etc/passwd/manifests/latest')).toEqual({
      status: 400,
      code: 'NAME_INVALID',
    });
    const tag = cluster;
    const manifest = await fetch(`${base}/v2/vind-test/cache-app/manifests/${tag}?ns=docker.io`, {
      method: 'HEAD',
      headers,
    });
    expect(manifest.status).toBe(200);
    expect(manifest.headers.get('docker-content-digest')).toMatch(/^sha256:[0-9a-f]{64}$/);
  });

  it('is the only container with the Docker socket, and publishes no port', async () => {
    const cache = await docker().getContainer(IMAGE_CACHE.container).inspect();
    expect(cache.Mounts.some((m) => m.Destination === IMAGE_CACHE.dockerSocket)).toBe(true);
    expect(Object.keys(cache.HostConfig.PortBindings ?? {})).toEqual([]);
    const nodes = await docker().listContainers({ filters: { label: [`dev.vind.cluster=${cluster}`] } });
    for (const node of nodes) {
      const info = await docker().getContainer(node.Id).inspect();
      expect(info.Mounts.some((m) => m.Source.endsWith('docker.sock'))).toBe(false);
    }
  });

  it('serves from an unprivileged process that cannot reach the Docker socket', async () => {
    const runtime = dockerRuntime();
    const uids = await runtime.exec(IMAGE_CACHE.container, [
      'sh',
      '-c',
      // [i] keeps this shell's own command line from matching.
      'for p in /proc/[0-9]*; do tr "\\0" " " < $p/cmdline 2>/dev/null | grep -q "node-agent.mjs [i]mage-cache-registry" && grep ^Uid: $p/status; done',
    ]);
    expect(uids.stdout.trim()).toMatch(/^Uid:\s+65534\s+65534\s+65534\s+65534$/);
    const script =
      'process.setgid(65534); process.setuid(65534);' +
      `require('net').connect(${JSON.stringify(IMAGE_CACHE.dockerSocket)})` +
      ".on('connect', () => console.log('connected')).on('error', (e) => console.log(e.code))";
    const attempt = await runtime.exec(IMAGE_CACHE.container, ['node', '-e', script]);
    expect(attempt.stdout.trim()).toBe('EACCES');
  });

  it('lists what it caches and prunes it', async () => {
    const listed = await runVind(['cache', '--json']);
    expect(listed.exitCode, listed.stderr).toBe(0);
    const listing = JSON.parse(listed.stdout) as {
      images: { reference: string; size: number }[];
      used: number;
      limit: number;
    };
    expect(listing.images.find((i) => i.reference === `docker.io/${APP}`)?.size).toBeGreaterThan(1_000_000);
    expect(listing.used).toBeGreaterThan(1_000_000);
    expect(listing.limit).toBe(IMAGE_CACHE.defaultLimit);
    expect((await runVind(['cache', 'prune'])).exitCode).toBe(0);
    expect(JSON.parse((await runVind(['cache', '--json'])).stdout)).toMatchObject({ images: [], used: 0 });
    // The clusters' tokens survive a prune.
    expect(await dockerRuntime().readFile(IMAGE_CACHE.container, imageCacheTokenFile(cluster))).toMatch(
      /^[0-9a-f]{64}/,
    );
  });

  it('takes a size limit from vind cache --limit and refuses a nonsense one', async () => {
    const set = await runVind(['cache', '--limit', '100MiB', '--json']);
    expect(set.exitCode, set.stderr).toBe(0);
    expect((JSON.parse(set.stdout) as { limit: number }).limit).toBe(100 * 1024 * 1024);
    const bad = await runVind(['cache', '--limit', 'lots']);
    expect(bad.exitCode).not.toBe(0);
    expect(bad.stderr.trim()).toBe(
      'error: invalid cache limit: "lots" is not a size: write bytes or a number with K, M, G or T',
    );
  });

  it('sees a `docker login` made after it started: the config is replaced, as docker does it', async () => {
    const login = {
      auths: { 'registry.example.com': { auth: Buffer.from('me:after-start').toString('base64') } },
    };
    // docker login writes a new file and renames it over config.json: a new inode.
    await writeFile(join(dockerConfig, 'config.json.tmp'), JSON.stringify(login));
    await rename(join(dockerConfig, 'config.json.tmp'), join(dockerConfig, 'config.json'));
    const seen = await dockerRuntime().readFile(IMAGE_CACHE.container, IMAGE_CACHE.dockerConfig);
    expect(JSON.parse(seen ?? '{}')).toEqual(login);
  });
});
