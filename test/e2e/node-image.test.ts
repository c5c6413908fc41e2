// A node container from the built image, on the real Docker engine: node-agent prepares it,
// containerd runs, and a nested container from the locally built pause image starts inside.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_KUBERNETES_VERSION, GO_TOOLS } from '../../images/recipe.js';
import { PAUSE_IMAGE } from '../../shared/contract.js';
import {
  execInContainer,
  removeByLabel,
  requireNodeImage,
  uniqueName,
  waitFor,
  startBareRuntimeNode,
} from './helpers.js';

const cluster = uniqueName('e2e-node');
const name = `vind-${cluster}-worker`;

async function sh(command: string) {
  return execInContainer(name, ['sh', '-c', command]);
}

describe('node image', () => {
  beforeAll(async () => {
    await requireNodeImage();
    // A worker with no cluster to join: a bare container runtime, as the provider runs every node.
    await startBareRuntimeNode(cluster, name);
  });

  afterAll(async () => {
    await removeByLabel(cluster);
  });

  it('runs a nested container from the locally built pause image', async () => {
    const images = await sh('ctr -n k8s.io images ls -q');
    expect(images.stdout.split('\n')).toContain(PAUSE_IMAGE);

    const run = await sh(`ctr -n k8s.io run -d ${PAUSE_IMAGE} e2e-pause`);
    expect(run.exitCode, run.stderr).toBe(0);
    const tasks = await waitFor(
      'the pause task to run',
      async () => {
        const list = await sh('ctr -n k8s.io tasks ls');
        return /e2e-pause\s+\d+\s+RUNNING/.test(list.stdout) ? list.stdout : undefined;
      },
      20_000,
    );
    expect(tasks).toMatch(/RUNNING/);
    // The nested process lives in its own PID namespace but is visible from the node.
    expect((await sh('ps -eo args')).stdout).toMatch(/^\/pause$/m);

    expect((await sh('ctr -n k8s.io tasks kill -s SIGTERM e2e-pause')).exitCode).toBe(0);
    await waitFor(
      'the pause task to stop',
      async () => {
        const list = (await sh('ctr -n k8s.io tasks ls')).stdout;
        return !list.includes('e2e-pause') || /e2e-pause\s+\d+\s+STOPPED/.test(list) ? true : undefined;
      },
      20_000,
    );
    await sh('ctr -n k8s.io tasks delete e2e-pause; ctr -n k8s.io containers delete e2e-pause');
  });

  it('reports the pinned Kubernetes version from every component', async () => {
    const version = DEFAULT_KUBERNETES_VERSION;
    expect((await sh('kubelet --version')).stdout.trim()).toBe(`Kubernetes ${version}`);
    expect((await sh('kube-apiserver --version')).stdout.trim()).toBe(`Kubernetes ${version}`);
    expect((await sh('kube-proxy --version')).stdout.trim()).toBe(`Kubernetes ${version}`);
    expect((await sh('kubectl version --client')).stdout).toContain(`Client Version: ${version}`);
  });

  it('holds the pinned runtime, with seccomp support in runc', async () => {
    const pinned = (tool: string) => GO_TOOLS.find((t) => t.name === tool)!.version;
    expect((await sh('containerd --version')).stdout).toContain(pinned('containerd'));
    const runc = (await sh('runc --version')).stdout;
    expect(runc).toContain(pinned('runc').replace(/^v/, ''));
    expect(runc).toMatch(/libseccomp: \d+\.\d+/);
    expect((await sh('kine --version')).stdout + (await sh('kine --version')).stderr).toContain(
      pinned('kine'),
    );
    for (const tool of ['iptables', 'ip', 'conntrack', 'wg', 'wireguard-go', 'node']) {
      expect((await sh(`command -v ${tool}`)).exitCode, tool).toBe(0);
    }
    expect((await sh('ls /usr/lib/cni')).stdout.split('\n')).toEqual(
      expect.arrayContaining(['bridge', 'host-local', 'loopback', 'portmap']),
    );
  });

  it('reaps orphaned processes', async () => {
    // The subshell exits at once; its background child is re-parented to PID 1 and must be reaped.
    await sh('(sleep 0.2 &) ; true');
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const zombies = await sh("ps -eo stat,pid,args | awk '$1 ~ /^Z/'");
    expect(zombies.stdout.trim()).toBe('');
  });

  it('leaves no apt caches in the image', async () => {
    expect((await sh('ls /var/lib/apt/lists | grep -v -e partial -e lock | wc -l')).stdout.trim()).toBe('0');
    expect((await sh('ls /var/cache/apt/archives | grep -c deb$')).stdout.trim()).toBe('0');
  });
});
