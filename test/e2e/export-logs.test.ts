// `vind export logs` on a real cluster (a control plane and a worker):
// - awake: inspect JSON and docker logs of every container, the worker's kubelet log, the agents'
//   status, the events of all namespaces, CoreDNS's pod log through the API, nodes and versions;
// - asleep (stopped): inspect and docker logs still come, nothing is read from inside a stopped
//   container, the API server is not asked (the cluster stays asleep), and notes.txt says so;
// - a cluster that does not exist is refused in one line.

import { mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { controlPlaneName, workerName } from '../../shared/contract.js';
import { CLI, PROJECT_ROOT, removeByLabel, requireNodeImage, runVind, uniqueName } from './helpers.js';

const cluster = uniqueName('e2e-day1-export');
const controlPlane = controlPlaneName(cluster);
const worker = workerName(cluster, 0);
let scratch: string;
let kubeconfig: string;

async function files(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries
    .filter((e) => e.isFile())
    .map((e) => relative(dir, join(e.parentPath, e.name)))
    .sort();
}

async function nonEmpty(path: string): Promise<string> {
  expect((await stat(path)).size, path).toBeGreaterThan(0);
  return readFile(path, 'utf8');
}

describe('vind export logs', () => {
  beforeAll(async () => {
    // The CLI under test is this checkout's build.
    expect(CLI.startsWith(PROJECT_ROOT)).toBe(true);
    await requireNodeImage();
    scratch = await mkdtemp(join(tmpdir(), 'vind-e2e-export-'));
    kubeconfig = join(scratch, 'kubeconfig');
    const created = await runVind(['create', cluster, '--workers', '1'], { KUBECONFIG: kubeconfig });
    expect(created.exitCode, created.stderr).toBe(0);
  });

  afterAll(async () => {
    await runVind(['delete', cluster], { KUBECONFIG: kubeconfig });
    await removeByLabel(cluster);
    if (scratch) await rm(scratch, { recursive: true, force: true });
  }, 180_000);

  it('writes the logs of a running cluster', async () => {
    const output = join(scratch, 'awake');
    const exported = await runVind(['export', 'logs', cluster, '--output', output]);
    expect(exported.exitCode, exported.stderr).toBe(0);
    expect(exported.stdout.trim()).toBe(output);
    const written = await files(output);

    const kubelet = await nonEmpty(join(output, 'containers', worker, 'var/log/vind/kubelet.log'));
    expect(kubelet).toMatch(/kubelet|Kubelet/);
    await nonEmpty(join(output, 'containers', controlPlane, 'var/log/vind/kube-apiserver.log'));
    expect(JSON.parse(await nonEmpty(join(output, 'containers', worker, 'run/vind/status')))).toMatchObject({
      phase: 'ready',
    });
    const inspect = JSON.parse(await nonEmpty(join(output, 'containers', worker, 'inspect.json'))) as {
      Name: string;
      State: { Status: string };
    };
    expect(inspect).toMatchObject({ Name: `/${worker}`, State: { Status: 'running' } });
    expect(await nonEmpty(join(output, 'containers', controlPlane, 'docker.log'))).toContain('node-agent');

    expect(await nonEmpty(join(output, 'kubernetes/events.txt'))).toContain('kube-system');
    await nonEmpty(join(output, 'kubernetes/events.yaml'));
    expect(await nonEmpty(join(output, 'kubernetes/nodes.yaml'))).toContain(worker);
    const coredns = written.filter((f) =>
      /^kubernetes\/pods\/kube-system\/coredns-[^/]+\/coredns\.log$/.test(f),
    );
    expect(coredns.length, written.join('\n')).toBeGreaterThan(0);
    expect(await nonEmpty(join(output, coredns[0]!))).toContain('CoreDNS');
    const versions = await nonEmpty(join(output, 'versions.txt'));
    expect(versions).toMatch(/kubernetes \(API server\): v1\.\d+\.\d+/);
    expect(versions).toContain('vind: 0.1.0');
    expect(await readFile(join(output, 'notes.txt'), 'utf8')).not.toMatch(/not running|did not answer/);
  });

  it('writes what can be read of a stopped cluster, and says what could not', async () => {
    const slept = await runVind(['sleep', cluster, '--mode', 'stop']);
    expect(slept.exitCode, slept.stderr).toBe(0);
    const output = join(scratch, 'asleep');
    const exported = await runVind(['export', 'logs', cluster, '--output', output]);
    expect(exported.exitCode, exported.stderr).toBe(0);
    const written = await files(output);
    for (const container of [controlPlane, worker]) {
      const inspect = JSON.parse(await nonEmpty(join(output, 'containers', container, 'inspect.json'))) as {
        State: { Status: string };
      };
      expect(inspect.State.Status).toBe('exited');
      await nonEmpty(join(output, 'containers', container, 'docker.log'));
      expect(written.some((f) => f.startsWith(`containers/${container}/var/`))).toBe(false);
    }
    expect(written.some((f) => f.startsWith('kubernetes/'))).toBe(false);
    const notes = await nonEmpty(join(output, 'notes.txt'));
    expect(notes).toContain('the cluster sleeps (stop)');
    expect(notes).toContain(`${controlPlane}: exited, not running`);
    expect(notes).toContain(`${worker}: exited, not running`);
    expect(notes).toContain('the API server was not asked');
    // The export did not wake it.
    const listed = await runVind(['list', '--json']);
    const state = (JSON.parse(listed.stdout) as { name: string; state: string }[]).find(
      (c) => c.name === cluster,
    )?.state;
    expect(state).toBe('stopped');
  });

  it('refuses a cluster that does not exist in one line', async () => {
    const missing = await runVind([
      'export',
      'logs',
      `${cluster}-missing`,
      '--output',
      join(scratch, 'none'),
    ]);
    expect(missing.exitCode).toBe(1);
    expect(missing.stderr.trim()).toBe(
      `error: cluster "${cluster}-missing" does not exist: see \`vind list\``,
    );
  });
});
