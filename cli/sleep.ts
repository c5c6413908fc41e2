// Sleep and wake: a cluster frees what it uses while nobody needs it, and comes back as it was.
//
//   pause   every container frozen (the cgroup freezer): no CPU at once, memory kept; wake thaws them
//           and every pod goes on with the same containers and the same memory.
//   stop    every container stopped: memory and CPU freed, everything kept on the volumes; wake starts
//           them and waits until the API answers, every node is Ready and CoreDNS is available.
//   checkpoint  as stop, but the control plane's daemons are first checkpointed with CRIU (the agent's
//           `checkpoint` command, through `docker exec`) onto its volume; its next start restores them,
//           so the API comes back with its memory instead of booting. Workers cannot be dumped (their
//           pods live in nested PID namespaces): they are stopped and started as in stop. `criu check`
//           in the control plane decides whether the mode is available, before anything is touched.
//
// A sleeping cluster has a record, an empty volume labelled with its mode and since when, and its
// containers lose their restart policy: an engine restart or a reboot does not wake it (a paused
// cluster comes back from one stopped, its memory gone with the engine). The image cache and other
// clusters are not touched.

import {
  CHECKPOINT,
  type CheckpointReport,
  LABELS,
  SLEEP_MODES,
  sleepRecordName,
  type SleepMode,
} from '../shared/contract.js';
import { VindError } from '../shared/errors.js';
import {
  apiReady,
  deploymentAvailable,
  isNodeReady,
  kubeGet,
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
  /**
   * Every node Ready; with `heartbeatSince`, posted by its kubelet after that moment (a restored
   * control plane still holds the Ready the kubelets posted before the sleep).
   */
  allNodesReady(target: KubeTarget, heartbeatSince?: Date): Promise<boolean>;
  /** CoreDNS available; with `readySince`, a pod of it Ready with containers started after that moment. */
  coreDnsAvailable(target: KubeTarget, readySince?: Date): Promise<boolean>;
}

export const kubernetesWakeProbes: WakeProbes = {
  apiReady,
  allNodesReady: async (target, heartbeatSince) => {
    const nodes = await listNodes(target);
    const fresh = (node: (typeof nodes)[number]) => {
      if (!heartbeatSince) return true;
      const ready = node.status?.conditions?.find((c) => c.type === 'Ready');
      return Date.parse(ready?.lastHeartbeatTime ?? '') > heartbeatSince.getTime();
    };
    return nodes.length > 0 && nodes.every((n) => isNodeReady(n) && fresh(n));
  },
  coreDnsAvailable: async (target, readySince) => {
    if (!readySince) return deploymentAvailable(target, 'kube-system', 'coredns');
    // The Deployment's status may still be the one from before the sleep: a pod Ready with containers
    // started since then is not.
    const pods = await kubeGet<{
      items: {
        status?: {
          conditions?: { type: string; status: string }[];
          containerStatuses?: { state?: { running?: { startedAt?: string } } }[];
        };
      }[];
    }>(target, '/api/v1/namespaces/kube-system/pods?labelSelector=k8s-app%3Dkube-dns');
    return pods.items.some(
      (pod) =>
        pod.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') &&
        (pod.status.containerStatuses ?? []).length > 0 &&
        pod.status.containerStatuses!.every(
          (c) => Date.parse(c.state?.running?.startedAt ?? '') > readySince.getTime(),
        ),
    );
  },
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
  const notRunning = containers.filter((c) => c.state !== 'running');
  if (notRunning.length > 0) {
    throw new VindError(
      `cluster "${cluster}" is not running (${notRunning.map((c) => `${c.name} ${c.state}`).join(', ')}): start it with \`vind wake ${cluster}\` or look with \`vind list\``,
    );
  }
  if (mode === 'checkpoint') await checkpointAvailable(runtime, controlPlaneOf(containers));
  // The record first: a sleep cut short (the CLI killed) is undone by `wake`, which reads it.
  await runtime.createVolume(sleepRecordName(cluster), {
    [LABELS.cluster]: cluster,
    [LABELS.sleepMode]: mode,
    [LABELS.sleepSince]: new Date().toISOString(),
  });
  const progress: SleepProgress = { checkpointed: false };
  try {
    await putToSleep(runtime, cluster, containers, mode, reporter, progress);
  } catch (error) {
    // Half asleep is worse than awake: take back what was done, then say what failed.
    if (progress.checkpointed) {
      // Its daemons are dumped and stopped: a new start of the container restores them.
      const controlPlane = controlPlaneOf(containers).name;
      await runtime.stopContainer(controlPlane, 10).catch(() => undefined);
    }
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

function controlPlaneOf(containers: ContainerInfo[]): ContainerInfo {
  return containers.find((c) => c.labels[LABELS.role] === 'control-plane')!;
}

/** Whether CRIU works in the control plane; if not, one line naming what is missing. */
async function checkpointAvailable(runtime: ContainerRuntime, controlPlane: ContainerInfo): Promise<void> {
  const result = await runtime.exec(controlPlane.name, [...CHECKPOINT.checkCommand]);
  if (result.exitCode === 0) return;
  const output = `${result.stderr}\n${result.stdout}`;
  if (
    result.exitCode === 126 ||
    result.exitCode === 127 ||
    /executable file not found|no such file/i.test(output)
  ) {
    throw new VindError(
      `sleep mode checkpoint needs CRIU in the node image, and the image of ${controlPlane.name} has none: build the image again with \`vind image build\` and create the cluster from it, or use --mode pause or --mode stop`,
    );
  }
  const lines = output
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('Warn'));
  throw new VindError(
    `sleep mode checkpoint is not available here: \`criu check\` in ${controlPlane.name} says "${lines.at(-1) ?? `exit code ${result.exitCode}`}": use --mode pause or --mode stop`,
  );
}

export function parseCheckpointReport(text: string): CheckpointReport {
  const report = JSON.parse(text.trim().split('\n').at(-1) ?? '') as CheckpointReport;
  if (!Array.isArray(report.daemons) || typeof report.bytes !== 'number' || typeof report.ms !== 'number') {
    throw new Error(`unexpected checkpoint report: ${text.trim()}`);
  }
  return report;
}

/** What a sleep did so far, for taking it back. */
interface SleepProgress {
  /** The control plane's daemons are dumped and stopped. */
  checkpointed: boolean;
}

async function checkpointControlPlane(
  runtime: ContainerRuntime,
  controlPlane: string,
  reporter: Reporter,
  progress: SleepProgress,
): Promise<void> {
  await reporter.step('checkpoint the control plane', async (note) => {
    const result = await runtime.exec(controlPlane, [...CHECKPOINT.command]);
    if (result.exitCode !== 0) {
      const why = result.stderr.trim().split('\n').at(-1) || `exit code ${result.exitCode}`;
      throw new VindError(`checkpointing ${controlPlane} failed: ${why}`);
    }
    progress.checkpointed = true;
    const report = parseCheckpointReport(result.stdout);
    note(
      `${report.daemons.length} daemons, ${Math.round(report.bytes / 2 ** 20)} MiB, dumped in ${report.ms}ms`,
    );
  });
}

async function putToSleep(
  runtime: ContainerRuntime,
  cluster: string,
  containers: ContainerInfo[],
  mode: SleepMode,
  reporter: Reporter,
  progress: SleepProgress,
): Promise<void> {
  await Promise.all(containers.map((c) => runtime.setRestartPolicy(c.name, 'no')));
  if (mode === 'checkpoint') {
    const controlPlane = controlPlaneOf(containers);
    const others = containers.filter((c) => c !== controlPlane);
    if (others.length > 0) {
      await reporter.step(`stop ${others.length} containers`, () =>
        Promise.all(others.map((c) => runtime.stopContainer(c.name, 10))),
      );
    }
    await checkpointControlPlane(runtime, controlPlane.name, reporter, progress);
    await reporter.step('stop the control plane', () => runtime.stopContainer(controlPlane.name, 10));
  } else if (mode === 'pause') {
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
  if (record?.mode === 'checkpoint') {
    // A sleep cut short after the checkpoint leaves the control plane running without its daemons;
    // a new start of the container restores them.
    const controlPlane = controlPlaneOf(containers);
    if (controlPlane.state === 'running') {
      const target = targetFromKubeconfig(await clusterKubeconfig(runtime, cluster, false));
      if (!(await probes.apiReady(target).catch(() => false))) {
        await runtime.stopContainer(controlPlane.name, 10);
        stopped.push(controlPlane);
        stopped.sort((a, b) => Number(a === controlPlane) - Number(b === controlPlane));
      }
    }
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
  // A cluster without workers has no node to wait for, and nowhere to run CoreDNS (as `create`).
  const hasWorkers = containers.some((c) => c.labels[LABELS.role] === 'worker');
  // A control plane that was stopped (restored, or booted on its datastore) shows the nodes Ready as
  // they were before the sleep: only a kubelet's own post since then counts. After a pause the kubelets
  // went on as they were, and post their status only when it changes.
  const heartbeatSince =
    stopped.length > 0 ? new Date(record?.since ? Date.parse(record.since) : Date.now() - 1000) : undefined;
  if (hasWorkers) {
    await reporter.step('wait for nodes Ready', () =>
      waitFor('every node to be Ready', deadline, () => probes.allNodesReady(target, heartbeatSince)),
    );
  }
  if (stopped.length > 0 && hasWorkers) {
    await reporter.step('wait for CoreDNS', () =>
      waitFor('CoreDNS', deadline, () => probes.coreDnsAvailable(target, heartbeatSince)),
    );
  }
  await Promise.all(containers.map((c) => runtime.setRestartPolicy(c.name, 'unless-stopped')));
  await runtime.removeVolume(sleepRecordName(cluster));
  return record?.mode ?? (paused.length > 0 ? 'pause' : 'stop');
}
