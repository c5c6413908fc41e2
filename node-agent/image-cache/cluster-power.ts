// Wake on demand and auto-sleep, done by the engine broker on the word of a cluster's front door
// (node-agent/front-door.ts), which holds no Docker socket. The work itself is the CLI's own
// (shared/sleep.ts): a wake unpauses or starts what sleeps and removes the record; an auto-sleep is a
// sleep in mode pause. One operation at a time per cluster, so that a burst of connections to a
// sleeping cluster wakes it once.

import { LABELS, type PowerAnswer, type PowerOperation } from '../../shared/contract.js';
import { VindError } from '../../shared/errors.js';
import {
  checkAwake,
  planWake,
  putToSleep,
  readSleepRecord,
  settleWake,
  type SleepEngine,
  sleepingContainers,
  wakeContainers,
  wokeFrom,
} from '../../shared/sleep.js';
import {
  DOCKER_SOCKET,
  createVolume,
  inspectContainer,
  listContainers,
  pauseContainer,
  removeVolume,
  setRestartPolicy,
  startContainer,
  stopContainer,
  unpauseContainer,
  volumeLabels,
} from './engine.js';

/** A refusal with the HTTP status the broker and the registry answer. */
export class PowerError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/** The host's Docker on the broker's socket, as the shared sleep code sees it. */
export function hostSleepEngine(socket = DOCKER_SOCKET): SleepEngine {
  return {
    clusterContainers: async (cluster) =>
      (await listContainers({ [LABELS.cluster]: cluster }, socket)).map((c) => ({
        name: (c.Names?.[0] ?? c.Id).replace(/^\//, ''),
        state: c.State ?? 'unknown',
        labels: c.Labels ?? {},
      })),
    pause: (name) => pauseContainer(name, socket),
    unpause: (name) => unpauseContainer(name, socket),
    start: (name) => startContainer(name, socket),
    stop: (name, timeout) => stopContainer(name, timeout, socket),
    setRestartPolicy: (name, policy) => setRestartPolicy(name, policy, socket),
    startedAt: async (name) => (await inspectContainer(name, socket))?.State?.StartedAt,
    volumeLabels: (labels) => volumeLabels(labels, socket),
    createVolume: (name, labels) => createVolume(name, labels, socket),
    removeVolume: (name) => removeVolume(name, socket),
  };
}

export class ClusterPower {
  private readonly queues = new Map<string, Promise<unknown>>();

  constructor(
    private readonly engine: SleepEngine,
    private readonly report: (cluster: string, text: string) => void = () => undefined,
  ) {}

  /** Runs one operation of a cluster after the ones before it. */
  private serial<T>(cluster: string, work: () => Promise<T>): Promise<T> {
    const before = this.queues.get(cluster) ?? Promise.resolve();
    const run = before.then(work, work);
    const settled = run.catch(() => undefined);
    this.queues.set(cluster, settled);
    void settled.then(() => {
      if (this.queues.get(cluster) === settled) this.queues.delete(cluster);
    });
    return run;
  }

  run(operation: PowerOperation, cluster: string): Promise<PowerAnswer> {
    return this.serial(cluster, async () => {
      try {
        return operation === 'wake' ? await this.wake(cluster) : await this.sleep(cluster);
      } catch (error) {
        if (error instanceof VindError && /does not exist/.test(error.message)) {
          throw new PowerError(404, error.message);
        }
        throw error;
      }
    });
  }

  private async wake(cluster: string): Promise<PowerAnswer> {
    const waking = await planWake(this.engine, cluster);
    if (!waking) return { state: 'awake' };
    const started = Date.now();
    await wakeContainers(waking, this.engine);
    await settleWake(this.engine, cluster, waking);
    const from = wokeFrom(waking);
    this.report(cluster, `woken on demand from ${from} in ${Date.now() - started}ms`);
    return { state: 'woke', from };
  }

  private async sleep(cluster: string): Promise<PowerAnswer> {
    const containers = await sleepingContainers(this.engine, cluster);
    const record = await readSleepRecord(this.engine, cluster);
    if (record) return { state: 'asleep' };
    try {
      checkAwake(cluster, containers);
    } catch (error) {
      // Some of it is stopped or paused behind vind's back: not a cluster to put to sleep.
      throw new PowerError(409, (error as Error).message);
    }
    await putToSleep(this.engine, cluster, containers, 'pause');
    this.report(cluster, 'paused after its idle time');
    return { state: 'slept' };
  }
}
