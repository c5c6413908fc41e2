// Sleep and wake as container work, written once for its two callers: the CLI (`vind sleep`,
// `vind wake`, with progress lines, the checkpoint and the readiness waits) and the image cache's
// engine broker (auto-sleep and wake on demand, asked by a cluster's front door). Each brings its
// own view of Docker as a `SleepEngine`.
//
// A sleeping cluster has a record, an empty volume labelled with its mode and since when, written
// before anything is touched, and its containers lose their restart policy, so that an engine
// restart or a reboot does not wake it. The front door is never put to sleep: it holds the API port
// and wakes the cluster when a client knocks.

import { LABELS, sleepRecordName, type SleepMode } from './contract.js';
import { VindError } from './errors.js';

export interface SleepContainer {
  name: string;
  /** Docker's state: running, paused, exited, created... */
  state: string;
  labels: Record<string, string>;
}

export interface SleepRecord {
  mode: SleepMode;
  /** RFC 3339. */
  since: string;
}

export type RestartPolicy = 'no' | 'unless-stopped';

/** What sleeping and waking ask of Docker. */
export interface SleepEngine {
  /** Every container carrying the cluster's label, running or not. */
  clusterContainers(cluster: string): Promise<SleepContainer[]>;
  pause(name: string): Promise<void>;
  unpause(name: string): Promise<void>;
  start(name: string): Promise<void>;
  stop(name: string, timeoutSeconds: number): Promise<void>;
  setRestartPolicy(name: string, policy: RestartPolicy): Promise<void>;
  /** When the container last started (RFC 3339), or undefined when it never did or is gone. */
  startedAt(name: string): Promise<string | undefined>;
  /** The labels of the volumes carrying all of these labels. */
  volumeLabels(labels: Record<string, string>): Promise<Record<string, string>[]>;
  createVolume(name: string, labels: Record<string, string>): Promise<void>;
  removeVolume(name: string): Promise<void>;
}

/** How a caller shows progress: a named step with its duration, or nothing. */
export type StepRunner = <T>(name: string, work: (note: (text: string) => void) => Promise<T>) => Promise<T>;

export const silently: StepRunner = (_name, work) => work(() => undefined);

const STOP_TIMEOUT_SECONDS = 10;

export function recordFromLabels(labels: Record<string, string>): SleepRecord {
  return { mode: labels[LABELS.sleepMode] as SleepMode, since: labels[LABELS.sleepSince] ?? '' };
}

export async function readSleepRecord(
  engine: SleepEngine,
  cluster: string,
): Promise<SleepRecord | undefined> {
  const [labels] = await engine.volumeLabels({ [LABELS.cluster]: cluster, [LABELS.sleepMode]: '' });
  return labels && recordFromLabels(labels);
}

function roleOf(container: SleepContainer): string | undefined {
  return container.labels[LABELS.role];
}

export function controlPlaneOf<C extends SleepContainer>(containers: C[]): C {
  const controlPlane = containers.find((c) => roleOf(c) === 'control-plane');
  if (!controlPlane) throw new Error('the cluster has no control plane');
  return controlPlane;
}

/**
 * The containers that sleep: the nodes, the control plane last, and the host-port forwarders; not the
 * front door. A cluster without a control plane does not exist.
 */
export async function sleepingContainers(engine: SleepEngine, cluster: string): Promise<SleepContainer[]> {
  const containers = (await engine.clusterContainers(cluster)).filter((c) => roleOf(c) !== 'front-door');
  if (!containers.some((c) => roleOf(c) === 'control-plane')) {
    throw new VindError(`cluster "${cluster}" does not exist: see \`vind list\``);
  }
  const controlPlaneLast = (c: SleepContainer) => (roleOf(c) === 'control-plane' ? 1 : 0);
  return containers.sort((a, b) => controlPlaneLast(a) - controlPlaneLast(b));
}

/** Refuses a cluster that sleeps already, or has containers that do not run. */
export function checkAwake(cluster: string, containers: SleepContainer[], record?: SleepRecord): void {
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
}

export interface SleepOptions {
  step?: StepRunner;
  /**
   * Mode checkpoint: dumps the control plane's daemons, which stop; the container is stopped after.
   * Failing, it leaves the daemons running.
   */
  checkpoint?(controlPlane: string, note: (text: string) => void): Promise<void>;
}

/**
 * Puts running containers to sleep: the record first (a sleep cut short is undone by `wake`, which
 * reads it), then the work; half asleep is worse than awake, so a failure takes back what was done.
 */
export async function putToSleep(
  engine: SleepEngine,
  cluster: string,
  containers: SleepContainer[],
  mode: SleepMode,
  options: SleepOptions = {},
): Promise<void> {
  const step = options.step ?? silently;
  if (mode === 'checkpoint' && !options.checkpoint) throw new Error('mode checkpoint needs a checkpointer');
  await engine.createVolume(sleepRecordName(cluster), {
    [LABELS.cluster]: cluster,
    [LABELS.sleepMode]: mode,
    [LABELS.sleepSince]: new Date().toISOString(),
  });
  let checkpointed = false;
  const controlPlane = controlPlaneOf(containers);
  const stopAll = (list: SleepContainer[]) =>
    Promise.all(list.map((c) => engine.stop(c.name, STOP_TIMEOUT_SECONDS)));
  try {
    await Promise.all(containers.map((c) => engine.setRestartPolicy(c.name, 'no')));
    const others = containers.filter((c) => c !== controlPlane);
    if (mode === 'pause') {
      await step(`pause ${containers.length} containers`, () =>
        Promise.all(containers.map((c) => engine.pause(c.name))),
      );
    } else if (mode === 'checkpoint') {
      if (others.length > 0) await step(`stop ${others.length} containers`, () => stopAll(others));
      // A checkpoint that fails leaves the daemons running (the agent starts them again); one that
      // returns has stopped them.
      await step('checkpoint the control plane', (note) => options.checkpoint!(controlPlane.name, note));
      checkpointed = true;
      await step('stop the control plane', () => stopAll([controlPlane]));
    } else {
      // The workers first: a kubelet that outlives its API server only logs errors.
      await step(`stop ${containers.length} containers`, async () => {
        await stopAll(others);
        await stopAll([controlPlane]);
      });
    }
  } catch (error) {
    // A control plane whose daemons may be dumped and gone: a new start of the container restores them.
    if (checkpointed) await engine.stop(controlPlane.name, STOP_TIMEOUT_SECONDS).catch(() => undefined);
    await Promise.all(
      containers.map(async (c) => {
        await engine.unpause(c.name).catch(() => undefined);
        await engine.start(c.name).catch(() => undefined);
        await engine.setRestartPolicy(c.name, 'unless-stopped').catch(() => undefined);
      }),
    );
    await engine.removeVolume(sleepRecordName(cluster)).catch(() => undefined);
    throw error;
  }
}

export interface Waking {
  containers: SleepContainer[];
  record?: SleepRecord;
  /** The containers the wake unpauses. */
  paused: SleepContainer[];
  /** The containers the wake starts (the control plane before the others). */
  stopped: SleepContainer[];
}

/**
 * What a wake has to do, or undefined for a cluster that is awake. A cluster whose containers were
 * stopped behind vind's back counts as asleep. A checkpoint sleep cut short may leave the control
 * plane running without its daemons: one that has not started since the sleep began is started again
 * (a start restores the daemons from their checkpoint, or boots them).
 */
export async function planWake(engine: SleepEngine, cluster: string): Promise<Waking | undefined> {
  const containers = await sleepingContainers(engine, cluster);
  const record = await readSleepRecord(engine, cluster);
  const paused = containers.filter((c) => c.state === 'paused');
  const stopped = containers.filter((c) => c.state !== 'running' && c.state !== 'paused');
  const controlPlane = controlPlaneOf(containers);
  if (record?.mode === 'checkpoint' && controlPlane.state === 'running') {
    const started = Date.parse((await engine.startedAt(controlPlane.name)) ?? '');
    if (!(started >= Date.parse(record.since))) {
      await engine.stop(controlPlane.name, STOP_TIMEOUT_SECONDS);
      stopped.push(controlPlane);
    }
  }
  if (!record && paused.length === 0 && stopped.length === 0) return undefined;
  return { containers, record, paused, stopped };
}

/** Unpauses and starts what `planWake` found; the cluster still counts as asleep until `settleWake`. */
export async function wakeContainers(waking: Waking, engine: SleepEngine, step: StepRunner = silently) {
  const { paused, stopped } = waking;
  if (paused.length > 0) {
    await step(`unpause ${paused.length} containers`, () =>
      Promise.all(paused.map((c) => engine.unpause(c.name))),
    );
  }
  if (stopped.length > 0) {
    await step(`start ${stopped.length} containers`, async () => {
      // The control plane first, the rest at once.
      const first = stopped.filter((c) => roleOf(c) === 'control-plane');
      for (const c of first) await engine.start(c.name);
      await Promise.all(stopped.filter((c) => !first.includes(c)).map((c) => engine.start(c.name)));
    });
  }
}

/** The cluster is awake: the engine may restart its containers again, and the record goes. */
export async function settleWake(engine: SleepEngine, cluster: string, waking: Waking): Promise<void> {
  await Promise.all(waking.containers.map((c) => engine.setRestartPolicy(c.name, 'unless-stopped')));
  await engine.removeVolume(sleepRecordName(cluster));
}

/** The mode a wake brings a cluster back from. */
export function wokeFrom(waking: Waking): SleepMode {
  return waking.record?.mode ?? (waking.paused.length > 0 ? 'pause' : 'stop');
}
