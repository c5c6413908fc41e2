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
// The container work is shared/sleep.ts, which the image cache's broker runs too for the front door
// (wake on demand, auto-sleep; `setSleepAfter` changes the idle time). A sleeping cluster has a
// record, an empty volume labelled with its mode and since when, and its containers lose their
// restart policy: an engine restart or a reboot does not wake it (a paused cluster comes back from
// one stopped, its memory gone with the engine). The image cache and other clusters are not touched.

import {
  API_SERVER_PORT,
  CHECKPOINT,
  type CheckpointReport,
  controlPlaneName,
  decodeFrontDoorEnv,
  encodeFrontDoorEnv,
  FRONT_DOOR_ENV,
  frontDoorName,
  LABELS,
  networkName,
  SLEEP_MODES,
  type SleepMode,
} from '../shared/contract.js';
import { VindError } from '../shared/errors.js';
import {
  apiReady,
  deploymentAvailable,
  isNodeReady,
  type KubeNode,
  kubeGet,
  type KubeTarget,
  listNodes,
  targetFromKubeconfig,
} from '../shared/kubernetes.js';
import { poll, PollTimeoutError } from '../shared/poll.js';
import {
  checkAwake,
  controlPlaneOf,
  planWake,
  putToSleep,
  readSleepRecord,
  settleWake,
  type SleepEngine,
  sleepingContainers,
  wakeContainers,
  wokeFrom,
} from '../shared/sleep.js';
import { clusterKubeconfig } from './clusters.js';
import { formatSleepAfter } from './duration.js';
import type { Reporter } from './progress.js';
import type { ContainerRuntime } from './runtime/runtime.js';

/** What waking asks the cluster's API; the real one, or a stand-in in tests. */
export interface WakeProbes {
  apiReady(target: KubeTarget): Promise<boolean>;
  /**
   * Every node Ready; with `heartbeatSince`, posted by its kubelet after that moment (a restored
   * control plane still holds the Ready the kubelets posted before the sleep).
   */
  allNodesReady(target: KubeTarget, heartbeatSince?: Date): Promise<boolean>;
  /** Every node has posted its status (Ready or not), after `heartbeatSince` when given. */
  allNodesReported(target: KubeTarget, heartbeatSince?: Date): Promise<boolean>;
  /** CoreDNS available; with `readySince`, a pod of it Ready with containers started after that moment. */
  coreDnsAvailable(target: KubeTarget, readySince?: Date): Promise<boolean>;
}

/** Whether the node's kubelet posted its Ready condition (whatever it says) after `since`. */
function postedSince(node: KubeNode, since: Date | undefined): boolean {
  const ready = node.status?.conditions?.find((c) => c.type === 'Ready');
  if (!ready) return false;
  return !since || Date.parse(ready.lastHeartbeatTime ?? '') > since.getTime();
}

export const kubernetesWakeProbes: WakeProbes = {
  apiReady,
  allNodesReady: async (target, heartbeatSince) => {
    const nodes = await listNodes(target);
    return nodes.length > 0 && nodes.every((n) => isNodeReady(n) && postedSince(n, heartbeatSince));
  },
  allNodesReported: async (target, heartbeatSince) => {
    const nodes = await listNodes(target);
    return nodes.length > 0 && nodes.every((n) => postedSince(n, heartbeatSince));
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

/** The CLI's runtime as the shared sleep code sees Docker. */
export function runtimeSleepEngine(runtime: ContainerRuntime): SleepEngine {
  return {
    clusterContainers: (cluster) => runtime.listContainers([`${LABELS.cluster}=${cluster}`]),
    pause: (name) => runtime.pauseContainer(name),
    unpause: (name) => runtime.unpauseContainer(name),
    start: (name) => runtime.startContainer(name),
    stop: (name, timeout) => runtime.stopContainer(name, timeout),
    setRestartPolicy: (name, policy) => runtime.setRestartPolicy(name, policy),
    startedAt: async (name) => (await runtime.inspectContainer(name))?.startedAt,
    volumeLabels: async (labels) =>
      (
        await runtime.listVolumes(
          Object.entries(labels).map(([key, value]) => (value === '' ? key : `${key}=${value}`)),
        )
      ).map((v) => v.labels),
    createVolume: (name, labels) => runtime.createVolume(name, labels),
    removeVolume: (name) => runtime.removeVolume(name),
  };
}

export async function sleepCluster(
  runtime: ContainerRuntime,
  cluster: string,
  mode: SleepMode,
  reporter: Reporter,
): Promise<void> {
  const engine = runtimeSleepEngine(runtime);
  const containers = await sleepingContainers(engine, cluster);
  checkAwake(cluster, containers, await readSleepRecord(engine, cluster));
  if (mode === 'checkpoint') await checkpointAvailable(runtime, controlPlaneOf(containers).name);
  await putToSleep(engine, cluster, containers, mode, {
    step: (name, work) => reporter.step(name, work),
    checkpoint: (controlPlane, note) => checkpointControlPlane(runtime, controlPlane, note),
  });
}

/** Whether CRIU works in the control plane; if not, one line naming what is missing. */
async function checkpointAvailable(runtime: ContainerRuntime, controlPlane: string): Promise<void> {
  const result = await runtime.exec(controlPlane, [...CHECKPOINT.checkCommand]);
  if (result.exitCode === 0) return;
  const output = `${result.stderr}\n${result.stdout}`;
  if (
    result.exitCode === 126 ||
    result.exitCode === 127 ||
    /executable file not found|no such file/i.test(output)
  ) {
    throw new VindError(
      `sleep mode checkpoint needs CRIU in the node image, and the image of ${controlPlane} has none: build the image again with \`vind image build\` and create the cluster from it, or use --mode pause or --mode stop`,
    );
  }
  const lines = output
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('Warn'));
  throw new VindError(
    `sleep mode checkpoint is not available here: \`criu check\` in ${controlPlane} says "${lines.at(-1) ?? `exit code ${result.exitCode}`}": use --mode pause or --mode stop`,
  );
}

export function parseCheckpointReport(text: string): CheckpointReport {
  const report = JSON.parse(text.trim().split('\n').at(-1) ?? '') as CheckpointReport;
  if (!Array.isArray(report.daemons) || typeof report.bytes !== 'number' || typeof report.ms !== 'number') {
    throw new Error(`unexpected checkpoint report: ${text.trim()}`);
  }
  return report;
}

async function checkpointControlPlane(
  runtime: ContainerRuntime,
  controlPlane: string,
  note: (text: string) => void,
): Promise<void> {
  const result = await runtime.exec(controlPlane, [...CHECKPOINT.command]);
  if (result.exitCode !== 0) {
    const why = result.stderr.trim().split('\n').at(-1) || `exit code ${result.exitCode}`;
    throw new VindError(`checkpointing ${controlPlane} failed: ${why}`);
  }
  // The daemons are dumped and gone: a report that does not read is no reason to undo the sleep.
  try {
    const report = parseCheckpointReport(result.stdout);
    note(
      `${report.daemons.length} daemons, ${Math.round(report.bytes / 2 ** 20)} MiB, dumped in ${report.ms}ms`,
    );
  } catch {
    note('dumped');
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
  const engine = runtimeSleepEngine(runtime);
  const waking = await planWake(engine, cluster);
  if (!waking) throw new VindError(`cluster "${cluster}" is not asleep: it is running`);
  const { containers, record, stopped } = waking;
  await wakeContainers(waking, engine, (name, work) => reporter.step(name, work));
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
  // With `networking.cni: none` the nodes are Ready only once the user's CNI is, perhaps never: as
  // `create`, waking waits for every node to report, and not for CoreDNS.
  const ownNetwork =
    containers.find((c) => c.labels[LABELS.role] === 'control-plane')?.labels[LABELS.cni] !== 'none';
  if (hasWorkers && ownNetwork) {
    await reporter.step('wait for nodes Ready', () =>
      waitFor('every node to be Ready', deadline, () => probes.allNodesReady(target, heartbeatSince)),
    );
  } else if (hasWorkers) {
    await reporter.step('wait for nodes to report', () =>
      waitFor('every node to report', deadline, () => probes.allNodesReported(target, heartbeatSince)),
    );
  }
  if (stopped.length > 0 && hasWorkers && ownNetwork) {
    await reporter.step('wait for CoreDNS', () =>
      waitFor('CoreDNS', deadline, () => probes.coreDnsAvailable(target, heartbeatSince)),
    );
  }
  await settleWake(engine, cluster, waking);
  return wokeFrom(waking);
}

/**
 * `vind sleep NAME --after 30m`: the front door's idle time, 0 for never. The front door is made
 * again with it (its settings travel in its environment); clients reconnect to the same port.
 */
export async function setSleepAfter(runtime: ContainerRuntime, cluster: string, sleepAfterMs: number) {
  const controlPlane = await runtime.inspectContainer(controlPlaneName(cluster));
  if (!controlPlane) throw new VindError(`cluster "${cluster}" does not exist: see \`vind list\``);
  const door = await runtime.inspectContainer(frontDoorName(cluster));
  if (!door) {
    throw new VindError(
      `cluster "${cluster}" has no front door (it was made by an older vind): auto-sleep needs a cluster made by this one, \`vind delete ${cluster}\` and create it again`,
    );
  }
  const env = await runtime.exec(door.name, ['printenv', FRONT_DOOR_ENV]);
  if (env.exitCode !== 0) {
    throw new VindError(
      `cannot read the settings of ${door.name} (${door.state}): look with \`docker logs ${door.name}\``,
    );
  }
  const settings = decodeFrontDoorEnv({ [FRONT_DOOR_ENV]: env.stdout.trim() });
  const port = Number(controlPlane.labels[LABELS.apiPort]);
  await runtime.removeContainer(door.name);
  await runtime.runFrontDoor({
    cluster,
    image: door.image ?? controlPlane.image ?? '',
    network: networkName(cluster),
    port: { containerPort: API_SERVER_PORT, hostPort: port, listenAddress: '127.0.0.1', protocol: 'TCP' },
    env: encodeFrontDoorEnv({ ...settings, sleepAfterMs }),
    labels: sleepAfterMs > 0 ? { [LABELS.sleepAfter]: formatSleepAfter(sleepAfterMs) } : {},
  });
}
