import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { gzipSync } from 'node:zlib';
import tar from 'tar-stream';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { defaultExportDir, exportLogs, podContainers } from '../../cli/export-logs.js';
import type { NodeRequest } from '../../cli/runtime/runtime.js';
import { createCertificateAuthority, issueServingCertificate } from '../../node-agent/pki.js';
import { LABELS } from '../../shared/contract.js';
import type { KubeTarget } from '../../shared/kubernetes.js';
import { FakeRuntime } from '../support/fake-runtime.js';

function node(name: string, role: NodeRequest['role']): NodeRequest {
  return {
    name,
    cluster: 'dev',
    role,
    image: 'vind/node:v1.36.3',
    securityMode: 'privileged',
    network: 'vind-dev',
    address: '172.30.0.2',
    env: [],
    ports: [],
    labels: role === 'control-plane' ? { [LABELS.kubernetesVersion]: 'v1.36.3' } : {},
  };
}

/** A gzipped tar of the files, base64: what `tar -czf - ... | base64` prints in a node. */
async function tarOutput(files: Record<string, string>): Promise<string> {
  const pack = tar.pack();
  for (const [name, content] of Object.entries(files)) pack.entry({ name }, content);
  pack.finalize();
  const chunks: Buffer[] = [];
  for await (const chunk of pack) chunks.push(chunk as Buffer);
  return gzipSync(Buffer.concat(chunks)).toString('base64');
}

async function tree(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries
    .filter((e) => e.isFile())
    .map((e) => relative(dir, join(e.parentPath, e.name)))
    .sort();
}

/** A small API server: /version, nodes, events, pods and their logs. */
let server: Server;
let target: KubeTarget;
const apiRequests: string[] = [];

beforeAll(async () => {
  const authority = await createCertificateAuthority('test-ca');
  const serving = await issueServingCertificate(authority.cert, authority.key, ['localhost']);
  server = createServer({ cert: serving.cert, key: serving.key }, (req, res) => {
    const url = new URL(req.url ?? '/', 'https://localhost');
    apiRequests.push(`${url.pathname}${url.search}`);
    const json = (body: unknown) => res.end(JSON.stringify(body));
    if (url.pathname === '/version') return json({ gitVersion: 'v1.36.3' });
    if (url.pathname === '/api/v1/nodes') return json({ items: [{ metadata: { name: 'dev-worker' } }] });
    if (url.pathname === '/api/v1/events') {
      return json({
        items: [
          {
            metadata: { name: 'e1', namespace: 'kube-system' },
            involvedObject: { kind: 'Pod', name: 'coredns-1' },
            type: 'Warning',
            reason: 'BackOff',
            message: 'Back-off restarting',
            lastTimestamp: '2026-11-22T20:00:00Z',
          },
        ],
      });
    }
    if (url.pathname === '/api/v1/pods') {
      return json({
        items: [
          {
            metadata: { name: 'coredns-1', namespace: 'kube-system' },
            spec: { containers: [{ name: 'coredns' }] },
            status: { containerStatuses: [{ name: 'coredns', restartCount: 2 }] },
          },
          {
            metadata: { name: 'web', namespace: 'default' },
            spec: { initContainers: [{ name: 'init' }], containers: [{ name: 'app' }] },
          },
        ],
      });
    }
    const log = url.pathname.match(/^\/api\/v1\/namespaces\/([^/]+)\/pods\/([^/]+)\/log$/);
    if (log) {
      const container = url.searchParams.get('container');
      if (container === 'init') {
        res.statusCode = 400;
        return json({ message: 'container "init" is waiting to start' });
      }
      res.setHeader('Content-Type', 'text/plain');
      const previous = url.searchParams.get('previous') === 'true' ? ' (previous)' : '';
      return res.end(`${log[2]}/${container}${previous}: line 1\nline 2\n`);
    }
    res.statusCode = 404;
    json({ message: 'not found' });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  target = { server: `https://localhost:${(server.address() as AddressInfo).port}`, ca: authority.cert };
});

afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

describe('exportLogs', () => {
  let fake: FakeRuntime;
  let scratch: string;

  beforeEach(async () => {
    fake = new FakeRuntime();
    scratch = await mkdtemp(join(tmpdir(), 'vind-export-test-'));
    apiRequests.length = 0;
    await fake.runNode(node('dev-control-plane', 'control-plane'));
    await fake.runNode(node('dev-worker', 'worker'));
    await fake.runFrontDoor({
      cluster: 'dev',
      image: 'vind/node:v1.36.3',
      network: 'vind-dev',
      port: { containerPort: 6443, hostPort: 40000, listenAddress: '127.0.0.1', protocol: 'TCP' },
      env: [],
      labels: {},
    });
    fake.logsOf = (container) => `${container}: agent output\n`;
    const archives = {
      'dev-control-plane': await tarOutput({
        'var/log/vind/kube-apiserver.log': 'apiserver log\n',
        'run/vind/status': '{"phase":"ready"}',
        '../../escape.txt': 'never written outside',
      }),
      'dev-worker': await tarOutput({
        'var/log/vind/kubelet.log': 'kubelet log\n',
        'var/log/pods/kube-system_coredns-1_x/coredns/0.log': 'coredns on disk\n',
        'run/vind/status': '{"phase":"ready"}',
      }),
    };
    fake.execAnswer = (container, command) =>
      command[0] === 'sh' && command[2]?.includes('tar -C /')
        ? { exitCode: 0, stdout: archives[container as keyof typeof archives] ?? '', stderr: '' }
        : undefined;
  });

  afterEach(() => rm(scratch, { recursive: true, force: true }));

  it('writes every container, every node folder and what the API server knows', async () => {
    const output = join(scratch, 'out');
    const result = await exportLogs({
      runtime: fake,
      cluster: 'dev',
      output,
      kubeTarget: async () => target,
    });
    expect(result.dir).toBe(output);
    expect(await tree(output)).toEqual([
      'containers.txt',
      'containers/dev-control-plane/docker.log',
      'containers/dev-control-plane/inspect.json',
      'containers/dev-control-plane/run/vind/status',
      'containers/dev-control-plane/var/log/vind/kube-apiserver.log',
      'containers/dev-front-door/docker.log',
      'containers/dev-front-door/inspect.json',
      'containers/dev-worker/docker.log',
      'containers/dev-worker/inspect.json',
      'containers/dev-worker/run/vind/status',
      'containers/dev-worker/var/log/pods/kube-system_coredns-1_x/coredns/0.log',
      'containers/dev-worker/var/log/vind/kubelet.log',
      'kubernetes/events.txt',
      'kubernetes/events.yaml',
      'kubernetes/nodes.yaml',
      'kubernetes/pods/default/web.yaml',
      'kubernetes/pods/default/web/app.log',
      'kubernetes/pods/kube-system/coredns-1.yaml',
      'kubernetes/pods/kube-system/coredns-1/coredns.log',
      'kubernetes/pods/kube-system/coredns-1/coredns.previous.log',
      'kubernetes/version.json',
      'notes.txt',
      'versions.txt',
    ]);
    const read = (path: string) => readFile(join(output, path), 'utf8');
    expect(await read('containers/dev-worker/var/log/vind/kubelet.log')).toBe('kubelet log\n');
    expect(await read('containers/dev-worker/docker.log')).toBe('dev-worker: agent output\n');
    expect(JSON.parse(await read('containers/dev-worker/inspect.json'))).toMatchObject({
      Name: '/dev-worker',
    });
    expect(await read('kubernetes/pods/kube-system/coredns-1/coredns.previous.log')).toBe(
      'coredns-1/coredns (previous): line 1\nline 2\n',
    );
    expect(await read('kubernetes/pods/kube-system/coredns-1.yaml')).toContain('name: coredns-1');
    expect(await read('kubernetes/events.txt')).toMatch(
      /2026-11-22T20:00:00Z\s+kube-system\s+Warning\s+BackOff\s+Pod\/coredns-1\s+Back-off restarting/,
    );
    expect(await read('versions.txt')).toContain('kubernetes (API server): v1.36.3');
    // A container that never started has no log: said once, the rest is written.
    expect(await read('notes.txt')).toBe(
      'kubernetes: logs of default/web init: GET /api/v1/namespaces/default/pods/web/log?container=init: ' +
        '400 container "init" is waiting to start\n',
    );
    // Nothing from a tar entry that points outside the container's folder.
    await expect(readFile(join(scratch, 'escape.txt'), 'utf8')).rejects.toThrow();
  });

  it('reads no files from containers that do not run and does not wake a sleeping cluster', async () => {
    await fake.stopContainer('dev-worker');
    await fake.pauseContainer('dev-control-plane');
    await fake.createVolume('dev-sleep', {
      [LABELS.cluster]: 'dev',
      [LABELS.sleepMode]: 'pause',
      [LABELS.sleepSince]: '2026-11-22T20:00:00Z',
    });
    const output = join(scratch, 'asleep');
    let asked = false;
    await exportLogs({
      runtime: fake,
      cluster: 'dev',
      output,
      kubeTarget: async () => {
        asked = true;
        return target;
      },
    });
    expect(asked).toBe(false);
    expect(apiRequests).toEqual([]);
    expect(fake.execs.filter((e) => !e.startsWith('dev-front-door'))).toEqual([]);
    const files = await tree(output);
    expect(files).toContain('containers/dev-worker/docker.log');
    expect(files).toContain('containers/dev-control-plane/inspect.json');
    expect(files.filter((f) => f.startsWith('kubernetes/'))).toEqual([]);
    expect(await readFile(join(output, 'notes.txt'), 'utf8')).toBe(
      [
        'the cluster sleeps (pause) since 2026-11-22T20:00:00Z',
        'dev-control-plane: paused, not running: its files (/var/log, /run/vind) were not read',
        'dev-worker: exited, not running: its files (/var/log, /run/vind) were not read',
        'kubernetes: the control plane is asleep (pause): the API server was not asked (that would wake the cluster)',
        '',
      ].join('\n'),
    );
  });

  it('writes the nodes when the API server does not answer (a create kept with --retain)', async () => {
    const output = join(scratch, 'retained');
    await exportLogs({
      runtime: fake,
      cluster: 'dev',
      output,
      kubeTarget: async () => ({ server: 'https://127.0.0.1:1', ca: target.ca }),
    });
    const files = await tree(output);
    expect(files).toContain('containers/dev-control-plane/var/log/vind/kube-apiserver.log');
    expect(files.filter((f) => f.startsWith('kubernetes/'))).toEqual([]);
    expect(await readFile(join(output, 'notes.txt'), 'utf8')).toMatch(
      /^kubernetes: the API server did not answer: .*ECONNREFUSED/,
    );
  });

  it('notes a node whose agent has written no status yet', async () => {
    const archive = await tarOutput({ 'var/log/vind/containerd.log': 'containerd log\n' });
    fake.execAnswer = (container, command) =>
      container === 'dev-worker' && command[0] === 'sh'
        ? { exitCode: 0, stdout: archive, stderr: '' }
        : undefined;
    const output = join(scratch, 'early');
    await exportLogs({ runtime: fake, cluster: 'dev', output, kubeTarget: async () => target });
    expect(await readFile(join(output, 'notes.txt'), 'utf8')).toContain(
      'dev-worker: no /run/vind/status: its agent has not written one yet',
    );
  });

  it('reads the agent folder file by file when tar gives nothing', async () => {
    fake.execAnswer = (_container, command) =>
      command[0] === 'ls' ? { exitCode: 0, stdout: 'kubelet.log\ncontainerd.log\n', stderr: '' } : undefined;
    const worker = fake.containers.get('dev-worker')!;
    worker.files.set('/var/log/vind/kubelet.log', 'kubelet log\n');
    worker.files.set('/var/log/vind/containerd.log', 'containerd log\n');
    const output = join(scratch, 'no-tar');
    await exportLogs({ runtime: fake, cluster: 'dev', output, kubeTarget: async () => target });
    expect(await readFile(join(output, 'containers/dev-worker/var/log/vind/containerd.log'), 'utf8')).toBe(
      'containerd log\n',
    );
    expect(await readFile(join(output, 'containers/dev-worker/run/vind/status'), 'utf8')).toContain(
      'starting',
    );
  });

  it('refuses a cluster that does not exist, and a folder that is not empty, in one line', async () => {
    await expect(exportLogs({ runtime: fake, cluster: 'nope', output: join(scratch, 'x') })).rejects.toThrow(
      'cluster "nope" does not exist: see `vind list`',
    );
    await writeFile(join(scratch, 'file'), '');
    await expect(exportLogs({ runtime: fake, cluster: 'dev', output: scratch })).rejects.toThrow(
      `${scratch} is not empty: choose another --output folder`,
    );
  });

  it('names the default folder after the cluster and the time', () => {
    expect(defaultExportDir('dev', new Date('2026-11-22T20:15:03.123Z'))).toBe(
      'vind-logs-dev-20261122T201503Z',
    );
  });
});

describe('podContainers', () => {
  it('lists init, app and ephemeral containers, and the last run of one that restarted', () => {
    expect(
      podContainers({
        metadata: { name: 'p' },
        spec: {
          initContainers: [{ name: 'i' }],
          containers: [{ name: 'a' }],
          ephemeralContainers: [{ name: 'd' }],
        },
        status: { containerStatuses: [{ name: 'a', restartCount: 1 }] },
      }),
    ).toEqual([
      { name: 'i', previous: false },
      { name: 'a', previous: false },
      { name: 'a', previous: true },
      { name: 'd', previous: false },
    ]);
  });
});
