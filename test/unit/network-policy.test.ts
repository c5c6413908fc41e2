import { describe, expect, it } from 'vitest';
import { forwardJumpMisplaced } from '../../node-agent/network-policy.js';
import {
  ipsetRestoreText,
  iptablesRestoreText,
  type Namespace,
  NETPOL_CHAIN,
  type NetworkPolicy,
  networkPolicyPlan,
  networkPolicyRbac,
  type Pod,
  selects,
} from '../../node-agent/network-policy-rules.js';

function pod(
  namespace: string,
  name: string,
  ip: string | undefined,
  node: string,
  labels: Record<string, string> = {},
  extra: Partial<Pod['spec']> & { phase?: string } = {},
): Pod {
  const { phase = 'Running', ...spec } = extra;
  return {
    metadata: { name, namespace, labels },
    spec: { nodeName: node, ...spec },
    status: { phase, ...(ip ? { podIP: ip } : {}) },
  };
}

function namespace(name: string, labels: Record<string, string> = {}): Namespace {
  return { metadata: { name, labels: { 'kubernetes.io/metadata.name': name, ...labels } } };
}

function policy(ns: string, name: string, spec: NetworkPolicy['spec']): NetworkPolicy {
  return { metadata: { name, namespace: ns }, spec };
}

const NAMESPACES = [namespace('shop', { team: 'shop' }), namespace('tools', { team: 'tools' })];
const PODS = [
  pod(
    'shop',
    'server',
    '10.244.1.5',
    'w1',
    { app: 'server' },
    {
      containers: [{ ports: [{ name: 'http', containerPort: 8080 }] }],
    },
  ),
  pod('shop', 'near', '10.244.1.6', 'w1', { app: 'client' }),
  pod('shop', 'far', '10.244.2.7', 'w2', { app: 'client' }),
  pod('tools', 'probe', '10.244.2.8', 'w2', { app: 'client' }),
  pod(
    'tools',
    'web',
    '10.244.2.9',
    'w2',
    { app: 'web' },
    {
      containers: [{ ports: [{ name: 'http', containerPort: 8000 }] }],
    },
  ),
  pod('shop', 'host', '172.30.0.3', 'w1', { app: 'server' }, { hostNetwork: true }),
  pod('shop', 'done', '10.244.1.9', 'w1', { app: 'server' }, { phase: 'Succeeded' }),
  pod('shop', 'pending', undefined, 'w1', { app: 'server' }),
];

/** The sets of a plan by entries, since their names are hashes. */
function setsOf(plan: ReturnType<typeof networkPolicyPlan>) {
  return new Map(plan.sets.map((set) => [set.name, set]));
}

describe('selects', () => {
  const labels = { app: 'web', tier: 'front' };
  it('selects everything with an empty selector', () => {
    expect(selects({}, labels)).toBe(true);
    expect(selects({}, undefined)).toBe(true);
  });
  it('needs every matchLabels pair and every expression', () => {
    expect(selects({ matchLabels: { app: 'web' } }, labels)).toBe(true);
    expect(selects({ matchLabels: { app: 'web', tier: 'back' } }, labels)).toBe(false);
    expect(
      selects({ matchExpressions: [{ key: 'tier', operator: 'In', values: ['front', 'mid'] }] }, labels),
    ).toBe(true);
    expect(selects({ matchExpressions: [{ key: 'tier', operator: 'In', values: ['back'] }] }, labels)).toBe(
      false,
    );
  });
  it('lets NotIn and DoesNotExist match a pod without the key, and Exists only one with it', () => {
    expect(selects({ matchExpressions: [{ key: 'env', operator: 'NotIn', values: ['prod'] }] }, labels)).toBe(
      true,
    );
    expect(selects({ matchExpressions: [{ key: 'app', operator: 'NotIn', values: ['web'] }] }, labels)).toBe(
      false,
    );
    expect(selects({ matchExpressions: [{ key: 'env', operator: 'DoesNotExist' }] }, labels)).toBe(true);
    expect(selects({ matchExpressions: [{ key: 'env', operator: 'Exists' }] }, labels)).toBe(false);
    expect(selects({ matchExpressions: [{ key: 'app', operator: 'Exists' }] }, labels)).toBe(true);
  });
  it('selects nothing with an operator it does not know', () => {
    expect(selects({ matchExpressions: [{ key: 'app', operator: 'Gt', values: ['1'] }] }, labels)).toBe(
      false,
    );
  });
});

describe('networkPolicyPlan', () => {
  it('without policies only lets replies through and isolates no pod', () => {
    const plan = networkPolicyPlan('w1', [], PODS, NAMESPACES);
    expect([...plan.chains]).toEqual([
      [NETPOL_CHAIN, [['-m', 'conntrack', '--ctstate', 'RELATED,ESTABLISHED', '-j', 'RETURN']]],
    ]);
    expect(plan.sets).toEqual([]);
  });

  it('isolates the selected pods of this node only: a default deny is a chain that rejects', () => {
    const plan = networkPolicyPlan(
      'w1',
      [policy('shop', 'deny', { podSelector: {}, policyTypes: ['Ingress'] })],
      PODS,
      NAMESPACES,
    );
    const top = plan.chains.get(NETPOL_CHAIN)!;
    // server and near run here; far is on w2; hostNetwork, finished and unaddressed pods are skipped.
    expect(top.slice(1).map((rule) => rule.slice(0, 2))).toEqual([
      ['-d', '10.244.1.6/32'],
      ['-d', '10.244.1.5/32'],
    ]);
    const serverChain = top.find((rule) => rule[1] === '10.244.1.5/32')!.at(-1)!;
    expect(plan.chains.get(serverChain)).toEqual([
      ['-m', 'comment', '--comment', 'ingress of shop/server', '-j', 'REJECT'],
    ]);
  });

  it('lets in exactly the pods that both selectors pick, on the port given', () => {
    const allow = policy('shop', 'allow', {
      podSelector: { matchLabels: { app: 'server' } },
      ingress: [
        {
          from: [
            {
              namespaceSelector: { matchLabels: { team: 'tools' } },
              podSelector: { matchLabels: { app: 'client' } },
            },
            { podSelector: { matchLabels: { app: 'client' } } },
          ],
          ports: [{ port: 8080 }],
        },
      ],
    });
    const plan = networkPolicyPlan('w1', [allow], PODS, NAMESPACES);
    const chain = plan.chains.get(NETPOL_CHAIN)![1]!.at(-1)!;
    const rules = plan.chains.get(chain)!;
    expect(rules).toHaveLength(3);
    const sets = setsOf(plan);
    // First peer: clients of the namespaces labelled team=tools; second: clients of the policy's own.
    expect(sets.get(rules[0]![3]!)).toMatchObject({ type: 'hash:ip', entries: ['10.244.2.8'] });
    expect(sets.get(rules[1]![3]!)).toMatchObject({ type: 'hash:ip', entries: ['10.244.1.6', '10.244.2.7'] });
    expect(rules[0]).toEqual([
      '-m',
      'set',
      '--match-set',
      rules[0]![3],
      'src',
      '-p',
      'tcp',
      '--dport',
      '8080',
      '-j',
      'RETURN',
    ]);
    expect(rules[2]!.at(-1)).toBe('REJECT');
  });

  it('takes a namespaceSelector alone as every pod of those namespaces', () => {
    const plan = networkPolicyPlan(
      'w1',
      [
        policy('shop', 'from-tools', {
          podSelector: { matchLabels: { app: 'server' } },
          ingress: [{ from: [{ namespaceSelector: { matchLabels: { team: 'tools' } } }] }],
        }),
      ],
      PODS,
      NAMESPACES,
    );
    expect(plan.sets.map((set) => set.entries)).toEqual([['10.244.2.8', '10.244.2.9']]);
    const chain = plan.chains.get(NETPOL_CHAIN)![1]!.at(-1)!;
    // No ports: every port and protocol.
    expect(plan.chains.get(chain)![0]).toEqual([
      '-m',
      'set',
      '--match-set',
      plan.sets[0]!.name,
      'src',
      '-j',
      'RETURN',
    ]);
  });

  it("reads a named ingress port from the receiving pod's own containers, and skips a name it lacks", () => {
    const named = (port: string) =>
      policy('shop', 'named', { podSelector: {}, ingress: [{ ports: [{ port }] }] });
    const plan = networkPolicyPlan('w1', [named('http')], PODS, NAMESPACES);
    const [, near, server] = plan.chains.get(NETPOL_CHAIN)!;
    expect(plan.chains.get(server!.at(-1)!)![0]).toEqual(['-p', 'tcp', '--dport', '8080', '-j', 'RETURN']);
    // near has no port named http: nothing is allowed to it.
    expect(plan.chains.get(near!.at(-1)!)).toHaveLength(1);
  });

  it('checks the egress of the sender before the ingress of the receiver', () => {
    const plan = networkPolicyPlan(
      'w1',
      [
        policy('shop', 'deny-in', {
          podSelector: { matchLabels: { app: 'server' } },
          policyTypes: ['Ingress'],
        }),
        policy('shop', 'deny-out', {
          podSelector: { matchLabels: { app: 'client' } },
          policyTypes: ['Egress'],
        }),
      ],
      PODS,
      NAMESPACES,
    );
    expect(plan.chains.get(NETPOL_CHAIN)!.map((rule) => rule.slice(0, 2))).toEqual([
      ['-m', 'conntrack'],
      ['-s', '10.244.1.6/32'],
      ['-d', '10.244.1.5/32'],
    ]);
  });

  it('counts a policy with egress rules and no policyTypes as both ingress and egress', () => {
    const plan = networkPolicyPlan(
      'w1',
      [policy('shop', 'both', { podSelector: { matchLabels: { app: 'client' } }, egress: [] })],
      PODS,
      NAMESPACES,
    );
    expect(
      plan.chains
        .get(NETPOL_CHAIN)!
        .slice(1)
        .map((rule) => rule[0]),
    ).toEqual(['-s', '-d']);
  });

  it('allows egress to chosen pods on a port, DNS to anywhere, and pods by a named port through ip,port pairs', () => {
    const plan = networkPolicyPlan(
      'w1',
      [
        policy('shop', 'out', {
          podSelector: { matchLabels: { app: 'client' } },
          policyTypes: ['Egress'],
          egress: [
            {
              to: [{ podSelector: { matchLabels: { app: 'server' } } }],
              ports: [{ port: 8080, protocol: 'TCP' }],
            },
            {
              ports: [
                { port: 53, protocol: 'UDP' },
                { port: 53, protocol: 'TCP' },
              ],
            },
            { ports: [{ port: 'http' }] },
            {
              to: [{ ipBlock: { cidr: '10.0.0.0/8', except: ['10.244.0.0/16'] } }],
              ports: [{ port: 30000, endPort: 30100 }],
            },
          ],
        }),
      ],
      PODS,
      NAMESPACES,
    );
    const chain = plan.chains.get(NETPOL_CHAIN)![1]!.at(-1)!;
    const rules = plan.chains.get(chain)!;
    const sets = setsOf(plan);
    expect(rules[0]!.slice(4)).toEqual(['dst', '-p', 'tcp', '--dport', '8080', '-j', 'RETURN']);
    // Finished and hostNetwork pods are not peers.
    expect(sets.get(rules[0]![3]!)!.entries).toEqual(['10.244.1.5']);
    expect(rules[1]).toEqual(['-p', 'udp', '--dport', '53', '-j', 'RETURN']);
    expect(rules[2]).toEqual(['-p', 'tcp', '--dport', '53', '-j', 'RETURN']);
    expect(rules[3]!.slice(4)).toEqual(['dst,dst', '-j', 'RETURN']);
    expect(sets.get(rules[3]![3]!)).toMatchObject({
      type: 'hash:ip,port',
      entries: ['10.244.1.5,tcp:8080', '10.244.2.9,tcp:8000'],
    });
    expect(rules[4]!.slice(4)).toEqual(['dst', '-p', 'tcp', '--dport', '30000:30100', '-j', 'RETURN']);
    expect(sets.get(rules[4]![3]!)).toMatchObject({
      type: 'hash:net',
      entries: ['10.0.0.0/8', '10.244.0.0/16 nomatch'],
    });
    expect(rules).toHaveLength(6);
  });

  it('keeps the names of sets and chains while the objects keep theirs', () => {
    const allow = policy('shop', 'allow', {
      podSelector: { matchLabels: { app: 'server' } },
      ingress: [{ from: [{ podSelector: { matchLabels: { app: 'client' } } }] }],
    });
    const before = networkPolicyPlan('w1', [allow], PODS, NAMESPACES);
    const after = networkPolicyPlan(
      'w1',
      [allow],
      [...PODS, pod('shop', 'new', '10.244.1.20', 'w1', { app: 'client' })],
      NAMESPACES,
    );
    expect(after.sets.map((set) => set.name)).toEqual(before.sets.map((set) => set.name));
    expect(after.sets[0]!.entries).toContain('10.244.1.20');
    expect([...after.chains.keys()]).toEqual([...before.chains.keys()]);
    for (const name of [...after.chains.keys(), ...after.sets.map((set) => set.name)]) {
      // iptables chain names stay under 29 characters; ipset names (and the temporary -T) under 32.
      expect(name.length).toBeLessThanOrEqual(28);
    }
  });
});

describe('restore texts', () => {
  it('fills each set under a temporary name and swaps it in', () => {
    expect(
      ipsetRestoreText([{ name: 'VNP-A', type: 'hash:net', entries: ['10.0.0.0/8', '10.1.0.0/16 nomatch'] }]),
    ).toBe(`create VNP-A hash:net family inet -exist
create VNP-A-T hash:net family inet -exist
flush VNP-A-T
add VNP-A-T 10.0.0.0/8
add VNP-A-T 10.1.0.0/16 nomatch
swap VNP-A-T VNP-A
destroy VNP-A-T
`);
  });

  it('declares every chain, quotes comments, and empties and deletes chains that are gone', () => {
    const plan = networkPolicyPlan(
      'w1',
      [policy('shop', 'deny', { podSelector: { matchLabels: { app: 'server' } } })],
      PODS,
      NAMESPACES,
    );
    const chain = [...plan.chains.keys()][1]!;
    expect(iptablesRestoreText(plan, ['VIND-NPI-OLD'])).toBe(`*filter
:VIND-NETPOL - [0:0]
:${chain} - [0:0]
:VIND-NPI-OLD - [0:0]
-A VIND-NETPOL -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN
-A VIND-NETPOL -d 10.244.1.5/32 -j ${chain}
-A ${chain} -m comment --comment "ingress of shop/server" -j REJECT
-X VIND-NPI-OLD
COMMIT
`);
  });
});

describe('forwardJumpMisplaced', () => {
  const kube = '-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD';
  it('wants the jump when it is missing or below one of kube-proxy', () => {
    expect(forwardJumpMisplaced(['-P FORWARD ACCEPT', kube])).toBe(true);
    expect(forwardJumpMisplaced(['-P FORWARD ACCEPT', kube, '-A FORWARD -j VIND-NETPOL'])).toBe(true);
  });
  it('leaves it above kube-proxy, before or after the safety net', () => {
    expect(forwardJumpMisplaced(['-A FORWARD -j VIND-NETPOL', kube, '-A FORWARD -j VIND-UNROUTED'])).toBe(
      false,
    );
    expect(forwardJumpMisplaced(['-A FORWARD -j VIND-UNROUTED', '-A FORWARD -j VIND-NETPOL'])).toBe(false);
  });
});

describe('networkPolicyRbac', () => {
  it('lets nodes list and watch pods, namespaces and NetworkPolicies, and nothing else', () => {
    const [role, binding] = networkPolicyRbac();
    expect(role).toEqual({
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'ClusterRole',
      metadata: { name: 'vind:network-policy' },
      rules: [
        { apiGroups: [''], resources: ['pods', 'namespaces'], verbs: ['list', 'watch'] },
        { apiGroups: ['networking.k8s.io'], resources: ['networkpolicies'], verbs: ['list', 'watch'] },
      ],
    });
    expect(binding).toMatchObject({
      kind: 'ClusterRoleBinding',
      roleRef: { kind: 'ClusterRole', name: 'vind:network-policy' },
      subjects: [{ apiGroup: 'rbac.authorization.k8s.io', kind: 'Group', name: 'system:nodes' }],
    });
  });
});
