// What goes into a node image: every pinned version and package list lives here, so that the
// input hash (images/inputs.ts) changes exactly when the recipe does.

import {
  COREDNS_VERSION,
  LOCAL_PATH_PROVISIONER_VERSION,
  METRICS_SERVER_VERSION,
} from '../shared/contract.js';

/** Newest stable Kubernetes on the Go module proxy that runs on cgroup v1 and v2 hosts. */
export const DEFAULT_KUBERNETES_VERSION = 'v1.36.3';

/** Oldest minor we build: containerd 2 and the kubelet settings we write need 1.31 or later. */
export const MIN_KUBERNETES_MINOR = 31;

export const BASE_IMAGE_REPOSITORY = 'vind/base';

export interface GoTool {
  /** Short name, also the cache folder name. */
  name: string;
  module: string;
  version: string;
  /** Package paths inside the module, relative to its root ("." for the root). */
  packages: string[];
  cgo: boolean;
  tags: string[];
  /** -X flags that stamp the version; `{version}` is replaced. */
  versionFlags: string[];
  extraLdflags: string[];
}

export const GO_TOOLS: GoTool[] = [
  {
    name: 'containerd',
    module: 'github.com/containerd/containerd/v2',
    version: 'v2.4.2',
    packages: ['./cmd/containerd', './cmd/containerd-shim-runc-v2', './cmd/ctr'],
    cgo: false,
    tags: [],
    versionFlags: [
      '-X github.com/containerd/containerd/v2/version.Version={version}',
      '-X github.com/containerd/containerd/v2/version.Package=github.com/containerd/containerd/v2',
    ],
    extraLdflags: [],
  },
  {
    // runc needs cgo for seccomp; linked statically so the node image needs no libseccomp of a given version.
    name: 'runc',
    module: 'github.com/opencontainers/runc',
    version: 'v1.5.2',
    packages: ['.'],
    cgo: true,
    tags: ['seccomp', 'netgo', 'osusergo', 'urfave_cli_no_docs'],
    versionFlags: ['-X main.version={version}'],
    extraLdflags: ['-extldflags=-static'],
  },
  {
    name: 'kine',
    module: 'github.com/k3s-io/kine',
    version: 'v0.17.5',
    packages: ['.'],
    cgo: false,
    tags: [],
    versionFlags: ['-X github.com/k3s-io/kine/pkg/version.Version={version}'],
    extraLdflags: [],
  },
  {
    name: 'coredns',
    module: 'github.com/coredns/coredns',
    // The contract names the CoreDNS image the control plane deploys; the build makes that one.
    version: COREDNS_VERSION,
    packages: ['.'],
    cgo: false,
    tags: [],
    versionFlags: [],
    extraLdflags: [],
  },
  {
    // Runs as a pod, like CoreDNS: only its image carries it.
    name: 'metrics-server',
    module: 'sigs.k8s.io/metrics-server',
    version: METRICS_SERVER_VERSION,
    packages: ['./cmd/metrics-server'],
    cgo: false,
    tags: [],
    versionFlags: ['-X k8s.io/client-go/pkg/version.gitVersion={version}'],
    extraLdflags: [],
  },
  {
    // The default StorageClass's provisioner; the contract names the image the control plane deploys.
    name: 'local-path-provisioner',
    module: 'github.com/rancher/local-path-provisioner',
    version: LOCAL_PATH_PROVISIONER_VERSION,
    packages: ['.'],
    cgo: false,
    tags: [],
    versionFlags: ['-X main.VERSION={version}'],
    extraLdflags: [],
  },
];

/** Go tools that run as pods: each goes into its own preloaded image, not into the node's /usr/local/bin. */
export const POD_TOOLS = ['coredns', 'metrics-server', 'local-path-provisioner'];

/** The Debian package whose static busybox is the shell of the local-path helper pods. */
export const BUSYBOX_PACKAGE = 'busybox-static';

/** Kubernetes components compiled from k8s.io/kubernetes. */
export const KUBERNETES_COMPONENTS = [
  'kube-apiserver',
  'kube-controller-manager',
  'kube-scheduler',
  'kubelet',
  'kube-proxy',
  'kubectl',
] as const;

/** Debian packages of the base root file system (debootstrap --variant=minbase). */
export const DEBIAN_SUITE = 'bookworm';
export const DEBIAN_PACKAGES = [
  'ca-certificates',
  'conntrack',
  'containernetworking-plugins',
  'ethtool',
  'iproute2',
  // Gratuitous ARP when a node takes over a LoadBalancer address.
  'iputils-arping',
  'iptables',
  // ipsets of peer addresses for NetworkPolicy rules (node-agent/network-policy.ts).
  'ipset',
  'kmod',
  'libseccomp2',
  'mount',
  'nftables',
  'nodejs',
  'procps',
  'socat',
  'tini',
  'wireguard-go',
  'wireguard-tools',
];

/**
 * CRIU, for sleep mode checkpoint (`images/criu.ts` puts it into the base). Bookworm's 3.17 fails on
 * kernels 6.13 and later; 4.1 (trixie) cannot dump a TCP socket on kernels 6.16 and later (the kernel
 * refuses SO_PASSCRED there); 4.2 can. Testing (forky) has it; when the pinned version has left the
 * suite, its current criu is taken if it is `minimum` or later, else the base build stops saying so.
 */
export const CRIU = {
  suite: 'forky',
  version: '4.2.1-1',
  /** Taken instead when the suite has moved past `version`: 4.2 is the first that dumps TCP here. */
  minimum: '4.2',
  /** The folder its packages are unpacked into, and the wrapper on the PATH that runs it from there. */
  prefix: '/opt/criu',
  wrapper: '/usr/local/sbin/criu',
} as const;

/** CNI plugins kept from Debian's containernetworking-plugins; the rest are removed to save space. */
export const CNI_PLUGINS_KEPT = ['bridge', 'host-local', 'loopback', 'portmap'];

export function goTool(name: string): GoTool {
  const tool = GO_TOOLS.find((t) => t.name === name);
  if (!tool) throw new Error(`unknown Go tool ${name}`);
  return tool;
}
