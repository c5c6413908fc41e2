import { describe, expect, it } from 'vitest';
import { hubContainerSpec } from '../../cli/runtime/container-specs.js';
import {
  addRemoteNode,
  hostEndpoints,
  parseLabels,
  parseTaints,
  remoteContainerName,
} from '../../cli/remote-nodes.js';
import { FakeRuntime } from '../support/fake-runtime.js';
import { wantedPeers } from '../../node-agent/hub.js';
import { decodeNodeEnv, encodeNodeEnv, LABELS } from '../../shared/contract.js';
import {
  decodeJoinSecret,
  encodeJoinSecret,
  enrollAddress,
  hubAddress,
  type JoinSecret,
  remoteNodeAddress,
} from '../../shared/remote-nodes.js';
import { generateKeyPair } from '../../vpn/keys.js';

const secret: JoinSecret = {
  cluster: 'dev',
  node: 'far',
  address: '172.30.0.102',
  hubEndpoints: ['10.251.0.1:40123'],
  hubPublicKey: generateKeyPair().publicKey,
  enrollmentId: 'a1b2c3d4e5f6a7b8c9d0e1f2',
  enrollmentIndex: 2,
  enrollmentKey: generateKeyPair().privateKey,
  expires: '2026-11-22T21:00:00.000Z',
  image: 'vind/node:v1.36.3',
  clusterSubnet: '172.30.0.0/24',
  podSubnet: '10.244.0.0/16',
  serviceSubnet: '10.96.0.0/16',
};

describe('remote nodes', () => {
  it('carries the join secret in one line and reads it back; refuses anything else in one line', () => {
    const text = encodeJoinSecret(secret);
    expect(text).toMatch(/^vindjoin1\.[A-Za-z0-9_-]+$/);
    expect(decodeJoinSecret(text)).toEqual(secret);
    expect(() => decodeJoinSecret('hello')).toThrow('this is not a join secret');
    expect(() => decodeJoinSecret(`${text.slice(0, 40)}`)).toThrow('the join secret is damaged');
    const incomplete: Partial<JoinSecret> = { ...secret };
    delete incomplete.image;
    expect(() =>
      decodeJoinSecret(`vindjoin1.${Buffer.from(JSON.stringify(incomplete)).toString('base64url')}`),
    ).toThrow('the join secret is damaged');
  });

  it('places the hub at .103 and remote nodes from .102 down, around what is taken', () => {
    expect(hubAddress('172.30.0.0/24')).toBe('172.30.0.103');
    expect(remoteNodeAddress('172.30.0.0/24', [])).toBe('172.30.0.102');
    expect(remoteNodeAddress('172.30.0.0/24', ['172.30.0.102', '172.30.0.101'])).toBe('172.30.0.100');
    const all = Array.from({ length: 43 }, (_, i) => `172.30.0.${102 - i}`);
    expect(remoteNodeAddress('172.30.0.0/24', all)).toBeUndefined();
    expect(enrollAddress(2)).toBe('169.254.77.2');
    expect(() => enrollAddress(1)).toThrow();
  });

  it('lets a pending enrollment reach only its enrollment address, and an enrolled node its address and pods', () => {
    const enrollmentKey = generateKeyPair().publicKey;
    const nodeKey = generateKeyPair().publicKey;
    const now = Date.parse('2026-11-22T20:00:00Z');
    const enrollment = {
      id: 'x',
      publicKey: enrollmentKey,
      index: 7,
      node: 'far',
      address: '172.30.0.102',
      labels: {},
      taints: [],
      join: { server: 'https://172.30.0.2:6443', token: '', caCertHash: 'sha256:00' },
    };
    const peers = wantedPeers(
      [
        { ...enrollment, expires: '2026-11-22T21:00:00Z' },
        { ...enrollment, id: 'y', publicKey: generateKeyPair().publicKey, expires: '2026-11-22T19:00:00Z' },
      ],
      [{ node: 'far', address: '172.30.0.102', publicKey: nodeKey, enrolledAt: '' }],
      new Map([['far', ['10.244.5.0/24']]]),
      now,
    );
    expect(peers).toEqual([
      { publicKey: enrollmentKey, allowedIps: ['169.254.77.7/32'] },
      { publicKey: nodeKey, allowedIps: ['172.30.0.102/32', '10.244.5.0/24'] },
    ]);
  });

  it('reads labels and taints as the kubelet takes them, and refuses others in one line', () => {
    expect(parseLabels('gpu=true,site=far')).toEqual({ gpu: 'true', site: 'far' });
    expect(() => parseLabels('gpu')).toThrow('"gpu" is not a label: use key=value');
    expect(parseTaints('gpu=true:NoSchedule,spot:NoExecute')).toEqual([
      'gpu=true:NoSchedule',
      'spot:NoExecute',
    ]);
    expect(() => parseTaints('gpu=true')).toThrow('"gpu=true" is not a taint: use key=value:Effect');
  });

  it("gives the remote worker its hub's settings through the node environment", () => {
    const env = encodeNodeEnv({
      role: 'worker',
      nodeName: 'far',
      nodeIp: '172.30.0.102',
      podSubnet: '10.244.0.0/16',
      serviceSubnet: '10.96.0.0/16',
      cni: 'default',
      labels: {},
      join: {
        kind: 'remote',
        remote: {
          cluster: 'dev',
          hubEndpoints: ['10.251.0.1:40123'],
          hubPublicKey: secret.hubPublicKey,
          enrollmentId: secret.enrollmentId,
          enrollmentIndex: 2,
        },
      },
    });
    const decoded = decodeNodeEnv(
      'worker',
      Object.fromEntries(env.map((e) => e.split(/=(.*)/s) as [string, string])),
    );
    expect(decoded.role === 'worker' && decoded.join.kind).toBe('remote');
    expect(env.join('\n')).not.toContain(secret.enrollmentKey);
    expect(remoteContainerName('dev', 'far')).toBe('dev-far');
  });

  it('runs the hub with the network capabilities and the TUN device only, its UDP port on every address', () => {
    const spec = hubContainerSpec({
      name: 'dev-hub',
      cluster: 'dev',
      image: 'vind/node:x',
      network: 'vind-dev',
      address: '172.30.0.103',
      hostPort: 40123,
      env: [],
      files: [],
    });
    expect(spec.Cmd).toEqual(['hub']);
    expect(spec.HostConfig?.Privileged).toBeUndefined();
    expect(spec.HostConfig?.CapDrop).toEqual(['ALL']);
    expect(spec.HostConfig?.CapAdd).toEqual(['NET_ADMIN', 'NET_RAW']);
    expect(spec.HostConfig?.PortBindings).toEqual({
      '51820/udp': [{ HostIp: '0.0.0.0', HostPort: '40123' }],
    });
    expect(spec.HostConfig?.Sysctls).toEqual({
      'net.ipv4.ip_forward': '1',
      'net.ipv4.conf.all.proxy_arp': '1',
    });
    expect(hostEndpoints(40123).every((e) => e.endsWith(':40123'))).toBe(true);
  });

  it("refuses a remote node for a cluster whose pod network is the user's (networking.cni: none)", async () => {
    const runtime = new FakeRuntime();
    await runtime.runNode({
      name: 'bare-control-plane',
      cluster: 'bare',
      role: 'control-plane',
      image: 'vind/node:x',
      securityMode: 'privileged',
      network: 'vind-bare',
      address: '172.30.0.2',
      env: [],
      ports: [],
      labels: { [LABELS.cni]: 'none' },
    });
    await expect(
      addRemoteNode(runtime, 'bare', 'far', { labels: {}, taints: [], ttlMs: 3_600_000 }),
    ).rejects.toThrow(
      `cluster "bare" was made with networking.cni: none: remote nodes need vind's pod network, create a cluster without it`,
    );
  });
});
