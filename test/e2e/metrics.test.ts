// The Metrics API out of the box, on a real cluster (a control plane and two workers):
// - every kubelet serves with a certificate of the cluster CA, for its own name and address, got
//   through the CSR API and approved by vind; a node asking for another node's name is denied;
// - metrics-server runs without --kubelet-insecure-tls, its APIService pins the cluster CA and is
//   Available; `kubectl top nodes` and `kubectl top pods` answer;
// - a HorizontalPodAutoscaler on CPU scales a busy Deployment up.

import { webcrypto, X509Certificate } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { controlPlaneName, workerName } from '../../shared/contract.js';
import {
  ensureTestImage,
  execInContainer,
  kubectlBinary,
  kubectlFor,
  NODE_IMAGE,
  removeByLabel,
  requireNodeImage,
  runVind,
  uniqueName,
  waitFor,
} from './helpers.js';

const cluster = uniqueName('e2e-day1-metrics');
const workers = [workerName(cluster, 0), workerName(cluster, 1)];
let scratch: string;
let kubeconfig: string;
let kubectl: ReturnType<typeof kubectlFor>;

async function json<T>(args: string[]): Promise<T> {
  const result = await kubectl([...args, '-o', 'json']);
  expect(result.exitCode, result.stderr).toBe(0);
  return JSON.parse(result.stdout) as T;
}

interface Csr {
  metadata: { name: string };
  spec: { signerName: string; username: string };
  status?: { conditions?: { type: string; reason?: string; message?: string }[]; certificate?: string };
}

/** A CertificateSigningRequest manifest for a real request, with a new key, for node `node`'s identity. */
async function nodeRequest(
  node: string,
  signerName: string,
  usages: string[],
  extensions: x509.Extension[] = [],
): Promise<(name: string) => string> {
  x509.cryptoProvider.set(webcrypto);
  const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
  const keys = await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify']);
  const request = await x509.Pkcs10CertificateRequestGenerator.create({
    name: `O=system:nodes, CN=system:node:${node}`,
    keys,
    signingAlgorithm: alg,
    extensions,
  });
  return (name) =>
    JSON.stringify({
      apiVersion: 'certificates.k8s.io/v1',
      kind: 'CertificateSigningRequest',
      metadata: { name },
      spec: { request: Buffer.from(request.toString('pem')).toString('base64'), signerName, usages },
    });
}

describe('metrics and kubelet serving certificates', () => {
  beforeAll(async () => {
    await requireNodeImage();
    await ensureTestImage();
    scratch = await mkdtemp(join(tmpdir(), 'vind-e2e-metrics-'));
    kubeconfig = join(scratch, 'kubeconfig');
    kubectl = kubectlFor(await kubectlBinary(), kubeconfig);
    const created = await runVind(['create', cluster, '--workers', '2', '--image', NODE_IMAGE], {
      KUBECONFIG: kubeconfig,
    });
    expect(created.exitCode, created.stderr).toBe(0);
  }, 300_000);

  afterAll(async () => {
    await runVind(['delete', cluster], { KUBECONFIG: kubeconfig });
    await removeByLabel(cluster);
    if (scratch) await rm(scratch, { recursive: true, force: true });
  }, 180_000);

  it('gives every kubelet a serving certificate of the cluster CA for its own name and address', async () => {
    const ca = new X509Certificate(
      (await execInContainer(controlPlaneName(cluster), ['cat', '/var/lib/vind/pki/ca.crt'])).stdout,
    );
    const nodes = await json<{
      items: { metadata: { name: string }; status: { addresses: { type: string; address: string }[] } }[];
    }>(['get', 'nodes']);
    for (const worker of workers) {
      const pem = (await execInContainer(worker, ['cat', '/var/lib/kubelet/pki/kubelet-server-current.pem']))
        .stdout;
      const cert = new X509Certificate(pem.slice(pem.indexOf('-----BEGIN CERTIFICATE-----')));
      expect(cert.verify(ca.publicKey), worker).toBe(true);
      expect(cert.issuer).toBe(ca.subject);
      const ip = nodes.items
        .find((n) => n.metadata.name === worker)!
        .status.addresses.find((a) => a.type === 'InternalIP')!.address;
      expect(cert.subjectAltName).toBe(`DNS:${worker}, IP Address:${ip}`);
      expect(cert.subject).toContain(`CN=system:node:${worker}`);
    }
    const csrs = await json<{ items: Csr[] }>(['get', 'csr']);
    const serving = csrs.items.filter((c) => c.spec.signerName === 'kubernetes.io/kubelet-serving');
    expect(serving.map((c) => c.spec.username).sort()).toEqual(workers.map((w) => `system:node:${w}`).sort());
    for (const csr of serving) {
      expect(csr.status?.conditions?.[0]).toMatchObject({
        type: 'Approved',
        reason: 'VindKubeletServingApproved',
      });
      expect(csr.status?.certificate).toBeTruthy();
    }
    // The API server verifies the kubelet with that CA: logs come through.
    const logs = await kubectl(['logs', '-n', 'kube-system', '-l', 'k8s-app=kube-dns', '--tail', '5']);
    expect(logs.exitCode, logs.stderr).toBe(0);
  });

  it("denies a node's request for another node's name", async () => {
    // A real request, sent with the first worker's own credentials, naming the second worker.
    const manifest = await nodeRequest(
      workers[0]!,
      'kubernetes.io/kubelet-serving',
      ['digital signature', 'server auth'],
      [new x509.SubjectAlternativeNameExtension([{ type: 'dns', value: workers[1]! }])],
    );
    const name = uniqueName('stolen-name');
    const sent = await execInContainer(
      workers[0]!,
      ['kubectl', '--kubeconfig', '/var/lib/vind/kubelet.conf', 'create', '-f', '-'],
      Readable.from([manifest(name)]),
    );
    expect(sent.exitCode, sent.stderr).toBe(0);
    const decided = await waitFor(
      'the request to be decided',
      async () => {
        const csr = await json<Csr>(['get', 'csr', name]);
        return csr.status?.conditions?.[0];
      },
      30_000,
    );
    expect(decided).toMatchObject({
      type: 'Denied',
      reason: 'VindKubeletServingDenied',
      message: `${workers[1]} is not a name of node ${workers[0]}`,
    });
    await kubectl(['delete', 'csr', name]);
  });

  it("signs each worker's client certificate at join, and not a node's request for another node's", async () => {
    const all = await json<{ items: Csr[] }>(['get', 'csr']);
    const joined = all.items.filter(
      (c) => c.spec.signerName === 'kubernetes.io/kube-apiserver-client-kubelet',
    );
    expect(joined).toHaveLength(workers.length);
    for (const csr of joined) {
      // Sent with the bootstrap token, approved after a SubjectAccessReview, as the controller manager does.
      expect(csr.spec.username).toMatch(/^system:bootstrap:/);
      expect(csr.status?.conditions?.[0]).toMatchObject({ type: 'Approved', reason: 'AutoApproved' });
      expect(csr.status?.certificate).toBeTruthy();
    }

    // Real client requests for the second worker's identity.
    const manifest = await nodeRequest(workers[1]!, 'kubernetes.io/kube-apiserver-client-kubelet', [
      'digital signature',
      'client auth',
    ]);
    // With the first worker's credentials the API server's node restriction refuses it outright.
    const byNode = await execInContainer(
      workers[0]!,
      ['kubectl', '--kubeconfig', '/var/lib/vind/kubelet.conf', 'create', '-f', '-'],
      Readable.from([manifest(uniqueName('stolen-client'))]),
    );
    expect(byNode.exitCode).not.toBe(0);
    expect(byNode.stderr).toContain(`can only create a node CSR with CN=system:node:${workers[0]}`);
    // A user who may create requests, but not certificatesigningrequests/nodeclient: taken, never approved.
    const name = uniqueName('unapproved-client');
    const user = 'system:serviceaccount:default:csr-maker';
    const binding = uniqueName('csr-maker');
    const bound = await kubectl([
      'create',
      'clusterrolebinding',
      binding,
      '--clusterrole=system:node-bootstrapper',
      '--serviceaccount=default:csr-maker',
    ]);
    expect(bound.exitCode, bound.stderr).toBe(0);
    const sent = await kubectl(['--as', user, 'create', '-f', '-'], manifest(name));
    expect(sent.exitCode, sent.stderr).toBe(0);
    // Approval takes milliseconds when it is given; five seconds without one is a refusal.
    await new Promise((resolve) => setTimeout(resolve, 5000));
    const csr = await json<Csr>(['get', 'csr', name]);
    expect(csr.spec.username).toBe(user);
    expect(csr.status?.conditions ?? []).toEqual([]);
    expect(csr.status?.certificate).toBeUndefined();
    await kubectl(['delete', 'csr', name]);
    await kubectl(['delete', 'clusterrolebinding', binding]);
  });

  it('serves the Metrics API with verified TLS, and kubectl top answers', async () => {
    const deployment = await json<{ spec: { template: { spec: { containers: { args: string[] }[] } } } }>([
      'get',
      'deployment',
      '-n',
      'kube-system',
      'metrics-server',
    ]);
    const args = deployment.spec.template.spec.containers[0]!.args;
    expect(args.some((a) => a.includes('insecure'))).toBe(false);
    const service = await waitFor(
      'the Metrics API to be available',
      async () => {
        const api = await json<{
          spec: { caBundle?: string; insecureSkipTLSVerify?: boolean };
          status: { conditions?: { type: string; status: string }[] };
        }>(['get', 'apiservice', 'v1beta1.metrics.k8s.io']);
        return api.status.conditions?.some((c) => c.type === 'Available' && c.status === 'True')
          ? api
          : undefined;
      },
      120_000,
      1000,
    );
    expect(service.spec.insecureSkipTLSVerify ?? false).toBe(false);
    expect(service.spec.caBundle).toBeTruthy();

    const top = await waitFor(
      'kubectl top nodes',
      async () => {
        const result = await kubectl(['top', 'nodes', '--no-headers']);
        return result.exitCode === 0 && workers.every((w) => result.stdout.includes(w))
          ? result.stdout
          : undefined;
      },
      120_000,
      2000,
    );
    for (const worker of workers)
      expect(top).toMatch(new RegExp(`^${worker}\\s+\\d+m\\s+\\d+%\\s+\\d+Mi`, 'm'));
    const pods = await waitFor(
      'kubectl top pods',
      async () => {
        const result = await kubectl(['top', 'pods', '-n', 'kube-system', '--no-headers']);
        return result.exitCode === 0 && result.stdout.includes('coredns') ? result.stdout : undefined;
      },
      120_000,
      2000,
    );
    expect(pods).toMatch(/^coredns-\S+\s+\d+m\s+\d+Mi/m);
  }, 300_000);

  it('scales a busy Deployment up with a HorizontalPodAutoscaler on CPU', async () => {
    const namespace = 'hpa';
    const manifest = {
      apiVersion: 'v1',
      kind: 'List',
      items: [
        { apiVersion: 'v1', kind: 'Namespace', metadata: { name: namespace } },
        {
          apiVersion: 'apps/v1',
          kind: 'Deployment',
          metadata: { name: 'busy', namespace },
          spec: {
            replicas: 1,
            selector: { matchLabels: { app: 'busy' } },
            template: {
              metadata: { labels: { app: 'busy' } },
              spec: {
                terminationGracePeriodSeconds: 0,
                containers: [
                  {
                    name: 'busy',
                    image: 'vind-test/busybox:1',
                    imagePullPolicy: 'IfNotPresent',
                    // Spins at its limit: 50m used of 10m asked is 500% of the request.
                    command: ['sh', '-c', 'while :; do :; done'],
                    resources: { requests: { cpu: '10m' }, limits: { cpu: '50m' } },
                  },
                ],
              },
            },
          },
        },
        {
          apiVersion: 'autoscaling/v2',
          kind: 'HorizontalPodAutoscaler',
          metadata: { name: 'busy', namespace },
          spec: {
            scaleTargetRef: { apiVersion: 'apps/v1', kind: 'Deployment', name: 'busy' },
            minReplicas: 1,
            maxReplicas: 3,
            metrics: [
              {
                type: 'Resource',
                resource: { name: 'cpu', target: { type: 'Utilization', averageUtilization: 50 } },
              },
            ],
          },
        },
      ],
    };
    const applied = await kubectl(['apply', '-f', '-'], JSON.stringify(manifest));
    expect(applied.exitCode, applied.stderr).toBe(0);
    const hpa = await waitFor(
      'the autoscaler to scale the Deployment up',
      async () => {
        const status = await json<{
          status: {
            desiredReplicas?: number;
            currentMetrics?: { resource?: { current?: { averageUtilization?: number } } }[];
          };
        }>(['get', 'hpa', '-n', namespace, 'busy']);
        return (status.status.desiredReplicas ?? 0) > 1 ? status.status : undefined;
      },
      240_000,
      3000,
    );
    expect(hpa.currentMetrics?.[0]?.resource?.current?.averageUtilization).toBeGreaterThan(50);
    const scaled = await waitFor(
      'more than one busy pod',
      async () => {
        const deployment = await json<{ status: { replicas?: number } }>([
          'get',
          'deployment',
          '-n',
          namespace,
          'busy',
        ]);
        return (deployment.status.replicas ?? 0) > 1 ? deployment.status.replicas : undefined;
      },
      60_000,
      1000,
    );
    expect(scaled).toBeGreaterThan(1);
    await kubectl(['delete', 'namespace', namespace, '--wait=false']);
  }, 360_000);
});
