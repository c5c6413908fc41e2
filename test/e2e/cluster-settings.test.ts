// Cluster-wide settings chosen at create: the Pod Security Standard enforced by default, and what
// `vind list --json` reports about the control plane's certificates.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  kubectlBinary,
  kubectlFor,
  removeByLabel,
  requireNodeImage,
  runVind,
  TEST_IMAGE,
  uniqueName,
  waitFor,
} from './helpers.js';

const cluster = uniqueName('e2e-settings');
let scratch: string;
let kubectl: ReturnType<typeof kubectlFor>;

function pod(name: string, securityContext: Record<string, unknown>, podSecurityContext = {}) {
  return JSON.stringify({
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name },
    spec: {
      securityContext: podSecurityContext,
      containers: [{ name: 'c', image: TEST_IMAGE, command: ['sleep', '60'], securityContext }],
    },
  });
}

const RESTRICTED_OK = {
  allowPrivilegeEscalation: false,
  capabilities: { drop: ['ALL'] },
  runAsNonRoot: true,
  runAsUser: 1000,
  seccompProfile: { type: 'RuntimeDefault' },
};

describe('a cluster created with --pod-security restricted', () => {
  beforeAll(async () => {
    await requireNodeImage();
    scratch = await mkdtemp(join(tmpdir(), 'vind-e2e-settings-'));
    const kubeconfig = join(scratch, 'kubeconfig');
    kubectl = kubectlFor(await kubectlBinary(), kubeconfig);
    const created = await runVind(['create', cluster, '--workers', '1', '--pod-security', 'restricted'], {
      KUBECONFIG: kubeconfig,
    });
    // CoreDNS in kube-system still starts: create waits for it.
    expect(created.exitCode, created.stderr).toBe(0);
  });

  afterAll(async () => {
    await removeByLabel(cluster);
    if (scratch) await rm(scratch, { recursive: true, force: true });
  });

  it('refuses a privileged pod with the standard Pod Security message', async () => {
    const result = await kubectl(
      ['create', '--dry-run=server', '-f', '-'],
      pod('root', { privileged: true }),
    );
    expect(result.exitCode).not.toBe(0);
    expect(result.stderr).toContain('violates PodSecurity "restricted:latest"');
    expect(result.stderr).toContain(
      'privileged (container "c" must not set securityContext.privileged=true)',
    );
  });

  it('admits a pod that meets the restricted standard', async () => {
    const result = await kubectl(['create', '--dry-run=server', '-f', '-'], pod('fine', RESTRICTED_OK));
    expect(result.exitCode, result.stderr).toBe(0);
  });

  it("lets a namespace's own label choose a different level", async () => {
    expect((await kubectl(['create', 'namespace', 'lab'])).exitCode).toBe(0);
    expect(
      (await kubectl(['label', 'namespace', 'lab', 'pod-security.kubernetes.io/enforce=privileged']))
        .exitCode,
    ).toBe(0);
    const result = await kubectl(
      ['create', '-n', 'lab', '--dry-run=server', '-f', '-'],
      pod('root', { privileged: true }),
    );
    expect(result.exitCode, result.stderr).toBe(0);
  });

  it('reports when the first of its certificates expires', async () => {
    const listed = await runVind(['list', '--json']);
    expect(listed.exitCode, listed.stderr).toBe(0);
    const summary = (JSON.parse(listed.stdout) as { name: string; certificatesExpire?: string }[]).find(
      (c) => c.name === cluster,
    );
    const days = (Date.parse(summary!.certificatesExpire!) - Date.now()) / (24 * 3600 * 1000);
    expect(days).toBeGreaterThan(360);
    expect(days).toBeLessThan(366);
  });

  it('evicts a pod that fills more disk than it may, before it can fill the host', async () => {
    const filler = {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: 'filler' },
      spec: {
        restartPolicy: 'Never',
        terminationGracePeriodSeconds: 1,
        securityContext: { runAsNonRoot: true, runAsUser: 1000, seccompProfile: { type: 'RuntimeDefault' } },
        containers: [
          {
            name: 'c',
            image: TEST_IMAGE,
            // 64 MiB into a volume allowed 16 MiB, then wait to be stopped.
            command: [
              'sh',
              '-c',
              'cat /bin/busybox /bin/busybox /bin/busybox /bin/busybox /bin/busybox /bin/busybox /bin/busybox /bin/busybox > /scratch/a; for i in 1 2 3 4 5 6 7; do cat /scratch/a >> /scratch/b; done; sleep 600',
            ],
            securityContext: { allowPrivilegeEscalation: false, capabilities: { drop: ['ALL'] } },
            volumeMounts: [{ name: 'scratch', mountPath: '/scratch' }],
          },
        ],
        volumes: [{ name: 'scratch', emptyDir: { sizeLimit: '16Mi' } }],
      },
    };
    expect((await kubectl(['apply', '-f', '-'], JSON.stringify(filler))).exitCode).toBe(0);
    const status = await waitFor(
      'the kubelet to evict the pod',
      async () => {
        const result = await kubectl([
          'get',
          'pod',
          'filler',
          '-o',
          'jsonpath={.status.phase}/{.status.reason}/{.status.message}',
        ]);
        return result.stdout.startsWith('Failed/') ? result.stdout : undefined;
      },
      120_000,
      1000,
    );
    expect(status).toMatch(/^Failed\/Evicted\/.*emptydir/i);
  });

  it('runs its kubelets with disk eviction and image garbage collection on', async () => {
    const configz = await kubectl(['get', '--raw', `/api/v1/nodes/${cluster}-worker/proxy/configz`]);
    expect(configz.exitCode, configz.stderr).toBe(0);
    const config = (JSON.parse(configz.stdout) as { kubeletconfig: Record<string, unknown> }).kubeletconfig;
    expect(config.evictionHard).toMatchObject({ 'nodefs.available': '2Gi', 'imagefs.available': '2Gi' });
    expect(config.imageGCHighThresholdPercent).toBe(90);
  });
});
