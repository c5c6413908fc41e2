import { describe, expect, it } from 'vitest';
import { LOAD_BALANCER } from '../../shared/contract.js';
import {
  allocate,
  type BalancedService,
  chooseAnnouncers,
  inRange,
} from '../../node-agent/load-balancer/allocate.js';
import { addressesOf, announcedAddresses } from '../../node-agent/load-balancer/announcer.js';
import {
  balancedService,
  hostPortsText,
  isServed,
  type KubeService,
  wantedForwards,
} from '../../node-agent/load-balancer/controller.js';

const RANGE = { first: '172.30.0.200', last: '172.30.0.202' };

function svc(key: string, created: string, extra: Partial<BalancedService> = {}): BalancedService {
  return { key, created, ports: [{ port: 80, protocol: 'TCP' }], local: false, ...extra };
}

describe('allocate', () => {
  it('hands out the lowest free addresses in order of age', () => {
    const result = allocate(
      [svc('default/b', '2026-01-02T00:00:00Z'), svc('default/a', '2026-01-01T00:00:00Z')],
      RANGE,
    );
    expect(result.get('default/a')).toEqual({ address: '172.30.0.200' });
    expect(result.get('default/b')).toEqual({ address: '172.30.0.201' });
  });

  it('keeps the address a Service holds, even when an older Service asks for it', () => {
    const result = allocate(
      [
        svc('default/old', '2026-01-01T00:00:00Z', { requested: '172.30.0.201' }),
        svc('default/holder', '2026-01-02T00:00:00Z', { current: '172.30.0.201' }),
      ],
      RANGE,
    );
    expect(result.get('default/holder')).toEqual({ address: '172.30.0.201' });
    expect(result.get('default/old')).toMatchObject({ reason: 'InUse' });
  });

  it('refuses a requested address outside the range, naming the range', () => {
    const result = allocate([svc('default/x', '1', { requested: '172.30.0.50' })], RANGE);
    expect(result.get('default/x')).toEqual({
      reason: 'NotInRange',
      pending:
        "the requested address 172.30.0.50 is not in this cluster's LoadBalancer range 172.30.0.200-172.30.0.202: ask for an address in the range, or for none",
    });
  });

  it('shares an address when ports differ, never with a port in common or a Local Service', () => {
    const result = allocate(
      [
        svc('default/a', '1', { requested: '172.30.0.202' }),
        svc('default/b', '2', { requested: '172.30.0.202', ports: [{ port: 80, protocol: 'UDP' }] }),
        svc('default/c', '3', { requested: '172.30.0.202' }),
        svc('default/d', '4', {
          requested: '172.30.0.202',
          ports: [{ port: 90, protocol: 'TCP' }],
          local: true,
        }),
      ],
      RANGE,
    );
    expect(result.get('default/a')).toEqual({ address: '172.30.0.202' });
    expect(result.get('default/b')).toEqual({ address: '172.30.0.202' });
    expect(result.get('default/c')).toMatchObject({
      reason: 'InUse',
      pending: expect.stringContaining('used by default/a with port 80/TCP') as string,
    });
    expect(result.get('default/d')).toMatchObject({
      reason: 'InUse',
      pending: expect.stringContaining('externalTrafficPolicy Local') as string,
    });
  });

  it('does not auto-assign an address that is taken or shared', () => {
    const result = allocate(
      [
        svc('default/a', '1', { requested: '172.30.0.200' }),
        svc('default/b', '2'),
        svc('default/c', '3', { current: '172.30.0.201' }),
      ],
      RANGE,
    );
    expect(result.get('default/b')).toEqual({ address: '172.30.0.202' });
  });

  it('keeps the rest waiting when the range is full', () => {
    const services = ['a', 'b', 'c', 'd'].map((n, i) => svc(`default/${n}`, String(i)));
    const result = allocate(services, RANGE);
    expect(result.get('default/d')).toMatchObject({ reason: 'RangeFull' });
    expect((result.get('default/d') as { pending: string }).pending).toContain(
      "every address of this cluster's LoadBalancer range 172.30.0.200-172.30.0.202 is in use",
    );
  });

  it('moves a Service whose held address left the range', () => {
    const result = allocate([svc('default/a', '1', { current: '172.30.0.150' })], RANGE);
    expect(result.get('default/a')).toEqual({ address: '172.30.0.200' });
  });

  it('checks the range', () => {
    expect(inRange(RANGE, '172.30.0.200')).toBe(true);
    expect(inRange(RANGE, '172.30.0.203')).toBe(false);
    expect(inRange(RANGE, 'nonsense')).toBe(false);
  });
});

describe('chooseAnnouncers', () => {
  const nodes = ['w1', 'w2', 'w3'];

  it('spreads addresses over the healthy nodes', () => {
    const demands = new Map([
      ['10.0.0.1', {}],
      ['10.0.0.2', {}],
      ['10.0.0.3', {}],
    ]);
    expect([...chooseAnnouncers(demands, nodes, new Map()).values()].sort()).toEqual(['w1', 'w2', 'w3']);
  });

  it('leaves an address where it is while that node is healthy, and moves it when not', () => {
    const demands = new Map([['10.0.0.1', {}]]);
    expect(chooseAnnouncers(demands, nodes, new Map([['10.0.0.1', 'w3']])).get('10.0.0.1')).toBe('w3');
    expect(chooseAnnouncers(demands, ['w1', 'w2'], new Map([['10.0.0.1', 'w3']])).get('10.0.0.1')).toBe('w1');
  });

  it('announces a Local Service only from a node with a ready endpoint, or nowhere', () => {
    const local = new Map([['10.0.0.1', { localNodes: new Set(['w2']) }]]);
    expect(chooseAnnouncers(local, nodes, new Map([['10.0.0.1', 'w1']])).get('10.0.0.1')).toBe('w2');
    const none = new Map([['10.0.0.1', { localNodes: new Set<string>() }]]);
    expect(chooseAnnouncers(none, nodes, new Map()).has('10.0.0.1')).toBe(false);
  });

  it('places a new address on a node with an endpoint, and leaves a placed one there', () => {
    const demand = new Map([['10.0.0.1', { endpointNodes: new Set(['w3']) }]]);
    expect(chooseAnnouncers(demand, nodes, new Map()).get('10.0.0.1')).toBe('w3');
    expect(chooseAnnouncers(demand, nodes, new Map([['10.0.0.1', 'w1']])).get('10.0.0.1')).toBe('w1');
    const gone = new Map([['10.0.0.1', { endpointNodes: new Set(['w9']) }]]);
    expect(chooseAnnouncers(gone, nodes, new Map()).get('10.0.0.1')).toBe('w1');
  });

  it('announces nothing without a healthy node', () => {
    expect(chooseAnnouncers(new Map([['10.0.0.1', {}]]), [], new Map()).size).toBe(0);
  });
});

function kubeService(name: string, spec: KubeService['spec'], extra: Partial<KubeService['metadata']> = {}) {
  return {
    metadata: { name, namespace: 'default', uid: name, creationTimestamp: '2026-01-01T00:00:00Z', ...extra },
    spec,
  } satisfies KubeService;
}

describe('the controller reads Services', () => {
  it('serves LoadBalancers with no class or its own, not others or ones being deleted', () => {
    expect(isServed(kubeService('a', { type: 'LoadBalancer' }))).toBe(true);
    expect(
      isServed(kubeService('a', { type: 'LoadBalancer', loadBalancerClass: LOAD_BALANCER.className })),
    ).toBe(true);
    expect(isServed(kubeService('a', { type: 'LoadBalancer', loadBalancerClass: 'example.com/x' }))).toBe(
      false,
    );
    expect(isServed(kubeService('a', { type: 'ClusterIP' }))).toBe(false);
    expect(isServed(kubeService('a', { type: 'LoadBalancer' }, { deletionTimestamp: 'now' }))).toBe(false);
  });

  it('takes the requested address from the annotation first, then spec.loadBalancerIP', () => {
    const both = kubeService(
      'a',
      {
        type: 'LoadBalancer',
        loadBalancerIP: '10.0.0.2',
        externalTrafficPolicy: 'Local',
        ports: [{ port: 53, protocol: 'UDP' }],
      },
      { annotations: { [LOAD_BALANCER.addressAnnotation]: '10.0.0.1' } },
    );
    expect(balancedService(both)).toMatchObject({
      key: 'default/a',
      requested: '10.0.0.1',
      local: true,
      ports: [{ port: 53, protocol: 'UDP' }],
    });
    expect(
      balancedService(kubeService('b', { type: 'LoadBalancer', loadBalancerIP: '10.0.0.2' })).requested,
    ).toBe('10.0.0.2');
  });

  it('publishes the TCP and UDP ports of every Service per address', () => {
    const a = kubeService('a', {
      ports: [{ port: 80 }, { port: 53, protocol: 'UDP' }, { port: 9, protocol: 'SCTP' }],
    });
    const b = kubeService('b', { ports: [{ port: 443, protocol: 'TCP' }] });
    const forwards = wantedForwards(
      [a, b],
      new Map([
        ['default/a', { address: '10.0.0.1' }],
        ['default/b', { address: '10.0.0.1' }],
      ]),
    );
    expect(forwards).toEqual([
      {
        address: '10.0.0.1',
        ports: [
          { port: 53, protocol: 'UDP' },
          { port: 80, protocol: 'TCP' },
          { port: 443, protocol: 'TCP' },
        ],
      },
    ]);
    expect(
      hostPortsText(a, {
        address: '10.0.0.1',
        ports: [
          { port: 80, protocol: 'TCP', hostPort: 40000 },
          { port: 53, protocol: 'UDP', hostPort: 40001 },
        ],
      }),
    ).toBe('80/TCP=127.0.0.1:40000,53/UDP=127.0.0.1:40001');
  });
});

describe('the announcer', () => {
  it('takes the addresses given to its node', () => {
    expect([...addressesOf({ '10.0.0.1': 'w1', '10.0.0.2': 'w2', '10.0.0.3': 'w1' }, 'w1')]).toEqual([
      '10.0.0.1',
      '10.0.0.3',
    ]);
    expect(addressesOf(undefined, 'w1').size).toBe(0);
  });

  it('finds the /32 addresses it put on the interface, not the node address', () => {
    const output = [
      '2: eth0    inet 172.30.0.3/24 brd 172.30.0.255 scope global eth0\\       valid_lft forever',
      '2: eth0    inet 172.30.0.128/32 scope global eth0\\       valid_lft forever',
    ].join('\n');
    expect([...announcedAddresses(output)]).toEqual(['172.30.0.128']);
  });
});
