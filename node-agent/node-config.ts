// Configuration files of a worker: kubelet, kube-proxy and the CNI network. Pure functions.

import { LOAD_BALANCER, STATE_DIR } from '../shared/contract.js';

/**
 * The kubelet's and kube-proxy's files are read as YAML, of which JSON is a part: written as JSON,
 * since a YAML library's first use cost a worker 0.16 s of CPU while the control plane started.
 */
function stringify(config: unknown): string {
  return `${JSON.stringify(config, null, 2)}\n`;
}

export const KUBELET_DIR = '/var/lib/kubelet';
/** The kubelet keeps its current serving certificate and key here once one has been issued. */
/** The kubelet's client certificate and key, in the kubelet's own certificate store. */
export const KUBELET_CLIENT_PAIR = `${KUBELET_DIR}/pki/kubelet-client-current.pem`;
export const KUBELET_SERVING_CERT = `${KUBELET_DIR}/pki/kubelet-server-current.pem`;
export const KUBELET_KUBECONFIG = `${STATE_DIR}/kubelet.conf`;
export const BOOTSTRAP_KUBECONFIG = `${STATE_DIR}/bootstrap-kubelet.conf`;
export const CLUSTER_CA_FILE = `${STATE_DIR}/pki/ca.crt`;
export const RESOLV_CONF = `${STATE_DIR}/resolv.conf`;
export const KUBE_PROXY_CONFIG = `${STATE_DIR}/kube-proxy.yaml`;

/** What the kubelet and kube-proxy configuration of a worker depends on. */
export interface KubeletSettings {
  nodeName: string;
  nodeIp: string;
  podSubnet: string;
  clusterDns: string;
  cgroupDriver: 'cgroupfs' | 'systemd';
}

export function kubeletConfig(settings: KubeletSettings): string {
  return stringify({
    apiVersion: 'kubelet.config.k8s.io/v1beta1',
    kind: 'KubeletConfiguration',
    authentication: {
      anonymous: { enabled: false },
      webhook: { enabled: true, cacheTTL: '0s' },
      x509: { clientCAFile: CLUSTER_CA_FILE },
    },
    authorization: { mode: 'Webhook' },
    cgroupDriver: settings.cgroupDriver,
    // Hosts still on cgroup v1 (many CI machines) are refused by default from 1.35 on.
    failCgroupV1: false,
    clusterDNS: [settings.clusterDns],
    clusterDomain: 'cluster.local',
    containerRuntimeEndpoint: 'unix:///run/containerd/containerd.sock',
    resolvConf: RESOLV_CONF,
    failSwapOn: false,
    rotateCertificates: true,
    // The serving certificate comes from the cluster CA through the CSR API (kubelet-serving.ts), so
    // the API server and metrics-server can verify the kubelet instead of trusting any certificate.
    serverTLSBootstrap: true,
    serializeImagePulls: false,
    readOnlyPort: 0,
    healthzBindAddress: '127.0.0.1',
    // The node's disk is the host's disk (its /var is a volume there). Kept with a margin a laptop can
    // live with: unused images go when the disk is 90% full, and pods are evicted, the greediest
    // first, before the last 2 GiB are gone, so a workload that fills the disk stops short of the host.
    imageGCHighThresholdPercent: 90,
    imageGCLowThresholdPercent: 80,
    evictionHard: {
      'memory.available': '100Mi',
      'nodefs.available': '2Gi',
      'imagefs.available': '2Gi',
      'nodefs.inodesFree': '5%',
    },
    evictionPressureTransitionPeriod: '30s',
    // Report a change of readiness (CNI configured) quickly instead of every 10 s.
    nodeStatusUpdateFrequency: '4s',
    nodeStatusReportFrequency: '1m',
  });
}

export function kubeletArgs(
  settings: KubeletSettings,
  labels: Record<string, string>,
  taints: string[] = [],
): string[] {
  const args = [
    `--config=${KUBELET_DIR}/config.yaml`,
    `--bootstrap-kubeconfig=${BOOTSTRAP_KUBECONFIG}`,
    `--kubeconfig=${KUBELET_KUBECONFIG}`,
    `--cert-dir=${KUBELET_DIR}/pki`,
    `--node-ip=${settings.nodeIp}`,
    `--hostname-override=${settings.nodeName}`,
  ];
  const labelText = Object.entries(labels)
    .map(([k, v]) => `${k}=${v}`)
    .join(',');
  if (labelText) args.push(`--node-labels=${labelText}`);
  if (taints.length > 0) args.push(`--register-with-taints=${taints.join(',')}`);
  return args;
}

export function kubeProxyConfig(settings: KubeletSettings): string {
  return stringify({
    apiVersion: 'kubeproxy.config.k8s.io/v1alpha1',
    kind: 'KubeProxyConfiguration',
    clientConnection: { kubeconfig: KUBELET_KUBECONFIG },
    mode: 'iptables',
    clusterCIDR: settings.podSubnet,
    hostnameOverride: settings.nodeName,
    bindAddress: settings.nodeIp,
    // On the node address: the LoadBalancer controller probes it to know which nodes can announce.
    healthzBindAddress: `${settings.nodeIp}:${LOAD_BALANCER.nodeHealthPort}`,
    metricsBindAddress: '127.0.0.1:10249',
    // nf_conntrack_max is read-only inside a container: leave the host's conntrack settings alone.
    conntrack: { maxPerCore: 0, min: 0, tcpEstablishedTimeout: '0s', tcpCloseWaitTimeout: '0s' },
  });
}

export function cniConfig(podCidr: string): string {
  return JSON.stringify(
    {
      cniVersion: '1.0.0',
      name: 'vind',
      plugins: [
        {
          type: 'bridge',
          bridge: 'cni0',
          isGateway: true,
          // Egress is masqueraded by one node rule instead, so pod-to-pod traffic keeps its source address.
          ipMasq: false,
          hairpinMode: true,
          ipam: { type: 'host-local', ranges: [[{ subnet: podCidr }]], routes: [{ dst: '0.0.0.0/0' }] },
        },
        { type: 'portmap', capabilities: { portMappings: true } },
      ],
    },
    null,
    2,
  );
}

/** The resolv.conf pods inherit: the node's own, with Docker's loopback resolver replaced by the node address. */
export function podResolvConf(nodeResolvConf: string, nodeIp: string): string {
  return nodeResolvConf
    .split('\n')
    .map((line) => (/^nameserver\s+127\./.test(line) ? `nameserver ${nodeIp}` : line))
    .filter((line) => !line.startsWith('#'))
    .join('\n');
}
