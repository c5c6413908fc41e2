// NetworkPolicy on vind's default pod network, on one cluster (a control plane and two workers): a
// server pod on the first worker, clients on the same worker (bridged traffic) and on the other one
// (routed traffic). Traffic flows first; a default deny blocks both clients; an allow by namespace,
// pod and port lets in exactly the chosen clients on that port; an egress deny blocks a client's
// outbound, and an allow to one pod and port plus DNS lets exactly that out; deleting the policies
// restores everything and leaves no chain or set behind.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ensureTestImage,
  kubectlBinary,
  kubectlFor,
  NODE_IMAGE,
  removeByLabel,
  requireNodeImage,
  runVind,
  uniqueName,
  waitFor,
} from './helpers.js';
import { dockerRuntime } from '../../cli/runtime/docker-runtime.js';

const cluster = uniqueName('np-e2e');
const WORKERS = [`${cluster}-worker`, `${cluster}-worker2`];
const SERVERS = 'np-servers';
const CLIENTS = 'np-clients';
/** Policies take a moment to reach the node's rules. */
const APPLY_MS = 60_000;

let scratch: string;
let kubectl: ReturnType<typeof kubectlFor>;
let serverIp: string;

async function kubectlOk(args: string[], input?: string) {
  const result = await kubectl(args, input);
  expect(result.exitCode, result.stderr).toBe(0);
  return result.stdout;
}

async function apply(objects: unknown[]) {
  await kubectlOk(['apply', '-f', '-'], JSON.stringify({ apiVersion: 'v1', kind: 'List', items: objects }));
}

function pod(
  namespace: string,
  name: string,
  node: string,
  labels: Record<string, string>,
  command: string[],
) {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace, labels },
    spec: {
      nodeName: node,
      terminationGracePeriodSeconds: 1,
      containers: [
        {
          name: 'app',
          image: 'vind-test/busybox:1',
          imagePullPolicy: 'IfNotPresent',
          command,
          ports: [{ name: 'http', containerPort: 8080 }],
        },
      ],
    },
  };
}

function policy(namespace: string, name: string, spec: Record<string, unknown>) {
  return { apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name, namespace }, spec };
}

/** Whether a client pod gets an HTTP answer from the server on a port (a new connection each time). */
async function reaches(client: string, port: number, namespace = CLIENTS): Promise<boolean> {
  const result = await kubectl([
    'exec',
    '-n',
    namespace,
    client,
    '--',
    'sh',
    '-c',
    `printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 ${serverIp} ${port}`,
  ]);
  return result.stdout.includes('200 OK');
}

function waitUntilReaches(client: string, port: number, namespace = CLIENTS) {
  return waitFor(
    `${client} to reach the server on ${port}`,
    async () => ((await reaches(client, port, namespace)) ? true : undefined),
    APPLY_MS,
    500,
  );
}

function waitUntilBlocked(client: string, port: number) {
  return waitFor(
    `${client} to be refused on ${port}`,
    async () => ((await reaches(client, port)) ? undefined : true),
    APPLY_MS,
    500,
  );
}

async function resolves(client: string): Promise<boolean> {
  const result = await kubectl([
    'exec',
    '-n',
    CLIENTS,
    client,
    '--',
    'nslookup',
    'kubernetes.default.svc.cluster.local',
  ]);
  return result.exitCode === 0 && result.stdout.includes('Address');
}

describe('NetworkPolicy on the default pod network', () => {
  beforeAll(async () => {
    await requireNodeImage();
    await ensureTestImage();
    scratch = await mkdtemp(join(tmpdir(), 'vind-e2e-np-'));
    const kubeconfig = join(scratch, 'kubeconfig');
    kubectl = kubectlFor(await kubectlBinary(), kubeconfig);
    const created = await runVind(['create', cluster, '--workers', '2', '--image', NODE_IMAGE], {
      KUBECONFIG: kubeconfig,
    });
    expect(created.exitCode, created.stderr).toBe(0);
    const sleeper = ['sleep', '100000'];
    await apply([
      { apiVersion: 'v1', kind: 'Namespace', metadata: { name: SERVERS, labels: { role: 'servers' } } },
      { apiVersion: 'v1', kind: 'Namespace', metadata: { name: CLIENTS, labels: { role: 'clients' } } },
      pod(SERVERS, 'server', WORKERS[0]!, { app: 'server' }, [
        'sh',
        '-c',
        'mkdir -p /www && echo ok > /www/index.html && httpd -p 9090 -h /www && exec httpd -f -p 8080 -h /www',
      ]),
      pod(CLIENTS, 'near', WORKERS[0]!, { app: 'client' }, sleeper),
      pod(CLIENTS, 'far', WORKERS[1]!, { app: 'client' }, sleeper),
      pod(CLIENTS, 'stranger', WORKERS[1]!, { app: 'stranger' }, sleeper),
      // The chosen labels, in a namespace that is not chosen.
      pod(SERVERS, 'impostor', WORKERS[1]!, { app: 'client' }, sleeper),
    ]);
    for (const namespace of [SERVERS, CLIENTS]) {
      await kubectlOk(['wait', '-n', namespace, '--for=condition=Ready', 'pods', '--all', '--timeout=180s']);
    }
    serverIp = await kubectlOk(['get', 'pod', '-n', SERVERS, 'server', '-o', 'jsonpath={.status.podIP}']);
  }, 600_000);

  afterAll(async () => {
    await runVind(['delete', cluster]);
    await removeByLabel(cluster);
    if (scratch) await rm(scratch, { recursive: true, force: true });
  }, 180_000);

  it('lets every client reach the server on both ports before any policy', async () => {
    for (const client of ['near', 'far', 'stranger']) {
      for (const port of [8080, 9090]) expect(await reaches(client, port), `${client}:${port}`).toBe(true);
    }
    expect(await reaches('impostor', 8080, SERVERS)).toBe(true);
  });

  it('blocks clients on the same node and on another node with a default deny of ingress', async () => {
    await apply([policy(SERVERS, 'deny-ingress', { podSelector: {}, policyTypes: ['Ingress'] })]);
    await waitUntilBlocked('near', 8080);
    await waitUntilBlocked('far', 8080);
    expect(await reaches('near', 9090)).toBe(false);
  });

  it('lets in exactly the clients chosen by namespace and pod, on the chosen port only', async () => {
    await apply([
      policy(SERVERS, 'allow-clients', {
        podSelector: { matchLabels: { app: 'server' } },
        ingress: [
          {
            from: [
              {
                namespaceSelector: { matchLabels: { role: 'clients' } },
                podSelector: { matchLabels: { app: 'client' } },
              },
            ],
            ports: [{ protocol: 'TCP', port: 'http' }],
          },
        ],
      }),
    ]);
    await waitUntilReaches('far', 8080);
    // Both policies are in the server node's rules now, written in one restore.
    expect(await reaches('near', 8080)).toBe(true);
    expect(await reaches('stranger', 8080)).toBe(false);
    expect(await reaches('impostor', 8080, SERVERS)).toBe(false);
    expect(await reaches('near', 9090)).toBe(false);
    expect(await reaches('far', 9090)).toBe(false);
  });

  it('restores ingress when the policies are deleted', async () => {
    await kubectlOk(['delete', 'networkpolicy', '-n', SERVERS, '--all']);
    await waitUntilReaches('stranger', 9090);
    expect(await reaches('near', 9090)).toBe(true);
    expect(await reaches('impostor', 8080, SERVERS)).toBe(true);
  });

  it("blocks a client's outbound traffic, DNS included, with a default deny of egress", async () => {
    expect(await resolves('far')).toBe(true);
    await apply([
      policy(CLIENTS, 'deny-egress', {
        podSelector: { matchLabels: { app: 'client' } },
        policyTypes: ['Egress'],
      }),
    ]);
    await waitUntilBlocked('far', 8080);
    await waitUntilBlocked('near', 8080);
    expect(await resolves('far')).toBe(false);
    // Pods the policy does not select are not held back.
    expect(await reaches('stranger', 8080)).toBe(true);
  });

  it('lets a client out to one pod on one port, and to DNS, with an egress allow', async () => {
    await apply([
      policy(CLIENTS, 'allow-egress', {
        podSelector: { matchLabels: { app: 'client' } },
        policyTypes: ['Egress'],
        egress: [
          {
            to: [
              {
                namespaceSelector: { matchLabels: { role: 'servers' } },
                podSelector: { matchLabels: { app: 'server' } },
              },
            ],
            ports: [{ protocol: 'TCP', port: 8080 }],
          },
          {
            ports: [
              { protocol: 'UDP', port: 53 },
              { protocol: 'TCP', port: 53 },
            ],
          },
        ],
      }),
    ]);
    await waitUntilReaches('far', 8080);
    expect(await reaches('near', 8080)).toBe(true);
    expect(await reaches('far', 9090)).toBe(false);
    expect(await reaches('near', 9090)).toBe(false);
    await waitFor(
      'far to resolve names',
      async () => ((await resolves('far')) ? true : undefined),
      APPLY_MS,
      500,
    );
  });

  it('restores egress when the policies are deleted, leaving no chain or set behind', async () => {
    await kubectlOk(['delete', 'networkpolicy', '-n', CLIENTS, '--all']);
    await waitUntilReaches('far', 9090);
    expect(await reaches('near', 9090)).toBe(true);
    for (const worker of WORKERS) {
      const left = await waitFor(
        `${worker} to drop its policy chains and sets`,
        async () => {
          const rules = await dockerRuntime().exec(worker, ['iptables-save', '-t', 'filter']);
          const sets = await dockerRuntime().exec(worker, ['ipset', 'list', '-n']);
          const found = [...rules.stdout.split('\n'), ...sets.stdout.split('\n')].filter((line) =>
            /VIND-NP[IE]-|^VNP-/.test(line),
          );
          return found.length === 0 ? found : undefined;
        },
        APPLY_MS,
        500,
      );
      expect(left).toEqual([]);
    }
  });
});
