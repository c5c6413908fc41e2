// Role `worker`: containerd, then join (kubelet TLS bootstrap), the pod network for this node's
// podCIDR, kube-proxy, routes to every other node's podCIDR, and NetworkPolicy on that network. With
// `networking.cni: none` the pod network, its routes and its policies are left to the CNI the user installs.

import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { execa } from 'execa';
import { writeFileAtomic } from '../shared/atomic-write.js';
import {
  clusterDnsAddress,
  decodeNodeEnv,
  IMAGE_CACHE_URL,
  JOIN_FILE,
  parseJoinInfo,
  PAUSE_IMAGE,
  STATE_DIR,
  type WorkerSettings,
} from '../shared/contract.js';
import { kubeGet, type KubeNode, type KubeTarget, targetFromKubeconfig } from '../shared/kubernetes.js';
import { poll } from '../shared/poll.js';
import { HUB } from '../shared/remote-nodes.js';
import { importPreloadedImages, startContainerd } from './containerd.js';
import { containerdRootFromSeed } from './containerd-seed.js';
import { CNI_CONF_DIR, cniBinDirs, vindOwnsPodNetwork } from './cni.js';
import { bootstrapKubeconfig, discover, type JoinConfig } from './join.js';
import { bootstrapKubeletClient, kubeletClientKey, kubeletKubeconfig } from './kubelet-client.js';
import { log } from './log.js';
import {
  BOOTSTRAP_KUBECONFIG,
  CLUSTER_CA_FILE,
  cniConfig,
  KUBE_PROXY_CONFIG,
  KUBELET_CLIENT_PAIR,
  KUBELET_DIR,
  KUBELET_KUBECONFIG,
  KUBELET_SERVING_CERT,
  kubeletArgs,
  kubeletConfig,
  type KubeletSettings,
  kubeProxyConfig,
  podResolvConf,
  RESOLV_CONF,
} from './node-config.js';
import { announceLoadBalancers } from './load-balancer/announcer.js';
import { enforceNetworkPolicies } from './network-policy.js';
import { keepPodRoutes } from './pod-routes.js';
import { iptables, mssClamp } from './iptables.js';
import { prepareNode } from './prepare.js';
import { remoteTunnel } from './remote-tunnel.js';
import { installSafetyNet } from './safety-net.js';
import { settingsOrStop, setStatus } from './status.js';
import type { Supervisor } from './supervisor.js';

const CNI_CONFIG = `${CNI_CONF_DIR}/10-vind.conflist`;

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
async function joinConfig(settings: WorkerSettings): Promise<JoinConfig> {
  if (settings.join.kind === 'inline') return settings.join.join;
  await setStatus('starting', 'container runtime ready; waiting for the join configuration');
  return poll(
    `the join configuration in ${JOIN_FILE}`,
    async () => (existsSync(JOIN_FILE) ? parseJoinInfo(await readFile(JOIN_FILE, 'utf8')) : undefined),
    { timeoutMs: 30 * 60_000 },
  );
}

/**
 * A remote node: the tunnel to the hub first (its routes replace the safety net's for the cluster's
 * networks: the hub refuses what nothing in the cluster routes), then what the hub answered: the
 * image cache by its address (Docker's DNS on this machine does not know it), the join, labels and
 * taints.
 */
async function joinThroughHub(settings: WorkerSettings): Promise<{
  settings: WorkerSettings;
  taints: string[];
}> {
  if (settings.join.kind !== 'remote') return { settings, taints: [] };
  await setStatus('starting', 'bringing up the tunnel to the hub');
  const answer = await remoteTunnel(settings.join.remote, settings.nodeIp);
  await mssClamp(HUB.interface);
  if (answer.imageCache) {
    const hosts = await readFile('/etc/hosts', 'utf8');
    const name = new URL(settings.imageCache ?? IMAGE_CACHE_URL).hostname;
    const kept = hosts.split('\n').filter((line) => !line.trim().endsWith(` ${name}`));
    await writeFile(
      '/etc/hosts',
      `${[...kept.filter((l) => l !== ''), `${answer.imageCache.address} ${name}`].join('\n')}\n`,
    );
  }
  return {
    settings: {
      ...settings,
      imageCache: answer.imageCache ? (settings.imageCache ?? IMAGE_CACHE_URL) : undefined,
      imageCacheToken: answer.imageCache?.token,
      labels: { ...answer.labels, ...settings.labels },
      join: { kind: 'inline', join: answer.join },
    },
    taints: answer.taints,
  };
}

/**
 * vind's pod network: a bridge for this node's podCIDR, one MASQUERADE rule for traffic leaving the
 * pod network, and a route to every other node's podCIDR via its address.
 */
async function startPodNetwork(target: KubeTarget, settings: WorkerSettings, signal: AbortSignal) {
  const podCidr = await poll(
    'a podCIDR for this node',
    async () => (await ownNode(target, settings.nodeName)).spec.podCIDR,
    { timeoutMs: 180_000, intervalMs: 100 },
  );
  await writeFileAtomic(CNI_CONFIG, cniConfig(podCidr));
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
  keepPodRoutes(target, settings.nodeName, signal);
}

export async function runWorker(supervisor: Supervisor, signal: AbortSignal): Promise<void> {
  const given = settingsOrStop(() => decodeNodeEnv('worker', process.env)) as WorkerSettings;
  const environment = await prepareNode();
  await installSafetyNet(given);
  const { settings, taints } = await joinThroughHub(given);
  // The folders a CNI's installer writes into through hostPath mounts.
  for (const dir of [...cniBinDirs(settings.cni), CNI_CONF_DIR]) await mkdir(dir, { recursive: true });
  await containerdRootFromSeed();
  await startContainerd(supervisor, {
    sandboxImage: PAUSE_IMAGE,
    restrictOomScoreAdj: !environment.canLowerOomScore,
    cgroupDriver: 'cgroupfs',
    cniBinDirs: cniBinDirs(settings.cni),
    cniConfDir: CNI_CONF_DIR,
    imageCache: settings.imageCache,
    imageCacheToken: settings.imageCacheToken,
  });
  await importPreloadedImages();

  if (settings.join.kind === 'none') {
    // A bare runtime node (no cluster to join): containerd and the preloaded images only.
    await setStatus('ready', 'container runtime ready; no cluster to join');
    return;
  }
  const kubelet: KubeletSettings = {
    nodeName: settings.nodeName,
    nodeIp: settings.nodeIp,
    podSubnet: settings.podSubnet,
    clusterDns: clusterDnsAddress(settings.serviceSubnet),
    cgroupDriver: 'cgroupfs',
  };

  await mkdir(`${STATE_DIR}/pki`, { recursive: true });
  if (!existsSync(KUBELET_KUBECONFIG)) {
    const join = await joinConfig(settings);
    await setStatus('starting', `joining ${join.server}`);
    // The join information comes while the control plane is still starting: wait for it as long as it
    // takes, and make the kubelet's key and certificate request meanwhile.
    const [discovered, key] = await Promise.all([
      discover(join, 15 * 60_000),
      kubeletClientKey(settings.nodeName),
    ]);
    await writeFileAtomic(CLUSTER_CA_FILE, discovered.caCertPem);
    // Kept for the kubelet: with it, it bootstraps again should its certificate expire while the node is stopped.
    await writeFileAtomic(
      BOOTSTRAP_KUBECONFIG,
      bootstrapKubeconfig(discovered.server, CLUSTER_CA_FILE, join.token),
      { mode: 0o600 },
    );
    await bootstrapKubeletClient({
      server: discovered.server,
      caPem: discovered.caCertPem,
      token: join.token,
      key,
      pairFile: KUBELET_CLIENT_PAIR,
      timeoutMs: 15 * 60_000,
      signal,
    });
    await writeFileAtomic(
      KUBELET_KUBECONFIG,
      kubeletKubeconfig(discovered.server, CLUSTER_CA_FILE, KUBELET_CLIENT_PAIR),
      { mode: 0o600 },
    );
  }

  await writeFileAtomic(
    RESOLV_CONF,
    podResolvConf(await readFile('/etc/resolv.conf', 'utf8'), settings.nodeIp),
  );
  await forwardDnsToDocker(settings.nodeIp);
  await mkdir(KUBELET_DIR, { recursive: true });
  await writeFileAtomic(`${KUBELET_DIR}/config.yaml`, kubeletConfig(kubelet));
  supervisor.start({
    name: 'kubelet',
    command: 'kubelet',
    args: kubeletArgs(kubelet, settings.labels, taints),
  });

  // Written above, or at an earlier start; the kubelet keeps the certificate it names current.
  const target = targetFromKubeconfig(await readFile(KUBELET_KUBECONFIG, 'utf8'));
  if (vindOwnsPodNetwork(settings.cni)) await startPodNetwork(target, settings, signal);
  else log('pod network left to the CNI the user installs (networking.cni: none)');

  await writeFileAtomic(KUBE_PROXY_CONFIG, kubeProxyConfig(kubelet));
  supervisor.start({ name: 'kube-proxy', command: 'kube-proxy', args: [`--config=${KUBE_PROXY_CONFIG}`] });

  // After kube-proxy: its FORWARD rules are there to be preceded by the policy chain.
  if (vindOwnsPodNetwork(settings.cni)) enforceNetworkPolicies(target, settings.nodeName, signal);
  announceLoadBalancers(target, settings.nodeName, signal);
  // Until its serving certificate is signed the kubelet refuses HTTPS: no logs, exec or metrics.
  await poll('the kubelet serving certificate', async () => existsSync(KUBELET_SERVING_CERT) || undefined, {
    timeoutMs: 180_000,
    intervalMs: 100,
  });
  await setStatus('ready', `joined as ${settings.nodeName}`);
}
