// A remote machine joins a cluster over WireGuard. The remote machine is the project's stand-in
// (scripts/remote-host.sh): a second Docker engine in its own network namespace, behind NAT, that
// reaches only this host's veth address. First a positive control: without the tunnel it cannot reach
// the control plane. Then `vind node add --remote` and `vind join` on the stand-in's engine, and the
// node is used as any other: pods across the tunnel both ways with a 20 MB body, Service DNS both
// ways, `kubectl logs` and `exec`; a used and an expired secret are refused; the node comes back after
// a restart of its container and of the hub; `node remove` takes it out.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  CLI,
  docker,
  ensureTestImage,
  kubectlBinary,
  kubectlFor,
  NODE_IMAGE,
  removeByLabel,
  requireNodeImage,
  runVind,
  TEST_IMAGE,
  uniqueName,
  waitFor,
} from './helpers.js';
import {
  copyImageToRemote,
  REMOTE_HOST,
  remoteDocker,
  setRemoteMode,
  startRemoteHost,
  stopRemoteHost,
} from '../support/remote-host.js';
import { execa } from 'execa';

const cluster = uniqueName('e2e-remote');
const remoteNode = 'far';
let scratch: string;
let kubeconfig: string;
let kubectl: ReturnType<typeof kubectlFor>;
let controlPlaneAddress: string;
let usedSecret = '';

const onRemote = { DOCKER_HOST: `unix://${REMOTE_HOST.socket}` };

function vindOnRemote(args: string[]) {
  return execa('node', [CLI, ...args], { env: { ...process.env, ...onRemote }, reject: false });
}

async function kubectlOk(args: string[], input?: string): Promise<string> {
  const result = await kubectl(args, input);
  expect(result.exitCode, `kubectl ${args.join(' ')}: ${result.stderr}`).toBe(0);
  return result.stdout;
}

async function addSecret(name: string, extra: string[] = []): Promise<string> {
  const added = await runVind(
    ['node', 'add', name, '--remote', '--cluster', cluster, '--endpoint', REMOTE_HOST.hostAddress, ...extra],
    { KUBECONFIG: kubeconfig },
  );
  expect(added.exitCode, added.stderr).toBe(0);
  const line = added.stdout.trim().split('\n').at(-1)!;
  expect(line).toMatch(/^vind join vindjoin1\./);
  return line.split(' ')[2]!;
}

async function nodeReady(name: string): Promise<boolean> {
  const result = await kubectl([
    'get',
    'node',
    name,
    '-o',
    'jsonpath={.status.conditions[?(@.type=="Ready")].status}',
  ]);
  return result.exitCode === 0 && result.stdout === 'True';
}

/** A pod serving a 20 MB file over HTTP (busybox httpd) on a chosen node, with a Service. */
function server(name: string, node: string): string {
  return JSON.stringify({
    apiVersion: 'v1',
    kind: 'List',
    items: [
      {
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { name, labels: { app: name } },
        spec: {
          nodeName: node,
          terminationGracePeriodSeconds: 1,
          containers: [
            {
              name: 'main',
              image: TEST_IMAGE,
              command: [
                'sh',
                '-c',
                'mkdir -p /www && dd if=/dev/urandom of=/www/big bs=1M count=20 2>/dev/null && md5sum /www/big | cut -d" " -f1 > /www/sum && echo serving && exec httpd -f -p 8080 -h /www',
              ],
            },
          ],
        },
      },
      {
        apiVersion: 'v1',
        kind: 'Service',
        metadata: { name },
        spec: { selector: { app: name }, ports: [{ port: 80, targetPort: 8080 }] },
      },
    ],
  });
}

async function podIp(name: string): Promise<string> {
  return kubectlOk(['get', 'pod', name, '-o', 'jsonpath={.status.podIP}']);
}

/**
 * From pod `from`, fetches the big file from `host`:`port` over HTTP (busybox nc: its static wget
 * crashes) and compares its checksum with the one the server wrote.
 */
async function fetchBig(from: string, host: string, port: number, server: string): Promise<void> {
  const expected = (await kubectlOk(['exec', server, '--', 'cat', '/www/sum'])).trim();
  const got = await kubectlOk([
    'exec',
    from,
    '--',
    'sh',
    '-c',
    `printf 'GET /big HTTP/1.0\\r\\n\\r\\n' | nc -w 30 ${host} ${port} | tail -c 20971520 | md5sum | cut -d" " -f1`,
  ]);
  expect(got.trim()).toBe(expected);
}

describe('a remote node over WireGuard', () => {
  beforeAll(async () => {
    await requireNodeImage();
    await ensureTestImage();
    await startRemoteHost('nat');
    await copyImageToRemote(NODE_IMAGE);
    scratch = await mkdtemp(join(tmpdir(), 'vind-e2e-remote-'));
    kubeconfig = join(scratch, 'kubeconfig');
    kubectl = kubectlFor(await kubectlBinary(), kubeconfig);
    const created = await runVind(['create', cluster, '--workers', '1'], { KUBECONFIG: kubeconfig });
    expect(created.exitCode, created.stderr).toBe(0);
    const info = await docker().getContainer(`${cluster}-control-plane`).inspect();
    controlPlaneAddress = Object.values(info.NetworkSettings.Networks)[0]!.IPAddress;
  }, 600_000);

  afterAll(async () => {
    await vindOnRemote(['leave']).catch(() => undefined);
    await runVind(['delete', cluster]);
    await removeByLabel(cluster);
    await stopRemoteHost().catch(() => undefined);
    if (scratch) await rm(scratch, { recursive: true, force: true });
  }, 300_000);

  it('cannot reach the control plane from the remote machine without the tunnel', async () => {
    // Positive control: this host reaches it.
    const here = await execa('bash', ['-c', `exec 3<>/dev/tcp/${controlPlaneAddress}/6443 && echo open`], {
      reject: false,
      timeout: 5000,
    });
    expect(here.stdout).toBe('open');
    const probe = await remoteDocker.createContainer({
      Image: NODE_IMAGE,
      Entrypoint: [
        'bash',
        '-c',
        `timeout 4 bash -c 'exec 3<>/dev/tcp/${controlPlaneAddress}/6443' && echo open || echo closed`,
      ],
      Labels: { 'dev.vind.test': 'remote-node' },
    });
    try {
      await probe.start();
      await probe.wait();
      const logs = (await probe.logs({ stdout: true, stderr: true })).toString();
      expect(logs).toContain('closed');
      expect(logs).not.toContain('open\n');
    } finally {
      await probe.remove({ force: true });
    }
  });

  it('joins with `vind join` on the remote machine and becomes Ready', async () => {
    const secret = await addSecret(remoteNode, ['--labels', 'site=far']);
    const started = Date.now();
    const joined = await vindOnRemote(['join', secret]);
    expect(joined.exitCode, joined.stderr).toBe(0);
    await waitFor(
      'the remote node to be Ready',
      async () => ((await nodeReady(remoteNode)) ? true : undefined),
      180_000,
      1000,
    );
    console.log(`vind join to node Ready: ${Date.now() - started}ms`);
    expect(await kubectlOk(['get', 'node', remoteNode, '-o', 'jsonpath={.metadata.labels.site}'])).toBe(
      'far',
    );
    const listed = await runVind(['node', 'list', cluster, '--json']);
    expect(listed.exitCode, listed.stderr).toBe(0);
    const rows = JSON.parse(listed.stdout) as {
      name: string;
      kind: string;
      tunnel?: { latestHandshake?: string };
    }[];
    const row = rows.find((r) => r.name === remoteNode);
    expect(row?.kind).toBe('remote');
    expect(row?.tunnel?.latestHandshake).toBeDefined();
    usedSecret = secret;
  }, 300_000);

  it('carries pod traffic both ways with a 20 MB body, and Service DNS both ways', async () => {
    const local = `${cluster}-worker`;
    await kubectlOk(['apply', '-f', '-'], server('near', local));
    await kubectlOk(['apply', '-f', '-'], server('away', remoteNode));
    await kubectlOk(['wait', '--for=condition=Ready', 'pod/near', 'pod/away', '--timeout=180s']);
    await fetchBig('near', await podIp('away'), 8080, 'away');
    await fetchBig('away', await podIp('near'), 8080, 'near');
    await fetchBig('away', 'near.default.svc.cluster.local', 80, 'near');
    await fetchBig('near', 'away.default.svc.cluster.local', 80, 'away');
  }, 300_000);

  it('sends NodePort traffic that lands on a local node to the pod on the remote node', async () => {
    await kubectlOk([
      'expose',
      'pod',
      'away',
      '--name',
      'away-np',
      '--type',
      'NodePort',
      '--port',
      '80',
      '--target-port',
      '8080',
    ]);
    const nodePort = await kubectlOk([
      'get',
      'service',
      'away-np',
      '-o',
      'jsonpath={.spec.ports[0].nodePort}',
    ]);
    const worker = await docker().getContainer(`${cluster}-worker`).inspect();
    const workerAddress = Object.values(worker.NetworkSettings.Networks)[0]!.IPAddress;
    const expected = (await kubectlOk(['exec', 'away', '--', 'cat', '/www/sum'])).trim();
    const answer = await waitFor(
      'the NodePort to answer',
      async () =>
        fetch(`http://${workerAddress}:${nodePort}/sum`, { signal: AbortSignal.timeout(5000) }).then(
          async (r) => (r.ok ? (await r.text()).trim() : undefined),
          () => undefined,
        ),
      30_000,
      500,
    );
    expect(answer).toBe(expected);
  });

  it('serves kubectl logs, exec and port-forward for a pod on the remote node', async () => {
    expect(await kubectlOk(['logs', 'away'])).toContain('serving');
    expect((await kubectlOk(['exec', 'away', '--', 'hostname'])).trim()).toBe('away');
    const binary = await kubectlBinary();
    const forward = execa(binary, ['--kubeconfig', kubeconfig, 'port-forward', 'pod/away', '0:8080'], {
      reject: false,
    });
    let printed = '';
    forward.stdout?.on('data', (chunk: Buffer) => (printed += chunk.toString()));
    try {
      const port = await waitFor(
        'kubectl port-forward to listen',
        async () => /127\.0\.0\.1:(\d+)/.exec(printed)?.[1],
        30_000,
      );
      const response = await fetch(`http://127.0.0.1:${port}/sum`);
      expect((await response.text()).trim()).toBe(
        (await kubectlOk(['exec', 'away', '--', 'cat', '/www/sum'])).trim(),
      );
    } finally {
      forward.kill();
      await forward;
    }
  });

  it('lets a key the hub did not enroll through nothing', async () => {
    const hub = `${cluster}-hub`;
    const hubKey = (
      await execa('docker', ['exec', hub, 'cat', '/var/lib/vind/hub/public.key'])
    ).stdout.trim();
    const port = (await execa('docker', ['port', hub, '51820/udp'])).stdout
      .trim()
      .split('\n')[0]!
      .split(':')
      .at(-1);
    const stranger = await remoteDocker.createContainer({
      Image: NODE_IMAGE,
      Entrypoint: [
        'bash',
        '-c',
        [
          'umask 077; wg genkey > /tmp/key',
          'WG_PROCESS_FOREGROUND=1 wireguard-go stranger >/dev/null 2>&1 &',
          'sleep 1',
          `wg set stranger private-key /tmp/key peer ${hubKey} endpoint ${REMOTE_HOST.hostAddress}:${port} allowed-ips 172.30.0.0/16,169.254.77.0/24 persistent-keepalive 1`,
          'ip address add 169.254.77.2/32 dev stranger && ip link set stranger up',
          'ip route add 172.30.0.0/16 dev stranger; ip route add 169.254.77.1/32 dev stranger',
          'sleep 6',
          `timeout 3 bash -c 'exec 3<>/dev/tcp/${controlPlaneAddress}/6443' && echo reached-api || echo no-api`,
          `timeout 3 bash -c 'exec 3<>/dev/tcp/169.254.77.1/7445' && echo reached-enroll || echo no-enroll`,
          'echo handshake=$(wg show stranger latest-handshakes | cut -f2)',
        ].join('\n'),
      ],
      HostConfig: {
        CapAdd: ['NET_ADMIN'],
        Devices: [{ PathOnHost: '/dev/net/tun', PathInContainer: '/dev/net/tun', CgroupPermissions: 'rwm' }],
      },
      Labels: { 'dev.vind.test': 'remote-node' },
    });
    try {
      await stranger.start();
      await stranger.wait();
      const logs = (await stranger.logs({ stdout: true, stderr: true })).toString();
      expect(logs).toContain('handshake=0');
      expect(logs).toContain('no-api');
      expect(logs).toContain('no-enroll');
    } finally {
      await stranger.remove({ force: true });
    }
  }, 60_000);

  it('refuses an expired secret', async () => {
    const expiring = await addSecret('late', ['--ttl', '1s']);
    await new Promise((resolve) => setTimeout(resolve, 1500));
    const late = await vindOnRemote(['join', expiring]);
    expect(late.exitCode).not.toBe(0);
    expect(late.stderr).toMatch(
      /error: this join secret expired at .*: make a new one with `vind node add late --remote`/,
    );
    expect(late.stderr.trim().split('\n')).toHaveLength(1);
  });

  it('comes back Ready by itself after its container and the hub restart', async () => {
    const [remote] = await remoteDocker.listContainers({
      filters: { label: [`dev.vind.remote-node=${remoteNode}`] },
    });
    await remoteDocker.getContainer(remote!.Id).restart({ t: 5 });
    await docker().getContainer(`${cluster}-hub`).restart({ t: 5 });
    const restarted = Date.now();
    await waitFor(
      'the remote node to post Ready again',
      async () => {
        const text = await kubectl(['get', 'node', remoteNode, '-o', 'json']);
        const node = JSON.parse(text.stdout) as {
          status: { conditions: { type: string; status: string; lastHeartbeatTime: string }[] };
        };
        const ready = node.status.conditions.find((c) => c.type === 'Ready');
        return ready?.status === 'True' && Date.parse(ready.lastHeartbeatTime) > restarted ? true : undefined;
      },
      180_000,
      1000,
    );
    // The pod started again with its node: it serves once it has written its file anew.
    await waitFor(
      'the remote pod to serve again',
      async () =>
        await fetchBig('near', await podIp('away'), 8080, 'away').then(
          () => true,
          () => undefined,
        ),
      120_000,
      2000,
    );
  }, 300_000);

  it('comes back Ready when its cluster sleeps and wakes', async () => {
    const slept = await runVind(['sleep', cluster, '--mode', 'stop']);
    expect(slept.exitCode, slept.stderr).toBe(0);
    // `wake` waits for every node to post Ready since the sleep began: the remote one too.
    const woke = await runVind(['wake', cluster]);
    expect(woke.exitCode, woke.stderr).toBe(0);
    expect(await nodeReady(remoteNode)).toBe(true);
    await kubectlOk(['wait', '--for=condition=Ready', 'pod/away', '--timeout=120s']);
  }, 300_000);

  it('refuses a secret used already', async () => {
    // The node's container goes; the secret that made it is spent all the same.
    const left = await vindOnRemote(['leave', remoteNode]);
    expect(left.exitCode, left.stderr).toBe(0);
    const again = await vindOnRemote(['join', usedSecret]);
    expect(again.exitCode).not.toBe(0);
    expect(again.stderr).toMatch(/error: .*this join secret was used already \(at .*\): make a new one/);
    expect(
      await remoteDocker.listContainers({
        all: true,
        filters: { label: [`dev.vind.remote-node=${remoteNode}`] },
      }),
    ).toEqual([]);
  }, 300_000);

  it('joins a remote that listens, dialled by the hub, when the remote cannot reach the hub', async () => {
    await setRemoteMode('public');
    try {
      const secret = await addSecret('dialled', ['--dial', `${REMOTE_HOST.remoteAddress}:51999`]);
      const joined = await vindOnRemote(['join', secret]);
      expect(joined.exitCode, joined.stderr).toBe(0);
      await waitFor(
        'the dialled node to be Ready',
        async () => ((await nodeReady('dialled')) ? true : undefined),
        180_000,
        1000,
      );
      const listed = JSON.parse((await runVind(['node', 'list', cluster, '--json'])).stdout) as {
        name: string;
        tunnel?: { endpoint?: string; latestHandshake?: string };
      }[];
      const row = listed.find((r) => r.name === 'dialled');
      expect(row?.tunnel?.endpoint).toBe(`${REMOTE_HOST.remoteAddress}:51999`);
      expect(row?.tunnel?.latestHandshake).toBeDefined();
      expect((await runVind(['node', 'remove', 'dialled', '--cluster', cluster])).exitCode).toBe(0);
      expect((await vindOnRemote(['leave', 'dialled'])).exitCode).toBe(0);
    } finally {
      await setRemoteMode('nat');
    }
  }, 300_000);

  it('removes the node: drained, deleted, its peer gone', async () => {
    const hub = `${cluster}-hub`;
    const record = await execa('docker', ['exec', hub, 'cat', `/var/lib/vind/hub/nodes/${remoteNode}.json`]);
    const { publicKey } = JSON.parse(record.stdout) as { publicKey: string };
    const peers = async () => (await execa('docker', ['exec', hub, 'wg', 'show', 'vind-wg', 'peers'])).stdout;
    expect(await peers()).toContain(publicKey);
    const removed = await runVind(['node', 'remove', remoteNode, '--cluster', cluster]);
    expect(removed.exitCode, removed.stderr).toBe(0);
    expect((await kubectl(['get', 'node', remoteNode])).exitCode).not.toBe(0);
    await waitFor(
      'the peer to go',
      async () => (!(await peers()).includes(publicKey) ? true : undefined),
      10_000,
    );
    // Its secret is of no use any more, and says why.
    const again = await vindOnRemote(['join', usedSecret]);
    expect(again.exitCode).not.toBe(0);
    expect(again.stderr).toMatch(/this join secret was revoked when its node was removed/);
    expect(
      await remoteDocker.listContainers({ all: true, filters: { label: ['dev.vind.remote-node'] } }),
    ).toEqual([]);
  }, 120_000);
});
