// One control plane and two workers on the real Docker engine, driven by real kubectl:
// scheduling over both workers, pod-to-pod across nodes, Service DNS, NodePort from the host,
// logs, exec and port-forward.

import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  docker,
  ensureTestImage,
  kubectlBinary,
  kubectlFor,
  removeByLabel,
  requireNodeImage,
  runVind,
  spreadDeployment,
  TEST_IMAGE,
  uniqueName,
  waitFor,
} from './helpers.js';

const cluster = uniqueName('e2e');
let scratch: string;
let kubeconfig: string;
let kubectl: ReturnType<typeof kubectlFor>;

const WORKERS = [`${cluster}-worker`, `${cluster}-worker2`];

/** A Service on port 8080 of the pods of `app` (default: the Service's own name). */
function webManifest(name: string, replicas: number, nodeName?: string) {
  return spreadDeployment(
    name,
    {
      image: TEST_IMAGE,
      imagePullPolicy: 'Never',
      command: [
        'sh',
        '-c',
        'mkdir -p /www && hostname > /www/index.html && echo "serving $(hostname)" && exec httpd -f -v -p 8080 -h /www',
      ],
      ports: [{ containerPort: 8080 }],
      readinessProbe: { tcpSocket: { port: 8080 }, periodSeconds: 1 },
    },
    replicas,
    nodeName ? { nodeSelector: { 'kubernetes.io/hostname': nodeName } } : {},
  );
}

function service(name: string, type: 'ClusterIP' | 'NodePort', nodePort?: number, app = name) {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name },
    spec: {
      type,
      selector: { app },
      ports: [{ port: 8080, targetPort: 8080, ...(nodePort ? { nodePort } : {}) }],
    },
  };
}

const FIXED_NODE_PORT = 30080;
let hostPort: number;

async function freeHostPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

interface Pod {
  metadata: { name: string };
  spec: { nodeName: string };
  status: { podIP: string };
}

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

describe('a cluster of one control plane and two workers', () => {
  beforeAll(async () => {
    await requireNodeImage();
    scratch = await mkdtemp(join(tmpdir(), 'vind-e2e-'));
    kubeconfig = join(scratch, 'kubeconfig');
    kubectl = kubectlFor(await kubectlBinary(), kubeconfig);
    await ensureTestImage();
    // Two workers from a config file: node labels, and a host port mapped to a fixed NodePort on the first.
    hostPort = await freeHostPort();
    const config = join(scratch, 'cluster.yaml');
    await writeFile(
      config,
      [
        'apiVersion: vind.dev/v1alpha1',
        'kind: Cluster',
        'workers:',
        '  - labels: { tier: front }',
        '    extraPortMappings:',
        `      - { containerPort: ${FIXED_NODE_PORT}, hostPort: ${hostPort} }`,
        '  - labels: { tier: back }',
        '',
      ].join('\n'),
    );
    const created = await runVind(['create', cluster, '--config', config], { KUBECONFIG: kubeconfig });
    expect(created.exitCode, created.stderr).toBe(0);
    const loaded = await runVind(['image', 'load', TEST_IMAGE, '--cluster', cluster]);
    expect(loaded.exitCode, loaded.stderr).toBe(0);
    await apply([
      webManifest('web', 2),
      service('web', 'NodePort'),
      webManifest('solo', 1, WORKERS[0]),
      service('solo', 'ClusterIP'),
      service('fixed', 'NodePort', FIXED_NODE_PORT, 'solo'),
    ]);
    for (const name of ['web', 'solo']) {
      const rollout = await kubectl(['rollout', 'status', `deployment/${name}`, '--timeout=120s']);
      expect(rollout.exitCode, rollout.stderr).toBe(0);
    }
  });

  afterAll(async () => {
    await removeByLabel(cluster);
    if (scratch) await rm(scratch, { recursive: true, force: true });
  });

  it('has every node Ready at the pinned version', async () => {
    const result = await kubectl(['get', 'nodes', '-o', 'json']);
    const nodes = (
      JSON.parse(result.stdout) as {
        items: {
          metadata: { name: string };
          status: { conditions: { type: string; status: string }[]; nodeInfo: { kubeletVersion: string } };
        }[];
      }
    ).items;
    expect(nodes.map((n) => n.metadata.name).sort()).toEqual(WORKERS);
    for (const node of nodes) {
      expect(node.status.conditions.find((c) => c.type === 'Ready')?.status).toBe('True');
    }
  });

  it('spreads a Deployment over both workers', async () => {
    const web = await pods('web');
    expect(new Set(web.map((p) => p.spec.nodeName))).toEqual(new Set(WORKERS));
  });

  it('reaches a pod on the other node by its pod address', async () => {
    const [a, b] = await pods('web');
    const result = await kubectl([
      'exec',
      a!.metadata.name,
      '--',
      'wget',
      '-qO-',
      `http://${b!.status.podIP}:8080/`,
    ]);
    expect(result.exitCode, result.stderr).toBe(0);
    expect(result.stdout.trim()).toBe(b!.metadata.name);
  });

  it('reaches a ClusterIP Service by its DNS name from a pod on the other node', async () => {
    const client = (await pods('web')).find((p) => p.spec.nodeName === WORKERS[1])!;
    const [solo] = await pods('solo');
    expect(solo!.spec.nodeName).toBe(WORKERS[0]);
    const lookup = await kubectl([
      'exec',
      client.metadata.name,
      '--',
      'nslookup',
      'solo.default.svc.cluster.local',
    ]);
    expect(lookup.exitCode, lookup.stderr + lookup.stdout).toBe(0);
    const result = await kubectl([
      'exec',
      client.metadata.name,
      '--',
      'wget',
      '-qO-',
      'http://solo.default.svc.cluster.local:8080/',
    ]);
    expect(result.exitCode, result.stderr).toBe(0);
    expect(result.stdout.trim()).toBe(solo!.metadata.name);
  });

  it('forwards other names to the upstream resolver (Docker network names resolve in pods)', async () => {
    const [client] = await pods('web');
    const controlPlane = await docker().getContainer(`${cluster}-control-plane`).inspect();
    const address = Object.values(controlPlane.NetworkSettings.Networks)[0]!.IPAddress;
    const lookup = await kubectl([
      'exec',
      client!.metadata.name,
      '--',
      'nslookup',
      `${cluster}-control-plane.`,
    ]);
    expect(lookup.exitCode, lookup.stderr + lookup.stdout).toBe(0);
    expect(lookup.stdout).toContain(address);
  });

  it('reaches a NodePort from the host', async () => {
    const svc = JSON.parse((await kubectl(['get', 'service', 'web', '-o', 'json'])).stdout) as {
      spec: { ports: { nodePort: number }[] };
    };
    const nodePort = svc.spec.ports[0]!.nodePort;
    const names = new Set((await pods('web')).map((p) => p.metadata.name));
    for (const worker of WORKERS) {
      const info = await docker().getContainer(worker).inspect();
      const address = Object.values(info.NetworkSettings.Networks)[0]!.IPAddress;
      const body = await waitFor(
        `NodePort ${nodePort} on ${worker}`,
        async () => {
          const response = await fetch(`http://${address}:${nodePort}/`).catch(() => undefined);
          return response?.ok ? (await response.text()).trim() : undefined;
        },
        30_000,
      );
      expect(names.has(body)).toBe(true);
    }
  });

  it('labels nodes and maps host ports as the config file says', async () => {
    const labels = await kubectl([
      'get',
      'nodes',
      '-L',
      'tier',
      '--no-headers',
      '-o',
      'custom-columns=NAME:.metadata.name,TIER:.metadata.labels.tier',
    ]);
    expect(
      labels.stdout
        .trim()
        .split('\n')
        .map((l) => l.split(/\s+/)),
    ).toEqual([
      [WORKERS[0], 'front'],
      [WORKERS[1], 'back'],
    ]);
    const [solo] = await pods('solo');
    const body = await waitFor(
      `127.0.0.1:${hostPort} to reach NodePort ${FIXED_NODE_PORT}`,
      async () => {
        const response = await fetch(`http://127.0.0.1:${hostPort}/`).catch(() => undefined);
        return response?.ok ? (await response.text()).trim() : undefined;
      },
      30_000,
    );
    expect(body).toBe(solo!.metadata.name);
  });

  it('serves kubectl logs, exec and port-forward', async () => {
    const [solo] = await pods('solo');
    const logs = await kubectl(['logs', solo!.metadata.name]);
    expect(logs.stdout).toContain(`serving ${solo!.metadata.name}`);

    const exec = await kubectl(['exec', solo!.metadata.name, '--', 'cat', '/www/index.html']);
    expect(exec.stdout.trim()).toBe(solo!.metadata.name);

    const binary = await kubectlBinary();
    const forward = execa(
      binary,
      ['--kubeconfig', kubeconfig, 'port-forward', `pod/${solo!.metadata.name}`, ':8080'],
      {
        reject: false,
        buffer: false,
      },
    );
    let output = '';
    forward.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString()));
    try {
      const port = await waitFor(
        'port-forward to listen',
        async () => /127\.0\.0\.1:(\d+) ->/.exec(output)?.[1],
        20_000,
      );
      const response = await fetch(`http://127.0.0.1:${port}/`);
      expect((await response.text()).trim()).toBe(solo!.metadata.name);
    } finally {
      forward.kill('SIGTERM');
      await forward;
    }
  });
});
