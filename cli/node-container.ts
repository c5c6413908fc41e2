// How a node container is run. Privileged where the Docker host allows it; otherwise every
// capability the host has, with the same devices, mounts and security options a privileged
// container would get, which is enough for containerd, runc and the kubelet.

import type Docker from 'dockerode';
import { LABEL_CLUSTER, LABEL_ROLE, LABEL_VERSION, probeHostCapabilities } from './docker.js';
import { VIND_VERSION } from './version.js';

export type NodeRole = 'control-plane' | 'worker';
export type SecurityMode = 'privileged' | 'capabilities';

export interface NodeContainerOptions {
  name: string;
  cluster: string;
  role: NodeRole;
  image: string;
  securityMode: SecurityMode;
  /** Named volume for /var: containerd's overlayfs snapshots cannot live on the container's overlay. */
  varVolume: string;
  labels?: Record<string, string>;
  env?: string[];
  network?: string;
  ipv4Address?: string;
  portBindings?: Record<string, { HostIp: string; HostPort: string }[]>;
  command?: string[];
}

/** The Engine API has CgroupnsMode since 1.41; the type definitions lag behind. */
export type NodeHostConfig = Docker.HostConfig & { CgroupnsMode?: 'private' | 'host' };

export function nodeHostConfig(options: NodeContainerOptions): NodeHostConfig {
  const common: NodeHostConfig = {
    CgroupnsMode: 'private',
    Binds: [`${options.varVolume}:/var`],
    Tmpfs: { '/run': 'rw,nosuid,nodev,exec', '/tmp': 'rw,nosuid,nodev,exec' },
    RestartPolicy: { Name: 'unless-stopped', MaximumRetryCount: 0 },
    PortBindings: options.portBindings,
    NetworkMode: options.network,
    // tini inside the image is PID 1 and reaps; Docker's own init would stand in its place.
    Init: false,
  };
  if (options.securityMode === 'privileged') {
    return { ...common, Privileged: true, SecurityOpt: ['seccomp=unconfined', 'apparmor=unconfined'] };
  }
  return {
    ...common,
    CapAdd: ['ALL'],
    // The one capability such hosts withhold; asking for it makes Docker refuse to start the node.
    CapDrop: ['SYS_RESOURCE'],
    SecurityOpt: ['seccomp=unconfined', 'apparmor=unconfined', 'label=disable'],
    // The API form of `--security-opt systempaths=unconfined`: nothing under /proc or /sys masked.
    MaskedPaths: [],
    ReadonlyPaths: [],
    DeviceCgroupRules: ['a *:* rwm'],
    Devices: [
      { PathOnHost: '/dev/kmsg', PathInContainer: '/dev/kmsg', CgroupPermissions: 'rwm' },
      { PathOnHost: '/dev/net/tun', PathInContainer: '/dev/net/tun', CgroupPermissions: 'rwm' },
    ],
  };
}

export function nodeContainerSpec(options: NodeContainerOptions): Docker.ContainerCreateOptions {
  const spec: Docker.ContainerCreateOptions = {
    name: options.name,
    Hostname: options.name,
    Image: options.image,
    Cmd: options.command ?? [options.role],
    Env: options.env,
    Labels: {
      [LABEL_CLUSTER]: options.cluster,
      [LABEL_ROLE]: options.role,
      [LABEL_VERSION]: VIND_VERSION,
      ...options.labels,
    },
    HostConfig: nodeHostConfig(options),
    StopSignal: 'SIGTERM',
    StopTimeout: 30,
  };
  if (options.network && options.ipv4Address) {
    spec.NetworkingConfig = {
      EndpointsConfig: { [options.network]: { IPAMConfig: { IPv4Address: options.ipv4Address } } },
    };
  }
  return spec;
}

/** Privileged when the host allows it, else the capability-based mode; VIND_NODE_SECURITY overrides. */
export async function detectSecurityMode(image: string): Promise<SecurityMode> {
  const forced = process.env.VIND_NODE_SECURITY;
  if (forced === 'privileged' || forced === 'capabilities') return forced;
  const capabilities = await probeHostCapabilities(image);
  return capabilities.privileged ? 'privileged' : 'capabilities';
}
