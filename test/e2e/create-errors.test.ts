// Bad input and faults during `vind create`: one clear line, a non-zero exit, nothing left behind.

import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  CLI,
  docker,
  execInContainer,
  LABEL_CLUSTER,
  objectsLeft,
  removeByLabel,
  requireNodeImage,
  runVind,
  uniqueName,
  waitFor,
} from './helpers.js';

let scratch: string;
const created: string[] = [];

/** Runs create for a fresh name and checks the common contract of a refused create. */
async function refusedCreate(args: (name: string) => string[], env: Record<string, string> = {}) {
  const name = uniqueName('e2e-bad');
  created.push(name);
  const result = await runVind(args(name), { KUBECONFIG: join(scratch, 'kubeconfig'), ...env });
  expect(result.exitCode).not.toBe(0);
  const errors = result.stderr.split('\n').filter((l) => l.startsWith('error:'));
  expect(errors, result.stderr).toHaveLength(1);
  expect(await objectsLeft(name)).toBe(0);
  return errors[0]!;
}

describe('vind create refuses bad input and cleans up after faults', () => {
  beforeAll(async () => {
    await requireNodeImage();
    scratch = await mkdtemp(join(tmpdir(), 'vind-e2e-errors-'));
  });

  afterAll(async () => {
    for (const name of created) await removeByLabel(name);
    await rm(scratch, { recursive: true, force: true });
  });

  it('rejects an invalid cluster name', async () => {
    const result = await runVind(['create', 'My_Cluster']);
    expect(result.exitCode).not.toBe(0);
    expect(result.stderr.trim()).toBe(
      'error: invalid cluster name "My_Cluster": use lowercase letters, digits and \'-\', starting and ending ' +
        'with a letter or digit, at most 32 characters',
    );
  });

  it('rejects a negative worker count', async () => {
    const line = await refusedCreate((name) => ['create', name, '--workers=-1']);
    expect(line).toBe('error: invalid --workers "-1": use a whole number 0 or more');
  });

  it('refuses a Kubernetes version older than the node image supports, before making anything', async () => {
    const line = await refusedCreate((name) => ['create', name, '--kubernetes-version', 'v1.29.4']);
    expect(line).toBe(
      "error: Kubernetes v1.29.4 is older than vind supports: use v1.31.0 or later (the node image's containerd and kubelet settings need it)",
    );
  });

  it('refuses a node label the kubelet would refuse, instead of a worker that never joins', async () => {
    const file = join(scratch, 'labels.yaml');
    await writeFile(
      file,
      'apiVersion: vind.dev/v1alpha1\nkind: Cluster\nworkers:\n  - labels: { kubernetes.io/role: db }\n',
    );
    const line = await refusedCreate((name) => ['create', name, '--config', file]);
    expect(line).toMatch(
      /node label "kubernetes\.io\/role" is in the kubernetes\.io\/k8s\.io namespace, which the kubelet refuses/,
    );
  });

  it('names an unknown config field and what is allowed', async () => {
    const file = join(scratch, 'bad.yaml');
    await writeFile(
      file,
      'apiVersion: vind.dev/v1alpha1\nkind: Cluster\nnetworking:\n  podSubnetz: 10.1.0.0/16\n',
    );
    const line = await refusedCreate((name) => ['create', name, '--config', file]);
    expect(line).toMatch(
      /networking\.podSubnetz: unknown field \(allowed: podSubnet, serviceSubnet, apiServerPort, cni\)/,
    );
  });

  it('says how to start Docker when it is not reachable', async () => {
    const line = await refusedCreate((name) => ['create', name], {
      DOCKER_HOST: 'unix:///nonexistent/docker.sock',
    });
    expect(line).toMatch(/Docker is not reachable at unix:\/\/\/nonexistent\/docker\.sock.*start it with/);
  });

  it('says how to build a missing node image', async () => {
    const line = await refusedCreate((name) => ['create', name, '--kubernetes-version', 'v1.31.14']);
    expect(line).toContain(
      'node image vind/node:v1.31.14 is not built: build it with `vind image build --kubernetes-version v1.31.14`',
    );
  });

  it('refuses a host port that is already in use', async () => {
    const server: Server = createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as { port: number }).port;
    try {
      const file = join(scratch, 'port.yaml');
      await writeFile(
        file,
        `apiVersion: vind.dev/v1alpha1\nkind: Cluster\nnetworking:\n  apiServerPort: ${port}\n`,
      );
      const line = await refusedCreate((name) => ['create', name, '--config', file]);
      expect(line).toContain(`host port 127.0.0.1:${port} for the API server is already in use`);
    } finally {
      server.close();
    }
  });

  it('fails fast on a datastore that cannot be reached', async () => {
    const line = await refusedCreate((name) => [
      'create',
      name,
      '--datastore',
      'postgres://vind:secret@127.0.0.1:1/vind',
    ]);
    expect(line).toMatch(/datastore 127\.0\.0\.1:1 cannot be reached \(ECONNREFUSED\)/);
    expect(line).not.toContain('secret');
  });

  it('keeps the failed containers for inspection with --retain', async () => {
    const name = uniqueName('e2e-retain');
    created.push(name);
    const result = await runVind(
      [
        'create',
        name,
        '--workers',
        '0',
        '--retain',
        '--datastore',
        'postgres://vind:secret@127.0.0.1:1/vind',
      ],
      { KUBECONFIG: join(scratch, 'retain-kubeconfig') },
    );
    expect(result.exitCode).not.toBe(0);
    expect(result.stderr).toContain(`keeping the containers of "${name}" (--retain)`);
    const status = await execInContainer(`${name}-control-plane`, ['cat', '/run/vind/status']);
    // Kept, the control plane goes on waiting for its datastore (as after a restart), and says so;
    // it was create that gave up at once.
    expect(JSON.parse(status.stdout)).toMatchObject({
      phase: 'retrying',
      reason: 'datastore-unreachable',
      message: expect.stringContaining('127.0.0.1:1'),
    });
    expect((await runVind(['delete', name])).exitCode).toBe(0);
    expect(await objectsLeft(name)).toBe(0);
  });

  it('refuses a cluster that already exists and leaves it alone', async () => {
    const name = uniqueName('e2e-dup');
    created.push(name);
    const env = { KUBECONFIG: join(scratch, 'dup-kubeconfig') };
    const first = await runVind(['create', name, '--workers', '0'], env);
    expect(first.exitCode, first.stderr).toBe(0);
    const second = await runVind(['create', name, '--workers', '0'], env);
    expect(second.exitCode).not.toBe(0);
    expect(second.stderr).toContain(
      `cluster "${name}" already exists: delete it with \`vind delete ${name}\``,
    );
    const containers = await docker().listContainers({ filters: { label: [`${LABEL_CLUSTER}=${name}`] } });
    // The first cluster's control plane and front door, untouched.
    expect(containers.map((c) => c.State)).toEqual(['running', 'running']);
    expect((await runVind(['delete', name], env)).exitCode).toBe(0);
    expect(await objectsLeft(name)).toBe(0);
  });

  /** Starts a create, waits until it starts its control plane, and sends it a signal. */
  async function signalCreate(prefix: string, signal: NodeJS.Signals) {
    const name = uniqueName(prefix);
    created.push(name);
    const env = { KUBECONFIG: join(scratch, `${prefix}-kubeconfig`) };
    const child = execa('node', [CLI, 'create', name, '--workers', '1'], {
      env,
      reject: false,
      buffer: false,
    });
    let stderr = '';
    child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    await waitFor(
      'create to start its control plane',
      async () => (stderr.includes('start control plane') ? true : undefined),
      60_000,
    );
    child.kill(signal);
    const result = await child;
    return { name, env, exitCode: result.exitCode, stderr };
  }

  it('cleans up when interrupted with Ctrl-C', async () => {
    const { name, exitCode, stderr } = await signalCreate('e2e-int', 'SIGINT');
    expect(exitCode).toBe(130);
    expect(stderr).toContain('error: interrupted');
    expect(await objectsLeft(name)).toBe(0);
  });

  it('cleans up when its terminal goes away (SIGHUP)', async () => {
    const { name, exitCode } = await signalCreate('e2e-hup', 'SIGHUP');
    expect(exitCode).toBe(130);
    expect(await objectsLeft(name)).toBe(0);
  });

  it('after a create killed with SIGKILL: the next create names the remains, and delete removes them', async () => {
    const { name, env } = await signalCreate('e2e-kill', 'SIGKILL');
    // Killed: nothing could clean up.
    expect(await objectsLeft(name)).toBeGreaterThan(0);
    // Both nodes, and the front door too if the control plane had made its certificates by then.
    const containers = await docker().listContainers({
      all: true,
      filters: { label: [`${LABEL_CLUSTER}=${name}`] },
    });
    expect([2, 3]).toContain(containers.length);
    const again = await runVind(['create', name, '--workers', '1'], env);
    expect(again.exitCode).not.toBe(0);
    expect(again.stderr).toMatch(
      new RegExp(
        `error: check host failed: cluster "${name}" has remains of an earlier create that did not finish \\(${containers.length} containers, 2 volumes, its network\\): remove them with \`vind delete ${name}\``,
      ),
    );
    const deleted = await runVind(['delete', name], env);
    expect(deleted.exitCode, deleted.stderr).toBe(0);
    expect(await objectsLeft(name)).toBe(0);
  });
});
