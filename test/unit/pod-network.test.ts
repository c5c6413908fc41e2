import { createServer, type Server } from 'node:https';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type KubeNode, watchCollection } from '../../shared/kubernetes.js';
import { createCertificateAuthority, issueServingCertificate } from '../../node-agent/pki.js';
import { wantedPodRoutes } from '../../node-agent/pod-routes.js';
import { SAFETY_CHAIN, safetyNetPlan } from '../../node-agent/safety-net.js';

function node(name: string, address?: string, podCIDRs?: string[]): KubeNode {
  return {
    metadata: { name },
    spec: { podCIDR: podCIDRs?.[0], podCIDRs },
    status: { addresses: address ? [{ type: 'InternalIP', address }] : [] },
  };
}

describe('wantedPodRoutes', () => {
  it("routes every other node's podCIDR via its address, never this node's own", () => {
    const nodes = [
      node('w1', '172.30.0.3', ['10.244.1.0/24']),
      node('w2', '172.30.0.4', ['10.244.2.0/24']),
      node('w3', '172.30.0.5', ['10.244.3.0/24']),
    ];
    expect([...wantedPodRoutes(nodes, 'w2')]).toEqual([
      ['10.244.1.0/24', '172.30.0.3'],
      ['10.244.3.0/24', '172.30.0.5'],
    ]);
  });

  it('routes to every node from the control plane, which is not a node', () => {
    const nodes = [node('w1', '172.30.0.3', ['10.244.1.0/24']), node('w2', '172.30.0.4', ['10.244.2.0/24'])];
    expect(wantedPodRoutes(nodes).size).toBe(2);
  });

  it('skips nodes without an address or a podCIDR yet, and IPv6 podCIDRs', () => {
    const nodes = [
      node('no-address', undefined, ['10.244.1.0/24']),
      node('no-cidr', '172.30.0.4'),
      node('dual', '172.30.0.5', ['10.244.3.0/24', 'fd00:10:244:3::/64']),
    ];
    expect([...wantedPodRoutes(nodes)]).toEqual([['10.244.3.0/24', '172.30.0.5']]);
  });

  it('falls back to spec.podCIDR when podCIDRs is absent', () => {
    const old: KubeNode = {
      metadata: { name: 'w1' },
      spec: { podCIDR: '10.244.7.0/24' },
      status: { addresses: [{ type: 'InternalIP', address: '172.30.0.9' }] },
    };
    expect([...wantedPodRoutes([old])]).toEqual([['10.244.7.0/24', '172.30.0.9']]);
  });
});

describe('safetyNetPlan', () => {
  const plan = safetyNetPlan({ podSubnet: '10.244.0.0/16', serviceSubnet: '10.96.0.0/16' });

  it('makes the whole pod network unreachable unless a more specific route exists', () => {
    expect(plan.routes).toEqual([['route', 'replace', 'unreachable', '10.244.0.0/16']]);
  });

  it('refuses the Service network by a filter rule, which sees packets after kube-proxy translated them', () => {
    // A route would fail ClusterIP traffic of the kubelet and hostNetwork pods before DNAT could run.
    expect(plan.routes.flat()).not.toContain('10.96.0.0/16');
    expect(plan.chainRules).toEqual([
      ['-d', '10.96.0.0/16', '-j', 'REJECT', '--reject-with', 'icmp-net-unreachable'],
    ]);
    expect(plan.jumps).toEqual([
      { chain: 'OUTPUT', rule: ['-j', SAFETY_CHAIN] },
      { chain: 'FORWARD', rule: ['-j', SAFETY_CHAIN] },
    ]);
  });
});

describe('watchCollection', () => {
  let server: Server;
  let port: number;
  let ca: string;
  let lists = 0;
  const watches: string[] = [];

  beforeAll(async () => {
    const authority = await createCertificateAuthority('test-ca');
    ca = authority.cert;
    const serving = await issueServingCertificate(authority.cert, authority.key, ['localhost']);
    server = createServer({ cert: serving.cert, key: serving.key }, (req, res) => {
      const url = new URL(req.url ?? '/', 'https://localhost');
      res.setHeader('Content-Type', 'application/json');
      if (url.searchParams.get('watch') !== '1') {
        lists++;
        const items = lists === 1 ? [node('a', '172.30.0.3', ['10.244.1.0/24'])] : [node('c')];
        res.end(JSON.stringify({ items, metadata: { resourceVersion: String(lists * 100) } }));
        return;
      }
      watches.push(url.searchParams.get('resourceVersion') ?? '');
      const event = (type: string, object: unknown) => res.write(`${JSON.stringify({ type, object })}\n`);
      if (watches.length === 1) {
        // From the first list: one node added in two chunks, one deleted, then the server ends the watch.
        const added = JSON.stringify({
          type: 'ADDED',
          object: { ...node('b'), metadata: { name: 'b', resourceVersion: '101' } },
        });
        res.write(added.slice(0, 10));
        res.write(`${added.slice(10)}\n`);
        event('DELETED', { ...node('a'), metadata: { name: 'a', resourceVersion: '102' } });
        res.end();
      } else if (watches.length === 2) {
        // Resumed from the last version seen; then told it is too old, which forces a new list.
        event('ERROR', { kind: 'Status', code: 410, reason: 'Expired' });
        res.end();
      } else {
        event('BOOKMARK', { metadata: { name: '', resourceVersion: '250' } });
      }
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as { port: number }).port;
  });

  afterAll(() => {
    server.closeAllConnections();
    server.close();
  });

  it('lists, follows events, resumes from the last version and lists again when it expired', async () => {
    const seen: string[][] = [];
    const controller = new AbortController();
    const errors: Error[] = [];
    await new Promise<void>((resolve) => {
      watchCollection<KubeNode>(
        { server: `https://localhost:${port}`, ca },
        '/api/v1/nodes',
        (items) => {
          seen.push(items.map((n) => n.metadata.name).sort());
          if (lists === 2 && seen.at(-1)?.join() === 'c') resolve();
        },
        (error) => errors.push(error),
        controller.signal,
      );
    });
    controller.abort();
    expect(seen).toEqual([['a'], ['a', 'b'], ['b'], ['c']]);
    expect(watches.slice(0, 2)).toEqual(['100', '102']);
    expect(lists).toBe(2);
    expect(errors).toEqual([]);
  });
});
