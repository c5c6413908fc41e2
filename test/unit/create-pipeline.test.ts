// `vind create` against a fake runtime: every step, made to fail or interrupted, leaves nothing.

import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { resolveClusterConfig } from '../../cli/cluster-config.js';
import { deleteCluster } from '../../cli/clusters.js';
import { CREATE_STEPS, createCluster, initialState } from '../../cli/create/create.js';
import { allSettledOrThrow, runPipeline, type Step } from '../../cli/create/pipeline.js';
import type { ClusterReadiness, CreateState } from '../../cli/create/state.js';
import type { Reporter } from '../../cli/progress.js';
import { IMAGE_CACHE } from '../../shared/contract.js';
import { InterruptedError, VindError } from '../../shared/errors.js';
import { FakeRuntime } from '../support/fake-runtime.js';

const ready: ClusterReadiness = {
  apiReady: async () => true,
  readyNodes: async () => 2,
  reportingNodes: async () => 2,
  coreDnsAvailable: async () => true,
};

function quietReporter(lines: string[] = []): Reporter {
  return {
    async step(name, work) {
      lines.push(name);
      return work(() => undefined);
    },
    info: () => undefined,
    warn: (m) => lines.push(`warning: ${m}`),
  };
}

let scratch: string;
let kubeconfig: string;

beforeEach(async () => {
  scratch = await mkdtemp(join(tmpdir(), 'vind-create-'));
  kubeconfig = join(scratch, 'config');
});

afterEach(async () => {
  await rm(scratch, { recursive: true, force: true });
});

function options(
  runtime: FakeRuntime,
  signal = new AbortController().signal,
  name = 'unit',
  fileText?: string,
) {
  const config = resolveClusterConfig({
    flags: { name, workers: '2' },
    fileText,
    defaultKubernetesVersion: 'v1.36.3',
  });
  return { config, runtime, readiness: ready, kubeconfig, retain: false, signal, reporter: quietReporter() };
}

const NO_CNI = 'apiVersion: vind.dev/v1alpha1\nkind: Cluster\nnetworking:\n  cni: none\n';

const tokenFile = (cluster: string) => `${IMAGE_CACHE.tokens}/${cluster}`;
const cacheFiles = (runtime: FakeRuntime) => runtime.containers.get(IMAGE_CACHE.container)?.files;

async function kubeconfigText(): Promise<string> {
  return readFile(kubeconfig, 'utf8').catch(() => '');
}

describe('create against a fake runtime', () => {
  it('runs every step and makes the cluster', async () => {
    const runtime = new FakeRuntime();
    const lines: string[] = [];
    const created = await createCluster({ ...options(runtime), reporter: quietReporter(lines) });
    expect(lines).toEqual([
      'check host',
      'create network',
      'start 3 containers',
      'start control plane',
      'open the API port',
      'write kubeconfig',
      'wait for the API server',
      'join 2 workers',
      'wait for nodes Ready',
      'wait for CoreDNS',
    ]);
    expect(created.context).toBe('vind-unit');
    expect(runtime.leftovers().sort()).toEqual([
      'container unit-control-plane',
      'container unit-front-door',
      'container unit-worker',
      'container unit-worker2',
      'container vind-image-cache',
      'network vind-unit',
      'volume unit-control-plane-var',
      'volume unit-worker-var',
      'volume unit-worker2-var',
      'volume vind-image-cache',
    ]);
    expect(await kubeconfigText()).toContain('vind-unit');
  });

  it('with networking.cni none, waits for the nodes to report, NotReady, and not for CoreDNS', async () => {
    const runtime = new FakeRuntime();
    const lines: string[] = [];
    const noCni: ClusterReadiness = {
      ...ready,
      readyNodes: async () => 0,
      coreDnsAvailable: async () => false,
    };
    await createCluster({
      ...options(runtime, undefined, 'unit', NO_CNI),
      readiness: noCni,
      reporter: quietReporter(lines),
    });
    expect(lines.slice(-2)).toEqual(['join 2 workers', 'wait for nodes to report']);
  });

  /** Runs create's steps with `after` run right after step `index` has done its work. */
  async function runWith(
    index: number,
    after: () => void,
    runtime: FakeRuntime,
    controller: AbortController,
  ) {
    const steps: Step<CreateState>[] = CREATE_STEPS.map((s, i) =>
      i === index
        ? {
            ...s,
            async run(state, context) {
              await s.run(state, context);
              after();
            },
          }
        : s,
    );
    // A step the default configuration skips runs with networking.cni none.
    const fileText = CREATE_STEPS[index]!.skip?.(initialState(options(runtime))) ? NO_CNI : undefined;
    return runPipeline(steps, initialState(options(runtime, controller.signal, 'unit', fileText)), {
      reporter: quietReporter(),
      signal: controller.signal,
      deadline: Date.now() + 10_000,
      retain: false,
    });
  }

  for (const [index, step] of CREATE_STEPS.entries()) {
    const name =
      typeof step.name === 'string' ? step.name : step.name(initialState(options(new FakeRuntime())));

    it(`leaves nothing behind when "${name}" fails after doing its work`, async () => {
      const runtime = new FakeRuntime();
      const fail = () => {
        throw new VindError(`${name} broke`);
      };
      await expect(runWith(index, fail, runtime, new AbortController())).rejects.toThrow(`${name} broke`);
      expect(runtime.leftovers()).toEqual([]);
      expect(await kubeconfigText()).not.toContain('vind-unit');
    });

    it(`leaves nothing behind when Ctrl-C comes during "${name}"`, async () => {
      const runtime = new FakeRuntime();
      const controller = new AbortController();
      await expect(runWith(index, () => controller.abort(), runtime, controller)).rejects.toBeInstanceOf(
        InterruptedError,
      );
      expect(runtime.leftovers()).toEqual([]);
      expect(await kubeconfigText()).not.toContain('vind-unit');
    });
  }

  it('waits for every container of a parallel start before undoing, so a slow one is removed too', async () => {
    const runtime = new FakeRuntime();
    runtime.failWhen = (method, subject) =>
      method === 'runNode' && subject === 'unit-worker' ? new Error('worker refused') : undefined;
    // The control plane is still being made when the worker fails.
    runtime.delayOf = (method, subject) =>
      method === 'runNode' && subject === 'unit-control-plane' ? 100 : 0;
    await expect(createCluster(options(runtime))).rejects.toThrow('worker refused');
    expect(runtime.calls).toContain('runNode unit-control-plane');
    // Had create undone at the first failure, the control plane would turn up after the undo.
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(runtime.leftovers()).toEqual([]);
  });

  it('keeps everything with --retain, and says how to remove it', async () => {
    const runtime = new FakeRuntime();
    runtime.failWhen = (method) => (method === 'writeFile' ? new Error('join refused') : undefined);
    const lines: string[] = [];
    await expect(
      createCluster({ ...options(runtime), retain: true, reporter: quietReporter(lines) }),
    ).rejects.toThrow('join refused');
    expect(runtime.leftovers()).toContain('container unit-control-plane');
    expect(lines.at(-1)).toBe(
      'warning: keeping the containers of "unit" (--retain); remove them with `vind delete unit`',
    );
  });

  it('refuses a name in use, before making anything', async () => {
    const runtime = new FakeRuntime();
    await createCluster(options(runtime));
    const before = runtime.leftovers();
    await expect(createCluster(options(runtime))).rejects.toThrow(
      'cluster "unit" already exists: delete it with `vind delete unit` or choose another name',
    );
    expect(runtime.leftovers()).toEqual(before);
  });

  it('refuses the remains of a create that was killed, and never takes over their volumes', async () => {
    const runtime = new FakeRuntime();
    // What a create killed with SIGKILL right after making the volumes leaves: volumes, no containers.
    await runtime.createVolume('unit-worker-var', { 'dev.vind.cluster': 'unit', 'dev.vind.role': 'worker' });
    await expect(createCluster(options(runtime))).rejects.toThrow(
      'cluster "unit" has remains of an earlier create that did not finish (1 volume): remove them with `vind delete unit`',
    );
    expect(runtime.leftovers()).toEqual(['volume unit-worker-var']);
  });

  it('does not start a node on a volume of that name that is not its own, nor remove it', async () => {
    const runtime = new FakeRuntime();
    await runtime.createVolume('unit-worker-var', {});
    await expect(createCluster(options(runtime))).rejects.toThrow('volume unit-worker-var already exists');
    expect(runtime.leftovers()).toEqual(['volume unit-worker-var']);
  });

  it('names a create of the same name that got its network first, and leaves that one alone', async () => {
    const runtime = new FakeRuntime();
    // The other create made the network between this one's check and its own attempt.
    const original = runtime.createNetwork.bind(runtime);
    runtime.createNetwork = async (request) => {
      await original({ ...request, labels: request.labels });
      throw new Error('(HTTP code 409) unexpected - network with name vind-unit already exists');
    };
    await expect(createCluster(options(runtime))).rejects.toThrow(
      'cluster "unit" is being created by another `vind create` right now: wait for it, or choose another name',
    );
    expect(runtime.leftovers()).toEqual(['network vind-unit']);
  });

  it('spends one deadline for the whole run: a node that never gets ready fails the run in time', async () => {
    const runtime = new FakeRuntime();
    // Workers never report ready: their join file is written but the agent stays "starting".
    runtime.writeFile = async () => undefined;
    await expect(createCluster({ ...options(runtime), waitMs: 600 })).rejects.toThrow(
      /timed out waiting for unit-worker2? to start.*raise --wait/,
    );
    expect(runtime.leftovers()).toEqual([]);
  });

  it('keeps waiting for a node whose agent is trying again, and names its reason if time runs out', async () => {
    const runtime = new FakeRuntime();
    const original = runtime.runNode.bind(runtime);
    runtime.runNode = async (request) => {
      await original(request);
      if (request.role === 'control-plane') {
        const files = runtime.containers.get(request.name)!.files;
        const ready = files.get('/run/vind/status')!;
        files.set(
          '/run/vind/status',
          JSON.stringify({
            phase: 'retrying',
            message: 'datastore db:5432 cannot be reached; trying again in 2s',
            at: '',
          }),
        );
        // The datastore comes up: the agent's next attempt succeeds.
        setTimeout(() => files.set('/run/vind/status', ready), 300);
      }
    };
    await expect(createCluster(options(runtime))).resolves.toMatchObject({ name: 'unit' });

    const stuck = new FakeRuntime();
    const originalStuck = stuck.runNode.bind(stuck);
    stuck.runNode = async (request) => {
      await originalStuck(request);
      if (request.role === 'control-plane') {
        stuck.containers
          .get(request.name)!
          .files.set(
            '/run/vind/status',
            JSON.stringify({ phase: 'retrying', message: 'datastore db:5432 cannot be reached', at: '' }),
          );
      }
    };
    await expect(createCluster({ ...options(stuck), waitMs: 500 })).rejects.toThrow(
      'timed out waiting for unit-control-plane to start (last: datastore db:5432 cannot be reached): raise --wait',
    );
    expect(stuck.leftovers()).toEqual([]);
  });

  it('stops at once when the control plane cannot reach the datastore it was given', async () => {
    const runtime = new FakeRuntime();
    const original = runtime.runNode.bind(runtime);
    runtime.runNode = async (request) => {
      await original(request);
      if (request.role === 'control-plane') {
        runtime.containers.get(request.name)!.files.set(
          '/run/vind/status',
          JSON.stringify({
            phase: 'retrying',
            message: 'datastore db:5432 cannot be reached (ECONNREFUSED); trying again in 2s',
            reason: 'datastore-unreachable',
            at: '',
          }),
        );
      }
    };
    await expect(createCluster(options(runtime))).rejects.toThrow(
      /^unit-control-plane: datastore db:5432 cannot be reached \(ECONNREFUSED\)$/,
    );
    expect(runtime.leftovers()).toEqual([]);
  });

  it('reads a failed node status as the reason, at once', async () => {
    const runtime = new FakeRuntime();
    const original = runtime.runNode.bind(runtime);
    runtime.runNode = async (request) => {
      await original(request);
      if (request.role === 'control-plane') {
        runtime.containers
          .get(request.name)!
          .files.set(
            '/run/vind/status',
            JSON.stringify({ phase: 'failed', message: 'datastore db:5432 cannot be reached', at: '' }),
          );
      }
    };
    await expect(createCluster(options(runtime))).rejects.toThrow(
      'unit-control-plane: datastore db:5432 cannot be reached',
    );
    expect(runtime.leftovers()).toEqual([]);
  });
});

describe("each cluster's token for the image cache", () => {
  const envToken = (runtime: FakeRuntime, container: string) =>
    runtime.containers
      .get(container)!
      .env.find((e) => e.startsWith('VIND_IMAGE_CACHE_TOKEN='))
      ?.slice('VIND_IMAGE_CACHE_TOKEN='.length);

  const tokens = (runtime: FakeRuntime) =>
    [...cacheFiles(runtime)!.keys()].filter((path) => path.startsWith(`${IMAGE_CACHE.tokens}/`));

  it('goes to the workers and into the cache, one new token per cluster', async () => {
    const runtime = new FakeRuntime();
    await createCluster(options(runtime));
    const written = cacheFiles(runtime)!.get(tokenFile('unit'))!;
    expect(written).toMatch(/^[0-9a-f]{64}\n$/);
    expect(envToken(runtime, 'unit-worker')).toBe(written.trim());
    expect(envToken(runtime, 'unit-worker2')).toBe(written.trim());
    expect(envToken(runtime, 'unit-control-plane')).toBeUndefined();
    await createCluster(options(runtime, undefined, 'other'));
    expect(cacheFiles(runtime)!.get(tokenFile('other'))).toMatch(/^[0-9a-f]{64}\n$/);
    expect(cacheFiles(runtime)!.get(tokenFile('other'))).not.toBe(written);
  });

  it('is taken back out of a cache that stays when the create fails, and when the cluster is deleted', async () => {
    const runtime = new FakeRuntime();
    await createCluster(options(runtime));
    runtime.failWhen = (method, subject) =>
      method === 'runNode' && subject === 'other-worker' ? new Error('worker refused') : undefined;
    await expect(createCluster(options(runtime, undefined, 'other'))).rejects.toThrow('worker refused');
    // Written for "other" too (the cache was written to three times: two tokens and the
    // credentials of the second create), then taken back.
    expect(
      runtime.calls.filter((c) => c === `writeFile ${IMAGE_CACHE.container}`).length,
    ).toBeGreaterThanOrEqual(3);
    expect(tokens(runtime)).toEqual([tokenFile('unit')]);
    runtime.failWhen = () => undefined;
    await createCluster(options(runtime, undefined, 'other'));
    expect((await deleteCluster(runtime, 'unit', kubeconfig)).removed).toBe(true);
    expect(tokens(runtime)).toEqual([tokenFile('other')]);
  });
});

describe('the shared image cache', () => {
  it('comes back attached to every cluster network, with every token, when removed by hand', async () => {
    const runtime = new FakeRuntime();
    await createCluster(options(runtime));
    await createCluster(options(runtime, undefined, 'second'));
    const unitToken = cacheFiles(runtime)!.get(tokenFile('unit'));
    // The user removes the cache and its volume; the next create makes it anew.
    await runtime.removeContainer(IMAGE_CACHE.container);
    await runtime.removeVolume(IMAGE_CACHE.volume);
    await createCluster(options(runtime, undefined, 'third'));
    const cache = await runtime.inspectContainer(IMAGE_CACHE.container);
    expect([...cache!.networks].sort()).toEqual(['vind-second', 'vind-third', 'vind-unit']);
    expect(cacheFiles(runtime)!.get(tokenFile('unit'))).toBe(unitToken);
    expect(cacheFiles(runtime)!.get(tokenFile('second'))).toMatch(/^[0-9a-f]{64}\n$/);
  });

  it('is attached to a network it lost, at the next create', async () => {
    const runtime = new FakeRuntime();
    await createCluster(options(runtime));
    await runtime.disconnectNetwork('vind-unit', IMAGE_CACHE.container);
    await createCluster(options(runtime, undefined, 'second'));
    expect((await runtime.inspectContainer(IMAGE_CACHE.container))!.networks.sort()).toEqual([
      'vind-second',
      'vind-unit',
    ]);
  });

  it('settles two creates that start it at once on one cache', async () => {
    const runtime = new FakeRuntime();
    // The second create's attempt to make the cache finds the name taken, as Docker answers 409.
    const original = runtime.runImageCache.bind(runtime);
    let calls = 0;
    runtime.runImageCache = async (request) => {
      if (calls++ === 0) return original(request);
      throw Object.assign(new Error('Conflict. The container name "/vind-image-cache" is already in use'), {
        statusCode: 409,
      });
    };
    await Promise.all([
      createCluster(options(runtime)),
      createCluster(options(runtime, undefined, 'second')),
    ]);
    expect((await runtime.inspectContainer(IMAGE_CACHE.container))!.networks.sort()).toEqual([
      'vind-second',
      'vind-unit',
    ]);
  });
});

describe('allSettledOrThrow', () => {
  it('throws the first failure only after every branch settled', async () => {
    const order: string[] = [];
    await expect(
      allSettledOrThrow([
        Promise.reject(new Error('first')),
        new Promise((resolve) => setTimeout(() => resolve(order.push('slow done')), 30)),
      ]),
    ).rejects.toThrow('first');
    expect(order).toEqual(['slow done']);
  });
});
