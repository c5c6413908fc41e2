import { mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeFileAtomic } from '../../shared/atomic-write.js';
import {
  clusterDnsAddress,
  decodeNodeEnv,
  encodeNodeEnv,
  kubernetesServiceAddress,
  parseJoinInfo,
  parseNodeStatus,
  type NodeSettings,
} from '../../shared/contract.js';
import { parseByteSize } from '../../shared/byte-size.js';
import { InterruptedError } from '../../shared/errors.js';
import {
  familiarRepository,
  parseImageReference,
  qualifiedReference,
  repositoryAndTag,
} from '../../shared/image-reference.js';
import { objectPath } from '../../shared/kubernetes.js';
import { PermanentError, poll, PollTimeoutError } from '../../shared/poll.js';

function envRecord(entries: string[]): Record<string, string> {
  return Object.fromEntries(entries.map((e) => [e.slice(0, e.indexOf('=')), e.slice(e.indexOf('=') + 1)]));
}

describe('node settings as container environment', () => {
  const common = {
    nodeName: 'dev-worker',
    nodeIp: '172.30.0.3',
    podSubnet: '10.244.0.0/16',
    serviceSubnet: '10.96.0.0/16',
    cni: 'default' as const,
  };

  it.each<NodeSettings>([
    {
      ...common,
      nodeName: 'dev-control-plane',
      role: 'control-plane',
      datastore: 'sqlite',
      podSecurity: 'privileged',
      clusterName: 'dev',
      reuseDatastore: false,
      loadBalancer: { first: '172.30.0.128', last: '172.30.0.254', hostPorts: false },
      storage: 'default',
    },
    {
      ...common,
      nodeName: 'x',
      role: 'control-plane',
      datastore: 'external',
      podSecurity: 'restricted',
      clusterName: 'x',
      reuseDatastore: true,
      imageCache: 'http://c:5000',
      imageCacheToken: 'cd'.repeat(32),
      loadBalancer: { first: '172.30.0.200', last: '172.30.0.201', hostPorts: true },
      storage: 'none',
      cni: 'none',
    },
    {
      ...common,
      role: 'worker',
      labels: { tier: 'web' },
      imageCache: 'http://c:5000',
      imageCacheToken: 'ab'.repeat(32),
      join: { kind: 'file' },
    },
    { ...common, role: 'worker', labels: {}, join: { kind: 'none' } },
    {
      ...common,
      role: 'worker',
      labels: {},
      join: {
        kind: 'inline',
        join: { server: 'https://172.30.0.2:6443', token: 'a.b', caCertHash: 'sha256:0' },
      },
    },
  ])('reads back what was written ($role, join $join.kind)', (settings) => {
    expect(decodeNodeEnv(settings.role, envRecord(encodeNodeEnv(settings)))).toEqual(settings);
  });

  it('carries the image cache token in its own variable', () => {
    const env = envRecord(
      encodeNodeEnv({
        ...common,
        role: 'worker',
        labels: {},
        imageCache: 'http://c:5000',
        imageCacheToken: 'cd'.repeat(32),
        join: { kind: 'none' },
      }),
    );
    expect(env.VIND_IMAGE_CACHE_TOKEN).toBe('cd'.repeat(32));
    const settings = decodeNodeEnv('worker', { ...env, VIND_IMAGE_CACHE_TOKEN: '' });
    expect(settings.role === 'worker' && settings.imageCacheToken).toBeUndefined();
  });

  it('names a missing value', () => {
    expect(() => decodeNodeEnv('worker', { VIND_NODE_NAME: 'x' })).toThrow(
      'VIND_NODE_IP is not set: the worker cannot start without it',
    );
  });

  it('refuses labels that are not JSON', () => {
    expect(() =>
      decodeNodeEnv('worker', { VIND_NODE_NAME: 'x', VIND_NODE_IP: '1.2.3.4', VIND_NODE_LABELS: '{' }),
    ).toThrow(/VIND_NODE_LABELS is not a JSON object/);
  });
});

describe('contract files', () => {
  it('reads a status, and nothing from half a file or an unknown phase', () => {
    expect(parseNodeStatus('{"phase":"ready","message":"ok","at":"t"}')).toEqual({
      phase: 'ready',
      message: 'ok',
      at: 't',
    });
    expect(parseNodeStatus('{"phase":"rea')).toBeUndefined();
    expect(parseNodeStatus('{"phase":"sleeping"}')).toBeUndefined();
    expect(parseNodeStatus(undefined)).toBeUndefined();
  });

  it('refuses join information without its parts', () => {
    expect(() => parseJoinInfo('{"server":"https://x:6443"}')).toThrow(/lacks server, token or caCertHash/);
  });

  it('puts the kubernetes Service first and cluster DNS tenth in the Service network', () => {
    expect(kubernetesServiceAddress('10.96.0.0/16')).toBe('10.96.0.1');
    expect(clusterDnsAddress('10.97.0.0/16')).toBe('10.97.0.10');
  });
});

describe('parseImageReference', () => {
  it.each([
    ['busybox', { registry: 'docker.io', repository: 'library/busybox', tag: undefined, digest: undefined }],
    ['user/app:1.2', { registry: 'docker.io', repository: 'user/app', tag: '1.2', digest: undefined }],
    [
      'localhost:5000/team/app:v1',
      { registry: 'localhost:5000', repository: 'team/app', tag: 'v1', digest: undefined },
    ],
    [
      `ghcr.io/o/app@sha256:${'a'.repeat(64)}`,
      { registry: 'ghcr.io', repository: 'o/app', tag: undefined, digest: `sha256:${'a'.repeat(64)}` },
    ],
    [
      `registry:5000/app:v2@sha256:${'b'.repeat(64)}`,
      { registry: 'registry:5000', repository: 'app', tag: 'v2', digest: `sha256:${'b'.repeat(64)}` },
    ],
  ])('%s', (reference, expected) => {
    expect(parseImageReference(reference)).toEqual(expected);
  });

  it('keeps a digest intact where a tag parser would cut it at its colon', () => {
    const digest = `sha256:${'c'.repeat(64)}`;
    expect(repositoryAndTag(`app@${digest}`)).toEqual(['app', 'latest']);
    expect(qualifiedReference(`app@${digest}`)).toBe(`docker.io/library/app@${digest}`);
    expect(familiarRepository(parseImageReference('docker.io/library/nginx'))).toBe('nginx');
  });

  it('refuses what is not a reference, naming the part', () => {
    expect(() => parseImageReference('')).toThrow('invalid image reference "": it is empty');
    expect(() => parseImageReference('Upper/app')).toThrow(/"Upper" is not a valid repository name part/);
    expect(() => parseImageReference('app@sha256:short')).toThrow(/is not a digest/);
  });

  it('refuses a registry part that is not host[:port]', () => {
    expect(() => parseImageReference('../etc/app')).toThrow(/"\.\." is not a registry host/);
    expect(() => parseImageReference('a..b/app')).toThrow(/is not a registry host/);
    expect(() => parseImageReference('evil.com?x=1/app')).toThrow(/is not a registry host/);
    expect(() => parseImageReference('127.0.0.1:abc/app')).toThrow(/is not a registry host/);
    expect(() => parseImageReference('-bad.io/app')).toThrow(/is not a registry host/);
    expect(parseImageReference('[::1]:5000/app:1').registry).toBe('[::1]:5000');
    expect(parseImageReference('127.0.0.1:5000/app').registry).toBe('127.0.0.1:5000');
  });
});

describe('objectPath', () => {
  it('places core, grouped, namespaced and cluster-wide objects', () => {
    const meta = (name: string, namespace?: string) => ({ name, ...(namespace ? { namespace } : {}) });
    expect(
      objectPath({ apiVersion: 'v1', kind: 'ConfigMap', metadata: meta('cluster-info', 'kube-public') }),
    ).toBe('/api/v1/namespaces/kube-public/configmaps/cluster-info');
    expect(
      objectPath({ apiVersion: 'apps/v1', kind: 'Deployment', metadata: meta('coredns', 'kube-system') }),
    ).toBe('/apis/apps/v1/namespaces/kube-system/deployments/coredns');
    expect(
      objectPath({
        apiVersion: 'rbac.authorization.k8s.io/v1',
        kind: 'ClusterRole',
        metadata: meta('system:x'),
      }),
    ).toBe('/apis/rbac.authorization.k8s.io/v1/clusterroles/system:x');
    expect(objectPath({ apiVersion: 'v1', kind: 'Service', metadata: meta('web') })).toBe(
      '/api/v1/namespaces/default/services/web',
    );
    expect(() => objectPath({ apiVersion: 'v1', kind: 'Gadget', metadata: meta('x') })).toThrow(/Gadget/);
  });

  it('knows every kind the control plane applies', async () => {
    const { bootstrapRbac, coreDns } = await import('../../node-agent/manifests.js');
    const { metricsServer } = await import('../../node-agent/metrics-manifests.js');
    const { storageManifests } = await import('../../node-agent/storage-manifests.js');
    const { networkPolicyRbac } = await import('../../node-agent/network-policy-rules.js');
    const objects = [
      ...bootstrapRbac(),
      ...coreDns('vind.dev/coredns:x', '10.96.0.10'),
      ...metricsServer({ image: 'm', caPem: 'c', certPem: 'c', keyPem: 'k' }),
      ...storageManifests('default'),
      ...networkPolicyRbac(),
    ] as unknown as Parameters<typeof objectPath>[0][];
    for (const object of objects) expect(() => objectPath(object)).not.toThrow();
  });
});

describe('parseByteSize', () => {
  it.each([
    ['1048576', 1024 ** 2],
    ['20G', 20 * 1024 ** 3],
    ['20GiB', 20 * 1024 ** 3],
    ['20 gb', 20 * 1024 ** 3],
    ['512MiB', 512 * 1024 ** 2],
    ['1.5T', 1.5 * 1024 ** 4],
    ['100B', 100],
  ])('%s is %d bytes', (text, bytes) => {
    expect(parseByteSize(text)).toBe(bytes);
  });

  it.each(['', 'ten', '-1G', '5X', '1e9'])('refuses %j', (text) => {
    expect(() => parseByteSize(text)).toThrow(/is not a size/);
  });
});

describe('poll', () => {
  it('returns the first answer, keeping the last reason while it waits', async () => {
    let calls = 0;
    const value = await poll(
      'three tries',
      async () => {
        calls++;
        if (calls < 3) throw new Error(`not yet ${calls}`);
        return calls;
      },
      { timeoutMs: 1000, intervalMs: 1 },
    );
    expect(value).toBe(3);
  });

  it('names what it waited for and the last reason when time runs out', async () => {
    const waiting = poll(
      'the moon',
      async () => {
        throw new Error('still full');
      },
      { timeoutMs: 30, intervalMs: 5 },
    );
    await expect(waiting).rejects.toBeInstanceOf(PollTimeoutError);
    await expect(waiting).rejects.toThrow(/waiting for the moon: still full/);
  });

  it('stops at once on a permanent error or an abort', async () => {
    await expect(
      poll('x', async () => Promise.reject(new PermanentError('hash mismatch')), { timeoutMs: 10_000 }),
    ).rejects.toThrow('hash mismatch');
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 20);
    await expect(
      poll('y', async () => undefined, { timeoutMs: 10_000, intervalMs: 5_000, signal: controller.signal }),
    ).rejects.toBeInstanceOf(InterruptedError);
  });
});

describe('writeFileAtomic', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'vind-atomic-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('replaces a file whole, with the exact mode, leaving no temporary file', async () => {
    const path = join(dir, 'status');
    await writeFileAtomic(path, 'one', { mode: 0o600 });
    await writeFileAtomic(path, 'two', { mode: 0o600, sync: true });
    expect(await readFile(path, 'utf8')).toBe('two');
    expect((await stat(path)).mode & 0o777).toBe(0o600);
    expect(await readdir(dir)).toEqual(['status']);
  });

  it('leaves the old file and no temporary one when the write fails', async () => {
    await expect(writeFileAtomic(join(dir, 'missing', 'file'), 'x')).rejects.toThrow();
    await writeFileAtomic(join(dir, 'made', 'file'), 'x', { createDirectory: true });
    expect(await readFile(join(dir, 'made', 'file'), 'utf8')).toBe('x');
  });
});
