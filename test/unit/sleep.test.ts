import { beforeEach, describe, expect, it } from 'vitest';
import { sleepRecord } from '../../cli/clusters.js';
import type { Reporter } from '../../cli/progress.js';
import {
  parseCheckpointReport,
  parseSleepMode,
  sleepCluster,
  wakeCluster,
  type WakeProbes,
} from '../../cli/sleep.js';
import { ADMIN_KUBECONFIG, CHECKPOINT, LABELS, sleepRecordName } from '../../shared/contract.js';
import { VindError } from '../../shared/errors.js';
import { FakeRuntime } from '../support/fake-runtime.js';

const quiet: Reporter = {
  step: (_name, work) => work(() => undefined),
  info: () => undefined,
  warn: () => undefined,
};

const ADMIN = `apiVersion: v1
kind: Config
clusters: [{ name: c, cluster: { server: 'https://172.30.0.2:6443', certificate-authority-data: Q0E= } }]
users: [{ name: u, user: { client-certificate-data: Q0VSVA==, client-key-data: S0VZ } }]
contexts: [{ name: x, context: { cluster: c, user: u } }]
current-context: x
`;

const ready: WakeProbes = {
  apiReady: async () => true,
  allNodesReady: async () => true,
  allNodesReported: async () => true,
  coreDnsAvailable: async () => true,
};

async function cluster(runtime: FakeRuntime, name = 'dev', cni = 'default'): Promise<void> {
  const common = {
    cluster: name,
    image: 'vind/node:x',
    securityMode: 'privileged' as const,
    network: `vind-${name}`,
    env: [],
    ports: [],
  };
  await runtime.runNode({
    ...common,
    name: `${name}-control-plane`,
    role: 'control-plane',
    address: '172.30.0.2',
    labels: { [LABELS.apiPort]: '6443', [LABELS.cni]: cni },
  });
  await runtime.runNode({
    ...common,
    name: `${name}-worker`,
    role: 'worker',
    address: '172.30.0.3',
    labels: {},
  });
  await runtime.writeFile(`${name}-control-plane`, ADMIN_KUBECONFIG, ADMIN);
}

async function states(runtime: FakeRuntime, name = 'dev'): Promise<string[]> {
  return (await runtime.listContainers([`${LABELS.cluster}=${name}`])).map((c) => c.state);
}

describe('sleep and wake against a fake runtime', () => {
  let runtime: FakeRuntime;

  beforeEach(async () => {
    runtime = new FakeRuntime();
    await cluster(runtime);
    await cluster(runtime, 'other');
    runtime.calls.length = 0;
  });

  it('pauses every container of the cluster, records it, and keeps the engine from restarting them', async () => {
    await sleepCluster(runtime, 'dev', 'pause', quiet);
    expect(await states(runtime)).toEqual(['paused', 'paused']);
    expect(await states(runtime, 'other')).toEqual(['running', 'running']);
    expect(runtime.restartPolicies.get('dev-worker')).toBe('no');
    expect((await sleepRecord(runtime, 'dev'))?.mode).toBe('pause');
    expect(runtime.calls.indexOf('createVolume dev-sleep')).toBeLessThan(
      runtime.calls.indexOf('pauseContainer dev-worker'),
    );
  });

  it('stops the workers before the control plane', async () => {
    await sleepCluster(runtime, 'dev', 'stop', quiet);
    expect(await states(runtime)).toEqual(['exited', 'exited']);
    expect(runtime.calls.indexOf('stopContainer dev-worker')).toBeLessThan(
      runtime.calls.indexOf('stopContainer dev-control-plane'),
    );
  });

  it('refuses a second sleep, checkpoint without CRIU and a missing cluster before touching anything', async () => {
    await sleepCluster(runtime, 'dev', 'pause', quiet);
    runtime.calls.length = 0;
    await expect(sleepCluster(runtime, 'dev', 'stop', quiet)).rejects.toThrow(/already asleep \(pause since/);
    runtime.execAnswer = (_container, command) =>
      command[0] === 'criu'
        ? { exitCode: 127, stdout: '', stderr: 'exec: "criu": executable file not found in $PATH' }
        : undefined;
    await expect(sleepCluster(runtime, 'other', 'checkpoint', quiet)).rejects.toThrow(
      'sleep mode checkpoint needs CRIU in the node image, and the image of other-control-plane has none',
    );
    await expect(sleepCluster(runtime, 'gone', 'pause', quiet)).rejects.toThrow(
      'cluster "gone" does not exist',
    );
    expect(runtime.calls.filter((c) => !c.startsWith('exec'))).toEqual([]);
    expect(() => parseSleepMode('nap')).toThrow(
      new VindError('unknown sleep mode "nap": use pause, stop, checkpoint'),
    );
  });

  it('takes everything back when a pause fails half-way', async () => {
    runtime.failWhen = (method, subject) =>
      method === 'pauseContainer' && subject === 'dev-control-plane'
        ? new Error('engine said no')
        : undefined;
    await expect(sleepCluster(runtime, 'dev', 'pause', quiet)).rejects.toThrow('engine said no');
    expect(await states(runtime)).toEqual(['running', 'running']);
    expect(runtime.restartPolicies.get('dev-worker')).toBe('unless-stopped');
    expect(await sleepRecord(runtime, 'dev')).toBeUndefined();
  });

  it('wakes a paused cluster by thawing it, and a stopped one by starting the control plane first', async () => {
    await sleepCluster(runtime, 'dev', 'pause', quiet);
    expect(await wakeCluster(runtime, 'dev', quiet, { probes: ready })).toBe('pause');
    expect(await states(runtime)).toEqual(['running', 'running']);
    expect(await sleepRecord(runtime, 'dev')).toBeUndefined();
    expect(runtime.restartPolicies.get('dev-control-plane')).toBe('unless-stopped');

    await sleepCluster(runtime, 'dev', 'stop', quiet);
    runtime.calls.length = 0;
    expect(await wakeCluster(runtime, 'dev', quiet, { probes: ready })).toBe('stop');
    expect(runtime.calls.filter((c) => c.startsWith('startContainer'))).toEqual([
      'startContainer dev-control-plane',
      'startContainer dev-worker',
    ]);
  });

  it('counts only nodes and CoreDNS that came back since the sleep after a stop, and as they are after a pause', async () => {
    const asked: (string | undefined)[] = [];
    const probes: WakeProbes = {
      ...ready,
      allNodesReady: async (_target, heartbeatSince) => {
        asked.push(heartbeatSince?.toISOString());
        return true;
      },
      coreDnsAvailable: async (_target, readySince) => {
        asked.push(`coredns ${readySince?.toISOString()}`);
        return true;
      },
    };
    await sleepCluster(runtime, 'dev', 'stop', quiet);
    const since = (await sleepRecord(runtime, 'dev'))!.since;
    await wakeCluster(runtime, 'dev', quiet, { probes });
    await sleepCluster(runtime, 'dev', 'pause', quiet);
    await wakeCluster(runtime, 'dev', quiet, { probes });
    expect(asked).toEqual([
      new Date(since).toISOString(),
      `coredns ${new Date(since).toISOString()}`,
      undefined,
    ]);
  });

  it('wakes a paused cluster that an engine restart left stopped', async () => {
    await sleepCluster(runtime, 'dev', 'pause', quiet);
    for (const name of ['dev-control-plane', 'dev-worker']) await runtime.stopContainer(name);
    expect(await wakeCluster(runtime, 'dev', quiet, { probes: ready })).toBe('pause');
    expect(await states(runtime)).toEqual(['running', 'running']);
  });

  it('refuses to wake a running cluster, and says when the API does not come back', async () => {
    await expect(wakeCluster(runtime, 'dev', quiet, { probes: ready })).rejects.toThrow(
      'cluster "dev" is not asleep: it is running',
    );
    await sleepCluster(runtime, 'dev', 'stop', quiet);
    await expect(
      wakeCluster(runtime, 'dev', quiet, {
        probes: { ...ready, apiReady: async () => false },
        timeoutMs: 300,
      }),
    ).rejects.toThrow('timed out waiting for the API server');
    expect(runtime.volumes.has(sleepRecordName('dev'))).toBe(true);
  });

  describe('mode checkpoint', () => {
    const checkpointCommand = CHECKPOINT.command.join(' ');
    const report = { daemons: ['kine', 'kube-apiserver'], bytes: 300 * 2 ** 20, ms: 400 };

    beforeEach(() => {
      runtime.execAnswer = (_container, command) =>
        command.join(' ') === checkpointCommand
          ? { exitCode: 0, stdout: `${JSON.stringify(report)}\n`, stderr: '' }
          : undefined;
    });

    it('stops the workers, checkpoints the control plane through exec, then stops it', async () => {
      await sleepCluster(runtime, 'dev', 'checkpoint', quiet);
      expect(await states(runtime)).toEqual(['exited', 'exited']);
      expect((await sleepRecord(runtime, 'dev'))?.mode).toBe('checkpoint');
      expect(runtime.execs).toEqual([
        `dev-control-plane: ${CHECKPOINT.checkCommand.join(' ')}`,
        `dev-control-plane: ${checkpointCommand}`,
      ]);
      const at = (call: string) => runtime.calls.indexOf(call);
      const checkpointAt = runtime.calls.lastIndexOf('exec dev-control-plane');
      expect(at('stopContainer dev-worker')).toBeLessThan(checkpointAt);
      expect(checkpointAt).toBeLessThan(at('stopContainer dev-control-plane'));
    });

    it('is refused before anything is touched when criu check fails, naming what it said', async () => {
      runtime.execAnswer = (_container, command) =>
        command[0] === 'criu'
          ? {
              exitCode: 1,
              stdout: "Warn  (criu/kerndat.c:1290): Can't keep kdat cache on non-tempfs\n",
              stderr: 'Error (criu/cr-check.c:1): CRIU needs CAP_CHECKPOINT_RESTORE\n',
            }
          : undefined;
      await expect(sleepCluster(runtime, 'dev', 'checkpoint', quiet)).rejects.toThrow(
        /criu check` in dev-control-plane says "Error \(criu\/cr-check.c:1\): CRIU needs CAP_CHECKPOINT_RESTORE"/,
      );
      expect(runtime.calls.filter((c) => !c.startsWith('exec') && !c.startsWith('list'))).toEqual([]);
      expect(await sleepRecord(runtime, 'dev')).toBeUndefined();
    });

    it('takes everything back when the checkpoint fails: the agent restarted its daemons itself', async () => {
      runtime.execAnswer = (_container, command) =>
        command.join(' ') === checkpointCommand
          ? { exitCode: 1, stdout: '', stderr: 'criu could not dump kine: Error (x): no\n' }
          : undefined;
      await expect(sleepCluster(runtime, 'dev', 'checkpoint', quiet)).rejects.toThrow(
        'checkpointing dev-control-plane failed: criu could not dump kine: Error (x): no',
      );
      expect(await states(runtime)).toEqual(['running', 'running']);
      expect(runtime.calls).not.toContain('stopContainer dev-control-plane');
      expect(await sleepRecord(runtime, 'dev')).toBeUndefined();
    });

    it('restarts the control plane when it cannot be stopped after its checkpoint', async () => {
      let refusals = 1;
      runtime.failWhen = (method, subject) =>
        method === 'stopContainer' && subject === 'dev-control-plane' && refusals-- > 0
          ? new Error('engine said no')
          : undefined;
      await expect(sleepCluster(runtime, 'dev', 'checkpoint', quiet)).rejects.toThrow('engine said no');
      // Stopped and started again: its next start restores the daemons it dumped.
      expect(
        runtime.calls.filter((c) => c.endsWith('Container dev-control-plane') && !c.startsWith('unpause')),
      ).toEqual([
        'stopContainer dev-control-plane',
        'stopContainer dev-control-plane',
        'startContainer dev-control-plane',
      ]);
      expect(await states(runtime)).toEqual(['running', 'running']);
    });

    it('wakes the control plane first and counts only nodes that posted since the sleep', async () => {
      await sleepCluster(runtime, 'dev', 'checkpoint', quiet);
      const since = (await sleepRecord(runtime, 'dev'))!.since;
      const asked: (Date | undefined)[] = [];
      runtime.calls.length = 0;
      const mode = await wakeCluster(runtime, 'dev', quiet, {
        probes: {
          ...ready,
          allNodesReady: async (_target, heartbeatSince) => {
            asked.push(heartbeatSince);
            return true;
          },
        },
      });
      expect(mode).toBe('checkpoint');
      expect(runtime.calls.filter((c) => c.startsWith('startContainer'))).toEqual([
        'startContainer dev-control-plane',
        'startContainer dev-worker',
      ]);
      expect(asked.map((d) => d?.toISOString())).toEqual([new Date(since).toISOString()]);
    });

    it('restarts a control plane that a cut-short sleep left running without its daemons', async () => {
      await sleepCluster(runtime, 'dev', 'checkpoint', quiet);
      // As the CLI killed after the checkpoint leaves it: running since before the sleep began.
      const controlPlane = runtime.containers.get('dev-control-plane')!.info;
      controlPlane.state = 'running';
      controlPlane.startedAt = new Date(Date.now() - 60_000).toISOString();
      runtime.calls.length = 0;
      await wakeCluster(runtime, 'dev', quiet, { probes: ready });
      expect(
        runtime.calls.filter((c) => c.endsWith('Container dev-control-plane') && !c.startsWith('unpause')),
      ).toEqual(['stopContainer dev-control-plane', 'startContainer dev-control-plane']);
    });

    it('reads the report of the checkpoint command', () => {
      expect(parseCheckpointReport(`${JSON.stringify(report)}\n`)).toEqual(report);
      expect(() => parseCheckpointReport('{"daemons":1}')).toThrow('unexpected checkpoint report');
    });
  });

  it('wakes a cluster of networking.cni none once its nodes report, NotReady until a CNI is installed', async () => {
    await cluster(runtime, 'bare', 'none');
    await sleepCluster(runtime, 'bare', 'stop', quiet);
    const never = async () => false;
    const reported: (Date | undefined)[] = [];
    const lines: string[] = [];
    expect(
      await wakeCluster(
        runtime,
        'bare',
        { ...quiet, step: async (name, work) => (lines.push(name), work(() => undefined)) },
        {
          probes: {
            ...ready,
            allNodesReady: never,
            coreDnsAvailable: never,
            allNodesReported: async (_target, since) => (reported.push(since), true),
          },
          timeoutMs: 300,
        },
      ),
    ).toBe('stop');
    expect(reported[0]).toBeInstanceOf(Date);
    expect(lines).toContain('wait for nodes to report');
    expect(lines).not.toContain('wait for CoreDNS');
  });

  it('wakes a cluster without workers once the API answers: no node to wait for', async () => {
    await runtime.removeContainer('dev-worker');
    await sleepCluster(runtime, 'dev', 'stop', quiet);
    const never = async () => false;
    expect(
      await wakeCluster(runtime, 'dev', quiet, {
        probes: { ...ready, allNodesReady: never, coreDnsAvailable: never },
        timeoutMs: 300,
      }),
    ).toBe('stop');
  });
});
