// NetworkPolicy on vind's own pod network (networking.cni: default), enforced by each worker's agent
// for the pods on its node: watches of pods, namespaces and NetworkPolicies (with the node's
// credentials and the `vind:network-policy` ClusterRole), and one pass at a time that writes the
// ipsets and iptables chains of `network-policy-rules.ts`. No daemon of its own: the agent already
// holds the watches' machinery, and a pass is two restores.

import { execa } from 'execa';
import { type KubeTarget, watchCollection } from '../shared/kubernetes.js';
import { log } from './log.js';
import {
  ipsetRestoreText,
  iptablesRestoreText,
  type Namespace,
  NETPOL_CHAIN,
  type NetworkPolicy,
  networkPolicyPlan,
  type Pod,
  POD_CHAIN_PREFIX,
  SET_PREFIX,
} from './network-policy-rules.js';
import { reconciler } from './reconciler.js';

/** A pass also runs this often without a change, to put back the jump if kube-proxy came first. */
const RESYNC_MS = 30_000;

/**
 * Whether FORWARD's jump to VIND-NETPOL must be (re)inserted at the top: it is missing, or comes
 * after one of kube-proxy's, whose KUBE-FORWARD accepts packets it marked before policies saw them.
 */
export function forwardJumpMisplaced(forwardRules: string[]): boolean {
  const rules = forwardRules.filter((line) => line.startsWith('-A FORWARD '));
  const ours = rules.indexOf(`-A FORWARD -j ${NETPOL_CHAIN}`);
  const firstKube = rules.findIndex((line) => / -j KUBE-/.test(line));
  return ours < 0 || (firstKube >= 0 && firstKube < ours);
}

async function run(command: string, args: string[], input?: string): Promise<string> {
  const result = await execa(command, args, { reject: false, input });
  if (result.exitCode !== 0) {
    throw new Error(`${command} ${args.join(' ')}: ${result.stderr.trim() || `exit ${result.exitCode}`}`);
  }
  return result.stdout;
}

/** How often an unchanged plan still checks that the policy chain comes first in FORWARD. */
const JUMP_CHECK_INTERVAL_MS = 10_000;

async function ensureForwardJump(): Promise<void> {
  const forward = (await run('iptables', ['-S', 'FORWARD'])).split('\n');
  if (!forwardJumpMisplaced(forward)) return;
  await execa('iptables', ['-D', 'FORWARD', '-j', NETPOL_CHAIN], { reject: false });
  await run('iptables', ['-I', 'FORWARD', '1', '-j', NETPOL_CHAIN]);
}

/** Starts enforcing; runs until `signal` aborts. */
export function enforceNetworkPolicies(target: KubeTarget, nodeName: string, signal: AbortSignal): void {
  let pods: Pod[] | undefined;
  let namespaces: Namespace[] | undefined;
  let policies: NetworkPolicy[] | undefined;
  let appliedSets = '';
  let appliedRules = '';
  let jumpCheckedAt = 0;

  const kick = reconciler(
    async () => {
      // Until all three are known, a peer could look absent and allowed traffic be refused.
      if (!pods || !namespaces || !policies) return;
      const plan = networkPolicyPlan(nodeName, policies, pods, namespaces);
      const setsText = ipsetRestoreText(plan.sets);
      const rulesText = iptablesRestoreText(plan, []);
      // An unchanged plan costs no command: an idle node only checks the FORWARD jump.
      if (setsText !== appliedSets || rulesText !== appliedRules) {
        // Sets before the rules that name them; sets that no rule names any more after them.
        await run('ipset', ['restore'], setsText);
        const stale = (await run('iptables-save', ['-t', 'filter']))
          .split('\n')
          .filter((line) => line.startsWith(`:${POD_CHAIN_PREFIX}`))
          .map((line) => line.slice(1).split(' ')[0]!)
          .filter((chain) => !plan.chains.has(chain));
        await run('iptables-restore', ['--noflush'], iptablesRestoreText(plan, stale));
        const wantedSets = new Set(plan.sets.map((set) => set.name));
        for (const set of (await run('ipset', ['list', '-n'])).split('\n')) {
          if (set.startsWith(SET_PREFIX) && !wantedSets.has(set)) await run('ipset', ['destroy', set]);
        }
        if (rulesText !== appliedRules) {
          const isolated = [...plan.chains.keys()].filter((chain) => chain !== NETPOL_CHAIN).length;
          log(`network policies: ${policies.length} in the cluster, ${isolated} pod chains on this node`);
        }
        appliedSets = setsText;
        appliedRules = rulesText;
        jumpCheckedAt = 0;
      }
      // kube-proxy adds its FORWARD jump once and only checks it afterwards, so the order rarely
      // changes: every pod event in the cluster starting an iptables process cost more than the rest.
      if (Date.now() - jumpCheckedAt >= JUMP_CHECK_INTERVAL_MS) {
        await ensureForwardJump();
        jumpCheckedAt = Date.now();
      }
    },
    { logPrefix: 'network policies', retryMs: 2000, signal },
  );

  const onError = (what: string) => (error: Error) =>
    log(`watching ${what}: ${error.message.split('\n')[0]}`);
  watchCollection<Pod>(
    target,
    '/api/v1/pods',
    (items) => {
      pods = items;
      kick();
    },
    onError('pods'),
    signal,
  );
  watchCollection<Namespace>(
    target,
    '/api/v1/namespaces',
    (items) => {
      namespaces = items;
      kick();
    },
    onError('namespaces'),
    signal,
  );
  watchCollection<NetworkPolicy>(
    target,
    '/apis/networking.k8s.io/v1/networkpolicies',
    (items) => {
      policies = items;
      kick();
    },
    onError('network policies'),
    signal,
  );
  const resync = setInterval(kick, RESYNC_MS);
  signal.addEventListener('abort', () => clearInterval(resync));
}
