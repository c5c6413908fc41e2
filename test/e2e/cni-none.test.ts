// `networking.cni: none` on the real engine: the nodes come up NotReady for want of a network plugin,
// with no CNI configuration or pod routes of vind's; then flannel (VXLAN) installed as a user would,
// from its DaemonSet: the nodes turn Ready, pods on the two workers reach each other both ways through
// the VXLAN device, a Service answers by its DNS name, and the API server still reaches pods (logs,
// exec, pods/proxy) over the control plane's routes to the nodes.

import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureFlannelImage, FLANNEL_NAMESPACE, flannelManifests } from '../support/flannel.js';
import {
  ensureTestImage,
  execInContainer,
  kubectlBinary,
  kubectlFor,
  NODE_IMAGE,
  removeByLabel,
  requireNodeImage,
  runVind,
  spreadDeployment,
  TEST_IMAGE,
  uniqueName,
  waitFor,
} from './helpers.js';

const cluster = uniqueName('fl-cni');
const WORKERS = [`${cluster}-worker`, `${cluster}-worker2`];
const POD_SUBNET = '10.244.0.0/16';
let scratch: string;
let kubectl: ReturnType<typeof kubectlFor>;
let flannelImage: string;
let createOutput: string;

interface Node {
  metadata: { name: string };
  spec: { podCIDR?: string };
  status: { conditions: { type: string; status: string; message?: string }[] };
}

interface Pod {
  metadata: { name: string };
  spec: { nodeName: string };
  status: { podIP: string };
}

async function nodes(): Promise<Node[]> {
  const result = await kubectl(['get', 'nodes', '-o', 'json']);
  expect(result.exitCode, result.stderr).toBe(0);
  return (JSON.parse(result.stdout) as { items: Node[] }).items;
}

const readyCondition = (node: Node) => node.status.conditions.find((c) => c.type === 'Ready');

async function pods(app: string): Promise<Pod[]> {
  const result = await kubectl(['get', 'pods', '-l', `app=${app}`, '-o', 'json']);
  return (JSON.parse(result.stdout) as { items: Pod[] }).items;
}

async function apply(objects: unknown[]) {
  const result = await kubectl(
    ['apply', '-f', '-'],
    JSON.stringify({ apiVersion: 'v1', kind: 'List', items: objects }),
  );
  expect(result.exitCode, result.stderr).toBe(0);
}

async function inNode(node: string, command: string[]): Promise<string> {
  const result = await execInContainer(node, command);
  expect(result.exitCode, result.stderr).toBe(0);
  return result.stdout;
}

/** Packets sent through a node's VXLAN device so far. */
async function vxlanPacketsSent(node: string): Promise<number> {
  return Number(await inNode(node, ['cat', '/sys/class/net/flannel.1/statistics/tx_packets']));
}

describe('networking.cni none, then flannel', () => {
  beforeAll(async () => {
    await requireNodeImage();
    scratch = await mkdtemp(join(tmpdir(), 'vind-cni-none-'));
    const kubeconfig = join(scratch, 'kubeconfig');
    kubectl = kubectlFor(await kubectlBinary(), kubeconfig);
    [flannelImage] = await Promise.all([ensureFlannelImage(), ensureTestImage()]);
    const config = join(scratch, 'cluster.yaml');
    await writeFile(
      config,
      [
        'apiVersion: vind.dev/v1alpha1',
        'kind: Cluster',
        `image: ${NODE_IMAGE}`,
        'networking:',
        '  cni: none',
        `  podSubnet: ${POD_SUBNET}`,
        'workers: [{}, {}]',
        '',
      ].join('\n'),
    );
    const created = await runVind(['create', cluster, '--config', config], { KUBECONFIG: kubeconfig });
    createOutput = created.stderr;
    expect(created.exitCode, created.stderr).toBe(0);
  }, 900_000);

  afterAll(async () => {
    await removeByLabel(cluster);
    if (scratch) await rm(scratch, { recursive: true, force: true });
  });

  it('returns from create saying the nodes stay NotReady until a CNI is installed', () => {
    expect(createOutput).toContain('wait for nodes to report');
    expect(createOutput).not.toContain('wait for CoreDNS');
    expect(createOutput).toContain('its nodes stay NotReady until you install a CNI');
  });

  it('has every node NotReady for want of a network plugin, with a podCIDR for the CNI to use', async () => {
    const found = await nodes();
    expect(found.map((n) => n.metadata.name).sort()).toEqual(WORKERS);
    for (const node of found) {
      expect(readyCondition(node)?.status).toBe('False');
      expect(readyCondition(node)?.message).toContain('NetworkPluginNotReady');
      expect(node.spec.podCIDR).toMatch(/^10\.244\.\d+\.0\/24$/);
    }
  });

  it("leaves the workers without vind's CNI configuration and pod routes, and their CNI folders ready", async () => {
    for (const worker of WORKERS) {
      expect((await inNode(worker, ['ls', '-A', '/etc/cni/net.d'])).trim()).toBe('');
      // Only the safety net's unreachable route covers the pod network: no route to another node's pods.
      expect((await inNode(worker, ['ip', 'route', 'show', 'root', POD_SUBNET])).trim()).toBe(
        `unreachable ${POD_SUBNET}`,
      );
      expect(await inNode(worker, ['cat', '/etc/containerd/config.toml'])).toContain(
        'bin_dirs = ["/opt/cni/bin", "/usr/lib/cni"]',
      );
      await inNode(worker, ['test', '-d', '/opt/cni/bin', '-a', '-w', '/opt/cni/bin']);
    }
  });

  it('turns every node Ready once flannel is installed from its DaemonSet', async () => {
    await apply(flannelManifests(flannelImage, POD_SUBNET));
    // Its first pull goes through the image cache, which exports the image from the host's Docker.
    await waitFor(
      'the flannel DaemonSet to roll out',
      async () => {
        const rollout = await kubectl([
          '-n',
          FLANNEL_NAMESPACE,
          'rollout',
          'status',
          'daemonset/kube-flannel-ds',
          '--timeout=100s',
        ]);
        return rollout.exitCode === 0 ? true : undefined;
      },
      300_000,
      1000,
    );
    await waitFor(
      'every node Ready',
      async () => ((await nodes()).every((n) => readyCondition(n)?.status === 'True') ? true : undefined),
      120_000,
      1000,
    );
    const coreDns = await kubectl([
      '-n',
      'kube-system',
      'rollout',
      'status',
      'deployment/coredns',
      '--timeout=100s',
    ]);
    expect(coreDns.exitCode, coreDns.stderr).toBe(0);
  });

  it("has flannel's VXLAN device, plugin and configuration on every worker", async () => {
    for (const worker of WORKERS) {
      expect(await inNode(worker, ['ip', '-d', 'link', 'show', 'flannel.1'])).toMatch(
        /vxlan id 1 .*dstport 8472/,
      );
      expect((await inNode(worker, ['ls', '-A', '/etc/cni/net.d'])).trim()).toBe('10-flannel.conflist');
      await inNode(worker, ['test', '-x', '/opt/cni/bin/flannel']);
    }
  });

  it('carries pod traffic between the two workers both ways, through VXLAN', async () => {
    await apply([
      spreadDeployment(
        'web',
        {
          image: TEST_IMAGE,
          imagePullPolicy: 'IfNotPresent',
          command: [
            'sh',
            '-c',
            'mkdir -p /www && hostname > /www/index.html && echo "serving $(hostname)" && exec httpd -f -v -p 8080 -h /www',
          ],
          ports: [{ containerPort: 8080 }],
          readinessProbe: { tcpSocket: { port: 8080 }, periodSeconds: 1 },
        },
        2,
      ),
      {
        apiVersion: 'v1',
        kind: 'Service',
        metadata: { name: 'web' },
        spec: { selector: { app: 'web' }, ports: [{ port: 8080, targetPort: 8080 }] },
      },
    ]);
    const rollout = await kubectl(['rollout', 'status', 'deployment/web', '--timeout=110s']);
    expect(rollout.exitCode, rollout.stderr).toBe(0);
    const web = await pods('web');
    expect(new Set(web.map((p) => p.spec.nodeName))).toEqual(new Set(WORKERS));

    const sentBefore = await Promise.all(WORKERS.map(vxlanPacketsSent));
    const [a, b] = web as [Pod, Pod];
    for (const [from, to] of [
      [a, b],
      [b, a],
    ] as const) {
      const result = await kubectl([
        'exec',
        from.metadata.name,
        '--',
        'wget',
        '-qO-',
        `http://${to.status.podIP}:8080/`,
      ]);
      expect(result.exitCode, result.stderr).toBe(0);
      expect(result.stdout.trim()).toBe(to.metadata.name);
    }
    const sentAfter = await Promise.all(WORKERS.map(vxlanPacketsSent));
    WORKERS.forEach((_, i) => expect(sentAfter[i]!).toBeGreaterThan(sentBefore[i]!));
  });

  it('answers a Service by its DNS name', async () => {
    const names = new Set((await pods('web')).map((p) => p.metadata.name));
    for (const client of await pods('web')) {
      const result = await kubectl([
        'exec',
        client.metadata.name,
        '--',
        'wget',
        '-qO-',
        'http://web.default.svc.cluster.local:8080/',
      ]);
      expect(result.exitCode, result.stderr).toBe(0);
      expect(names.has(result.stdout.trim())).toBe(true);
    }
  });

  it('serves kubectl logs and exec, and the API server reaches pods on both workers', async () => {
    for (const pod of await pods('web')) {
      const logs = await kubectl(['logs', pod.metadata.name]);
      expect(logs.stdout).toContain(`serving ${pod.metadata.name}`);
      const exec = await kubectl(['exec', pod.metadata.name, '--', 'cat', '/www/index.html']);
      expect(exec.stdout.trim()).toBe(pod.metadata.name);
      // The control plane routes each podCIDR via its node, which hands it to flannel's bridge.
      const proxied = await kubectl([
        'get',
        '--raw',
        `/api/v1/namespaces/default/pods/${pod.metadata.name}:8080/proxy/`,
      ]);
      expect(proxied.exitCode, proxied.stderr).toBe(0);
      expect(proxied.stdout.trim()).toBe(pod.metadata.name);
    }
  });
});
