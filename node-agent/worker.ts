// Role `worker`: containerd, then join (kubelet TLS bootstrap), the pod network for this node's
// podCIDR, kube-proxy, and routes to every other node's podCIDR.

import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { execa } from 'execa';
import { kubeGet, type KubeNode, type KubeTarget, targetFromKubeconfig } from '../cli/kubernetes.js';
import { importPreloadedImages, startContainerd } from './containerd.js';
import { bootstrapKubeconfig, discover, type JoinConfig } from './join.js';
import { log } from './log.js';
import {
  BOOTSTRAP_KUBECONFIG,
  CLUSTER_CA_FILE,
  cniConfig,
  KUBELET_DIR,
  KUBELET_KUBECONFIG,
  kubeletArgs,
  kubeletConfig,
  kubeProxyConfig,
  podResolvConf,
  RESOLV_CONF,
  type WorkerSettings,
} from './node-config.js';
import { keepPodRoutes } from './pod-routes.js';
import { prepareNode } from './prepare.js';
import { installSafetyNet } from './safety-net.js';
import { setStatus } from './status.js';
import { waitFor } from './wait.js';
import type { Supervisor } from './supervisor.js';

const CNI_CONFIG = '/etc/cni/net.d/10-vind.conflist';
export const JOIN_FILE = '/var/lib/vind/join.json';
const PAUSE_IMAGE = process.env.VIND_PAUSE_IMAGE ?? 'vind.dev/pause:3.10';

function required(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: the worker cannot join without it`);
  return value;
}

async function iptables(args: string[]): Promise<void> {
  // -C first: rules survive a restart of node-agent, and appending twice would duplicate them.
  const check = await execa('iptables', ['-C', ...args.slice(1)], { reject: false });
  if (check.exitCode === 0) return;
  await execa('iptables', args);
}

/**
 * Docker's embedded DNS answers on 127.0.0.11 inside the node, which pods cannot reach. Pods get
 * the node address as resolver instead, forwarded to the ports Docker's own rules use.
 */
async function forwardDnsToDocker(nodeIp: string): Promise<void> {
  const rules = (await execa('iptables-save', ['-t', 'nat'], { reject: false })).stdout;
  for (const protocol of ['udp', 'tcp']) {
    const match = new RegExp(
      `-d 127\\.0\\.0\\.11/32 -p ${protocol} .*--to-destination (127\\.0\\.0\\.11:\\d+)`,
    ).exec(rules);
    if (!match) continue;
    await iptables([
      '-A',
      'PREROUTING',
      '-t',
      'nat',
      '-d',
      `${nodeIp}/32`,
      '-p',
      protocol,
      '--dport',
      '53',
      '-j',
      'DNAT',
      '--to-destination',
      match[1]!,
    ]);
  }
}

async function ownNode(target: KubeTarget, name: string): Promise<KubeNode> {
  return kubeGet<KubeNode>(target, `/api/v1/nodes/${name}`);
}

/**
 * The join configuration comes in the environment, or, when the CLI starts workers while the control
 * plane is still starting, as a file the CLI writes into the node once the control plane is ready.
 */
async function joinConfig(): Promise<JoinConfig> {
  if (process.env.VIND_JOIN_SERVER) {
    return {
      server: process.env.VIND_JOIN_SERVER,
      token: required('VIND_JOIN_TOKEN'),
      caCertHash: required('VIND_JOIN_CA_HASH'),
    };
  }
  await setStatus('starting', 'container runtime ready; waiting for the join configuration');
  return waitFor(
    `the join configuration in ${JOIN_FILE}`,
    async () =>
      existsSync(JOIN_FILE) ? (JSON.parse(await readFile(JOIN_FILE, 'utf8')) as JoinConfig) : undefined,
    30 * 60_000,
  );
}

export async function runWorker(supervisor: Supervisor): Promise<void> {
  const environment = await prepareNode();
  const podSubnet = process.env.VIND_POD_SUBNET;
  const serviceSubnet = process.env.VIND_SERVICE_SUBNET;
  if (podSubnet && serviceSubnet) await installSafetyNet({ podSubnet, serviceSubnet });
  await startContainerd(supervisor, {
    sandboxImage: PAUSE_IMAGE,
    restrictOomScoreAdj: !environment.canLowerOomScore,
    cgroupDriver: 'cgroupfs',
    cniBinDir: '/usr/lib/cni',
    cniConfDir: '/etc/cni/net.d',
    imageCache: process.env.VIND_IMAGE_CACHE,
  });
  await importPreloadedImages();

  if (!process.env.VIND_JOIN_SERVER && !process.env.VIND_JOIN_FROM_FILE) {
    // A bare runtime node (no cluster to join): containerd and the preloaded images only.
    await setStatus('ready', 'container runtime ready; no cluster to join');
    return;
  }
  const settings: WorkerSettings = {
    nodeName: required('VIND_NODE_NAME'),
    nodeIp: required('VIND_NODE_IP'),
    podSubnet: required('VIND_POD_SUBNET'),
    clusterDns: required('VIND_CLUSTER_DNS'),
    cgroupDriver: 'cgroupfs',
  };
  const labels = JSON.parse(process.env.VIND_NODE_LABELS ?? '{}') as Record<string, string>;

  await mkdir('/var/lib/vind/pki', { recursive: true });
  if (!existsSync(KUBELET_KUBECONFIG)) {
    const join = await joinConfig();
    await setStatus('starting', `joining ${join.server}`);
    const discovered = await discover(join);
    await writeFile(CLUSTER_CA_FILE, discovered.caCertPem);
    await writeFile(
      BOOTSTRAP_KUBECONFIG,
      bootstrapKubeconfig(discovered.server, CLUSTER_CA_FILE, join.token),
      {
        mode: 0o600,
      },
    );
  }

  await writeFile(RESOLV_CONF, podResolvConf(await readFile('/etc/resolv.conf', 'utf8'), settings.nodeIp));
  await forwardDnsToDocker(settings.nodeIp);
  await mkdir(KUBELET_DIR, { recursive: true });
  await writeFile(`${KUBELET_DIR}/config.yaml`, kubeletConfig(settings));
  supervisor.start({ name: 'kubelet', command: 'kubelet', args: kubeletArgs(settings, labels) });

  // TLS bootstrap done: the kubelet wrote its own kubeconfig with a signed client certificate.
  const target = await waitFor(
    'the kubelet client certificate',
    async () =>
      existsSync(KUBELET_KUBECONFIG)
        ? targetFromKubeconfig(await readFile(KUBELET_KUBECONFIG, 'utf8'))
        : undefined,
    180_000,
  );
  const podCidr = await waitFor(
    'a podCIDR for this node',
    async () => (await ownNode(target, settings.nodeName)).spec.podCIDR,
    180_000,
  );
  await writeFile(CNI_CONFIG, cniConfig(podCidr));
  await iptables([
    '-A',
    'POSTROUTING',
    '-t',
    'nat',
    '-s',
    podCidr,
    '!',
    '-d',
    settings.podSubnet,
    '-j',
    'MASQUERADE',
  ]);
  log(`pod network ${podCidr}`);

  await writeFile('/var/lib/vind/kube-proxy.yaml', kubeProxyConfig(settings));
  supervisor.start({
    name: 'kube-proxy',
    command: 'kube-proxy',
    args: ['--config=/var/lib/vind/kube-proxy.yaml'],
  });

  keepPodRoutes(target, settings.nodeName, new AbortController().signal);
  await setStatus('ready', `joined as ${settings.nodeName}`);
}
