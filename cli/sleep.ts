// Sleep and wake: a cluster frees what it uses while nobody needs it, and comes back as it was.
//
//   pause   every container frozen (the cgroup freezer): no CPU at once, memory kept; wake thaws them
//           and every pod goes on with the same containers and the same memory.
//   stop    every container stopped: memory and CPU freed, everything kept on the volumes; wake starts
//           them and waits until the API answers, every node is Ready and CoreDNS is available.
//
// A sleeping cluster has a record, an empty volume labelled with its mode and since when, and its
// containers lose their restart policy: an engine restart or a reboot does not wake it (a paused
// cluster comes back from one stopped, its memory gone with the engine). The image cache and other
// clusters are not touched.

import { LABELS, SLEEP_MODES, sleepRecordName, type SleepMode } from '../shared/contract.js';
import { VindError } from '../shared/errors.js';
import {
  apiReady,
  deploymentAvailable,
  isNodeReady,
  type KubeTarget,
  listNodes,
  targetFromKubeconfig,
} from '../shared/kubernetes.js';
import { poll, PollTimeoutError } from '../shared/poll.js';
import { clusterKubeconfig, sleepRecord } from './clusters.js';
import type { Reporter } from './progress.js';
import type { ContainerInfo, ContainerRuntime } from './runtime/runtime.js';

/** What waking asks the cluster's API; the real one, or a stand-in in tests. */
export interface WakeProbes {
  apiReady(target: KubeTarget): Promise<boolean>;
  allNodesReady(target: KubeTarget): Promise<boolean>;
  coreDnsAvailable(target: KubeTarget): Promise<boolean>;
}

export const kubernetesWakeProbes: WakeProbes = {
  apiReady,
  allNodesReady: async (target) => {
    const nodes = await listNodes(target);
    return nodes.length > 0 && nodes.every(isNodeReady);
  },
  coreDnsAvailable: (target) => deploymentAvailable(target, 'kube-system', 'coredns'),
};

export function parseSleepMode(text: string): SleepMode {
  if (!(SLEEP_MODES as readonly string[]).includes(text)) {
    throw new VindError(`unknown sleep mode "${text}": use ${SLEEP_MODES.join(', ')}`);
  }
  return text as SleepMode;
}

/** A cluster's containers: the nodes, the control plane last, and its host-port forwarders. */
async function clusterContainers(runtime: ContainerRuntime, cluster: string): Promise<ContainerInfo[]> {
  const containers = await runtime.listContainers([`${LABELS.cluster}=${cluster}`]);
  if (!containers.some((c) => c.labels[LABELS.role] === 'control-plane')) {
    throw new VindError(`cluster "${cluster}" does not exist: see \`vind list\``);
  }
  const controlPlaneLast = (c: ContainerInfo) => (c.labels[LABELS.role] === 'control-plane' ? 1 : 0);
  return containers.sort((a, b) => controlPlaneLast(a) - controlPlaneLast(b));
}

export async function sleepCluster(
  runtime: ContainerRuntime,
  cluster: string,
  mode: SleepMode,
  reporter: Reporter,
): Promise<void> {
  const containers = await clusterContainers(runtime, cluster);
  const record = await sleepRecord(runtime, cluster);
  if (record) {
    throw new VindError(
      `cluster "${cluster}" is already asleep (${record.mode} since ${record.since}): wake it with \`vind wake ${cluster}\``,
    );
  }
  if (mode === 'checkpoint') {
    throw new VindError(
      'sleep mode checkpoint needs CRIU 4.1 or later in the node image, which this image does not have: use --mode pause or --mode stop',
    );
  }
  const notRunning = containers.filter((c) => c.state !== 'running');
  if (notRunning.length > 0) {
    throw new VindError(
      `cluster "${cluster}" is not running (${notRunning.map((c) => `${c.name} ${c.state}`).join(', ')}): start it with \`vind wake ${cluster}\` or look with \`vind list\``,
    );
  }
  // The record first: a sleep cut short (the CLI killed) is undone by `wake`, which reads it.
  await runtime.createVolume(sleepRecordName(cluster), {
    [LABELS.cluster]: cluster,
    [LABELS.sleepMode]: mode,
    [LABELS.sleepSince]: new Date().toISOString(),
  });
  try {
    await putToSleep(runtime, cluster, containers, mode, reporter);
  } catch (error) {
    // Half asleep is worse than awake: take back what was done, then say what failed.
    await Promise.all(
      containers.map(async (c) => {
        await runtime.unpauseContainer(c.name).catch(() => undefined);
        await runtime.startContainer(c.name).catch(() => undefined);
        await runtime.setRestartPolicy(c.name, 'unless-stopped').catch(() => undefined);
      }),
    );
    await runtime.removeVolume(sleepRecordName(cluster)).catch(() => undefined);
    throw error;
  }
}

async function putToSleep(
  runtime: ContainerRuntime,
  cluster: string,
  containers: ContainerInfo[],
  mode: SleepMode,
  reporter: Reporter,
): Promise<void> {
  await Promise.all(containers.map((c) => runtime.setRestartPolicy(c.name, 'no')));
  if (mode === 'pause') {
    await reporter.step(`pause ${containers.length} containers`, () =>
      Promise.all(containers.map((c) => runtime.pauseContainer(c.name))),
    );
  } else {
    await reporter.step(`stop ${containers.length} containers`, async () => {
      const workers = containers.filter((c) => c.labels[LABELS.role] !== 'control-plane');
      await Promise.all(workers.map((c) => runtime.stopContainer(c.name, 10)));
      await Promise.all(
        containers.filter((c) => !workers.includes(c)).map((c) => runtime.stopContainer(c.name, 10)),
      );
    });
  }
}

async function waitFor(what: string, deadline: number, probe: () => Promise<boolean>): Promise<void> {
  try {
    await poll(what, async () => ((await probe().catch(() => false)) ? true : undefined), {
      deadline,
      intervalMs: 100,
    });
  } catch (error) {
    if (error instanceof PollTimeoutError) {
      throw new VindError(`timed out waiting for ${what}: look with \`vind list\` and \`kubectl get nodes\``);
    }
    throw error;
  }
}

export interface WakeOptions {
  probes?: WakeProbes;
  timeoutMs?: number;
}

/** Wakes a sleeping cluster; a cluster whose containers were stopped behind vind's back is started too. */
export async function wakeCluster(
  runtime: ContainerRuntime,
  cluster: string,
  reporter: Reporter,
  options: WakeOptions = {},
): Promise<SleepMode> {
  const probes = options.probes ?? kubernetesWakeProbes;
  const deadline = Date.now() + (options.timeoutMs ?? 300_000);
  const containers = await clusterContainers(runtime, cluster);
  const record = await sleepRecord(runtime, cluster);
  const paused = containers.filter((c) => c.state === 'paused');
  const stopped = containers.filter((c) => c.state !== 'running' && c.state !== 'paused');
  if (!record && paused.length === 0 && stopped.length === 0) {
    throw new VindError(`cluster "${cluster}" is not asleep: it is running`);
  }
  if (paused.length > 0) {
    await reporter.step(`unpause ${paused.length} containers`, () =>
      Promise.all(paused.map((c) => runtime.unpauseContainer(c.name))),
    );
  }
  if (stopped.length > 0) {
    await reporter.step(`start ${stopped.length} containers`, async () => {
      // The control plane first: the workers' kubelets then find the API as soon as they look.
      for (const c of [...stopped].reverse()) await runtime.startContainer(c.name);
    });
  }
  const target = targetFromKubeconfig(await clusterKubeconfig(runtime, cluster, false));
  await reporter.step('wait for the API server', () =>
    waitFor('the API server', deadline, () => probes.apiReady(target)),
  );
  // After a pause of more than 30 s each kubelet finds its last look at containerd too old and says
  // NotReady until its next one, at most 5 s later: nodes Ready again is when the wake has settled.
  await reporter.step('wait for nodes Ready', () =>
    waitFor('every node to be Ready', deadline, () => probes.allNodesReady(target)),
  );
  if (stopped.length > 0) {
    await reporter.step('wait for CoreDNS', () =>
      waitFor('CoreDNS', deadline, () => probes.coreDnsAvailable(target)),
    );
  }
  await Promise.all(containers.map((c) => runtime.setRestartPolicy(c.name, 'unless-stopped')));
  await runtime.removeVolume(sleepRecordName(cluster));
  return record?.mode ?? (paused.length > 0 ? 'pause' : 'stop');
}
