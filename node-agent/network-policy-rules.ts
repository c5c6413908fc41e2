// NetworkPolicy as iptables rules and ipsets, for the pods of one node. Pure functions: the objects
// in, the sets and the text for `ipset restore` and `iptables-restore --noflush` out.
//
// The shape, in the filter table (FORWARD sees pod traffic both routed between nodes and bridged on
// cni0, since bridge-nf-call-iptables is on):
//   FORWARD -> VIND-NETPOL: replies of allowed connections return at once; then a packet from a
//     local pod that policies isolate for egress jumps to that pod's egress chain, and one to a local
//     pod isolated for ingress to its ingress chain.
//   VIND-NPE-<pod> / VIND-NPI-<pod>: one RETURN per allowed (peer, port) of every policy that selects
//     the pod, then REJECT. RETURN, not ACCEPT, so a packet between two local pods is checked for the
//     sender's egress and then for the receiver's ingress.
// Peers are ipsets, one per peer of a rule (`VNP-<hash>`): pod addresses (hash:ip), an ipBlock with
// its exceptions as `nomatch` entries (hash:net), or, for a named port towards other pods, pod
// address and port pairs (hash:ip,port). Traffic between a node and its own pods (the kubelet's
// probes) goes through INPUT and OUTPUT and is never filtered, as Kubernetes expects.

import { createHash } from 'node:crypto';

export const NETPOL_CHAIN = 'VIND-NETPOL';
export const POD_CHAIN_PREFIX = 'VIND-NP';
export const SET_PREFIX = 'VNP-';

export interface LabelSelector {
  matchLabels?: Record<string, string>;
  matchExpressions?: { key: string; operator: string; values?: string[] }[];
}

interface PolicyPort {
  protocol?: string;
  port?: number | string;
  endPort?: number;
}

interface PolicyPeer {
  podSelector?: LabelSelector;
  namespaceSelector?: LabelSelector;
  ipBlock?: { cidr: string; except?: string[] };
}

interface PolicyRule {
  ports?: PolicyPort[];
  from?: PolicyPeer[];
  to?: PolicyPeer[];
}

export interface NetworkPolicy {
  metadata: { name: string; namespace?: string; resourceVersion?: string };
  spec: {
    podSelector?: LabelSelector;
    policyTypes?: string[];
    ingress?: PolicyRule[];
    egress?: PolicyRule[];
  };
}

export interface Pod {
  metadata: { name: string; namespace?: string; resourceVersion?: string; labels?: Record<string, string> };
  spec: {
    nodeName?: string;
    hostNetwork?: boolean;
    containers?: { ports?: { name?: string; containerPort: number; protocol?: string }[] }[];
  };
  status?: { phase?: string; podIP?: string };
}

export interface Namespace {
  metadata: { name: string; resourceVersion?: string; labels?: Record<string, string> };
}

export interface IpSet {
  name: string;
  type: 'hash:ip' | 'hash:net' | 'hash:ip,port';
  entries: string[];
}

export interface NetworkPolicyPlan {
  sets: IpSet[];
  /** Chain name -> its rules (iptables arguments after `-A CHAIN`), VIND-NETPOL first. */
  chains: Map<string, string[][]>;
}

type Direction = 'ingress' | 'egress';

/** Kubernetes label selector semantics; an empty selector selects everything. */
export function selects(selector: LabelSelector, labels: Record<string, string> = {}): boolean {
  for (const [key, value] of Object.entries(selector.matchLabels ?? {})) {
    if (labels[key] !== value) return false;
  }
  for (const { key, operator, values = [] } of selector.matchExpressions ?? []) {
    const has = key in labels;
    if (operator === 'In' && !(has && values.includes(labels[key]!))) return false;
    if (operator === 'NotIn' && has && values.includes(labels[key]!)) return false;
    if (operator === 'Exists' && !has) return false;
    if (operator === 'DoesNotExist' && has) return false;
    if (!['In', 'NotIn', 'Exists', 'DoesNotExist'].includes(operator)) return false;
  }
  return true;
}

/** A pod that policies speak of: it has its own IPv4 address and is not finished (its address may be reused). */
function addressed(pod: Pod): pod is Pod & { status: { podIP: string } } {
  const ip = pod.status?.podIP;
  return (
    !pod.spec.hostNetwork &&
    ip !== undefined &&
    ip.includes('.') &&
    pod.status?.phase !== 'Succeeded' &&
    pod.status?.phase !== 'Failed'
  );
}

/** The directions a policy isolates its pods for (policyTypes, or Ingress plus Egress when it has egress rules). */
function policyTypes(policy: NetworkPolicy): Set<Direction> {
  const given = policy.spec.policyTypes;
  if (given && given.length > 0) return new Set(given.map((t) => t.toLowerCase() as Direction));
  return new Set<Direction>(policy.spec.egress ? ['ingress', 'egress'] : ['ingress']);
}

function shortHash(text: string, length: number): string {
  return createHash('sha256').update(text).digest('hex').slice(0, length).toUpperCase();
}

function objectKey(o: { metadata: { name: string; namespace?: string } }): string {
  return `${o.metadata.namespace ?? ''}/${o.metadata.name}`;
}

/** The addressed pods a peer selects, seen from a policy in `namespace`. */
function peerPods(peer: PolicyPeer, namespace: string, pods: Pod[], namespaces: Namespace[]): Pod[] {
  const inNamespaces = peer.namespaceSelector
    ? new Set(
        namespaces
          .filter((ns) => selects(peer.namespaceSelector!, ns.metadata.labels))
          .map((ns) => ns.metadata.name),
      )
    : new Set([namespace]);
  const podSelector = peer.podSelector ?? {};
  return pods.filter(
    (pod) =>
      addressed(pod) &&
      inNamespaces.has(pod.metadata.namespace ?? '') &&
      selects(podSelector, pod.metadata.labels),
  );
}

function protocolOf(port: PolicyPort): string {
  return (port.protocol ?? 'TCP').toLowerCase();
}

/** A named port's number on one pod, for one protocol; undefined where the pod has no such port. */
function namedPort(pod: Pod, name: string, protocol: string): number | undefined {
  for (const container of pod.spec.containers ?? []) {
    for (const port of container.ports ?? []) {
      if (port.name === name && (port.protocol ?? 'TCP').toLowerCase() === protocol)
        return port.containerPort;
    }
  }
  return undefined;
}

/** The iptables match of a numeric port (or range, or none: the whole protocol). */
function portMatch(protocol: string, port?: number, endPort?: number): string[] {
  if (port === undefined) return ['-p', protocol];
  return ['-p', protocol, '--dport', endPort !== undefined ? `${port}:${endPort}` : `${port}`];
}

/**
 * Everything a set of policies asks of this node's pods. `node` names the node whose pods are
 * enforced here; the other pods only serve as peers.
 */
export function networkPolicyPlan(
  node: string,
  policies: NetworkPolicy[],
  pods: Pod[],
  namespaces: Namespace[],
): NetworkPolicyPlan {
  const sets = new Map<string, IpSet>();
  const chains = new Map<string, string[][]>();
  const top: string[][] = [['-m', 'conntrack', '--ctstate', 'RELATED,ESTABLISHED', '-j', 'RETURN']];
  chains.set(NETPOL_CHAIN, top);

  const addSet = (key: string, type: IpSet['type'], entries: string[]): string => {
    const name = `${SET_PREFIX}${shortHash(`${type} ${key}`, 16)}`;
    if (!sets.has(name)) sets.set(name, { name, type, entries: [...new Set(entries)].sort() });
    return name;
  };

  /** The RETURN rules of one policy rule for one local pod. */
  const ruleLines = (
    policy: NetworkPolicy,
    direction: Direction,
    index: number,
    rule: PolicyRule,
    target: Pod & { status: { podIP: string } },
  ): string[][] => {
    const namespace = policy.metadata.namespace ?? 'default';
    const peers = (direction === 'ingress' ? rule.from : rule.to) ?? [];
    const side = direction === 'ingress' ? 'src' : 'dst';
    // Each peer as an ipset match; no peers: any address.
    const peerMatches: { peer?: PolicyPeer; match: string[] }[] =
      peers.length === 0
        ? [{ match: [] }]
        : peers.map((peer, p) => {
            const key = `${objectKey(policy)} ${direction} ${index} ${p}`;
            const name = peer.ipBlock
              ? addSet(key, 'hash:net', [
                  peer.ipBlock.cidr,
                  ...(peer.ipBlock.except ?? []).map((cidr) => `${cidr} nomatch`),
                ])
              : addSet(
                  key,
                  'hash:ip',
                  peerPods(peer, namespace, pods, namespaces).map((pod) => pod.status!.podIP!),
                );
            return { peer, match: ['-m', 'set', '--match-set', name, side] };
          });
    const ports = rule.ports && rule.ports.length > 0 ? rule.ports : [undefined];
    const lines: string[][] = [];
    ports.forEach((port, portIndex) => {
      if (port !== undefined && typeof port.port === 'string') {
        const protocol = protocolOf(port);
        if (direction === 'ingress') {
          // The receiving pod is this one: its own number for the name, or nothing.
          const number = namedPort(target, port.port, protocol);
          if (number === undefined) return;
          for (const { match } of peerMatches) lines.push([...match, ...portMatch(protocol, number)]);
          return;
        }
        // Towards other pods: the pairs of address and number of every pod a peer selects (every pod
        // when the rule names no peer) that has a port of that name. An ipBlock has no named ports.
        const candidates =
          peers.length === 0
            ? [{ key: 'any', pods: pods.filter(addressed) }]
            : peers
                .map((peer, p) => ({ peer, p }))
                .filter(({ peer }) => !peer.ipBlock)
                .map(({ peer, p }) => ({ key: `${p}`, pods: peerPods(peer, namespace, pods, namespaces) }));
        for (const candidate of candidates) {
          const entries = candidate.pods.flatMap((pod) => {
            const number = namedPort(pod, port.port as string, protocol);
            return number === undefined ? [] : [`${pod.status!.podIP},${protocol}:${number}`];
          });
          const name = addSet(
            `${objectKey(policy)} ${direction} ${index} ${candidate.key} port ${portIndex}`,
            'hash:ip,port',
            entries,
          );
          lines.push(['-m', 'set', '--match-set', name, 'dst,dst']);
        }
        return;
      }
      const match =
        port === undefined ? [] : portMatch(protocolOf(port), port.port as number | undefined, port.endPort);
      for (const { match: peerMatch } of peerMatches) lines.push([...peerMatch, ...match]);
    });
    return lines.map((line) => [...line, '-j', 'RETURN']);
  };

  const local = pods
    .filter((pod): pod is Pod & { status: { podIP: string } } => addressed(pod) && pod.spec.nodeName === node)
    .sort((a, b) => objectKey(a).localeCompare(objectKey(b)));
  const ordered = [...policies].sort((a, b) => objectKey(a).localeCompare(objectKey(b)));
  const jumps: Record<Direction, string[][]> = { ingress: [], egress: [] };
  for (const pod of local) {
    for (const direction of ['egress', 'ingress'] as const) {
      const applying = ordered.filter(
        (policy) =>
          (policy.metadata.namespace ?? 'default') === pod.metadata.namespace &&
          policyTypes(policy).has(direction) &&
          selects(policy.spec.podSelector ?? {}, pod.metadata.labels),
      );
      if (applying.length === 0) continue;
      const chain = `${POD_CHAIN_PREFIX}${direction === 'ingress' ? 'I' : 'E'}-${shortHash(objectKey(pod), 16)}`;
      const rules = applying.flatMap((policy) =>
        (policy.spec[direction] ?? []).flatMap((rule, index) =>
          ruleLines(policy, direction, index, rule, pod),
        ),
      );
      const comment = ['-m', 'comment', '--comment', `${direction} of ${objectKey(pod)}`];
      rules.push([...comment, '-j', 'REJECT']);
      chains.set(chain, rules);
      jumps[direction].push([direction === 'ingress' ? '-d' : '-s', `${pod.status.podIP}/32`, '-j', chain]);
    }
  }
  // Egress of the sender first, then ingress of the receiver: both must let a packet through.
  top.push(...jumps.egress, ...jumps.ingress);
  return { sets: [...sets.values()].sort((a, b) => a.name.localeCompare(b.name)), chains };
}

/**
 * `ipset restore` input that makes every set hold exactly its entries: each is filled under a
 * temporary name and swapped in, so a rule in use never sees a half-filled set.
 */
export function ipsetRestoreText(sets: IpSet[]): string {
  const lines: string[] = [];
  for (const set of sets) {
    const temporary = `${set.name}-T`;
    lines.push(`create ${set.name} ${set.type} family inet -exist`);
    lines.push(`create ${temporary} ${set.type} family inet -exist`);
    lines.push(`flush ${temporary}`);
    for (const entry of set.entries) lines.push(`add ${temporary} ${entry}`);
    lines.push(`swap ${temporary} ${set.name}`, `destroy ${temporary}`);
  }
  return `${lines.join('\n')}\n`;
}

function quote(argument: string): string {
  return /^[\w./:,=-]+$/.test(argument) ? argument : `"${argument.replaceAll('"', '\\"')}"`;
}

/**
 * `iptables-restore --noflush` input for the filter table: each chain of the plan declared (which
 * empties it) and filled; chains of an earlier plan that are gone (`stale`) emptied and deleted in
 * the same transaction, after the rules that jumped to them are gone.
 */
export function iptablesRestoreText(plan: NetworkPolicyPlan, stale: string[]): string {
  const lines = ['*filter'];
  for (const chain of [...plan.chains.keys(), ...stale]) lines.push(`:${chain} - [0:0]`);
  for (const [chain, rules] of plan.chains) {
    for (const rule of rules) lines.push(`-A ${chain} ${rule.map(quote).join(' ')}`);
  }
  for (const chain of stale) lines.push(`-X ${chain}`);
  lines.push('COMMIT');
  return `${lines.join('\n')}\n`;
}

/**
 * What each worker's agent reads to enforce policies, with the node's own credentials: every pod
 * (peers live on other nodes too), namespaces (their labels) and NetworkPolicies. Read only.
 */
export function networkPolicyRbac(): Record<string, unknown>[] {
  const name = 'vind:network-policy';
  return [
    {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'ClusterRole',
      metadata: { name },
      rules: [
        { apiGroups: [''], resources: ['pods', 'namespaces'], verbs: ['list', 'watch'] },
        { apiGroups: ['networking.k8s.io'], resources: ['networkpolicies'], verbs: ['list', 'watch'] },
      ],
    },
    {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'ClusterRoleBinding',
      metadata: { name },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name },
      subjects: [{ apiGroup: 'rbac.authorization.k8s.io', kind: 'Group', name: 'system:nodes' }],
    },
  ];
}
