// Every flag vind gives the Docker Engine, in one place: how a node container runs (privileged where
// the host allows it, else every capability the host has, with the devices, mounts and security
// options a privileged container would get), how the image cache runs (the only container with the
// Docker socket), and the throw-away probe. The rest of the code asks for "a node", never for flags.

import type Docker from 'dockerode';
import {
  API_SERVER_PORT,
  frontDoorName,
  IMAGE_CACHE,
  LABELS,
  VIND_VERSION,
  varVolumeName,
} from '../../shared/contract.js';
import { HUB } from '../../shared/remote-nodes.js';
import type {
  FrontDoorRequest,
  HubRequest,
  ImageCacheRequest,
  NodeRequest,
  PortMapping,
  SeedRequest,
} from './runtime.js';

/** The Engine API has CgroupnsMode since 1.41; the type definitions lag behind. */
export type NodeHostConfig = Docker.HostConfig & { CgroupnsMode?: 'private' | 'host' };

function portBindings(mappings: PortMapping[]): Record<string, { HostIp: string; HostPort: string }[]> {
  const bindings: Record<string, { HostIp: string; HostPort: string }[]> = {};
  for (const m of mappings) {
    const key = `${m.containerPort}/${m.protocol.toLowerCase()}`;
    (bindings[key] ??= []).push({ HostIp: m.listenAddress, HostPort: String(m.hostPort) });
  }
  return bindings;
}

/** What a node may do without `--privileged`: every capability the host grants, no filter. */
const NODE_CAPABILITIES: NodeHostConfig = {
  CapAdd: ['ALL'],
  // The one capability such hosts withhold; asking for it makes Docker refuse to start the node.
  CapDrop: ['SYS_RESOURCE'],
  SecurityOpt: ['seccomp=unconfined', 'apparmor=unconfined', 'label=disable'],
};

export function nodeHostConfig(request: NodeRequest): NodeHostConfig {
  const common: NodeHostConfig = {
    CgroupnsMode: 'private',
    // containerd's overlayfs snapshots cannot live on the container's own overlay.
    Binds: [`${varVolumeName(request.name)}:/var`],
    Tmpfs: { '/run': 'rw,nosuid,nodev,exec', '/tmp': 'rw,nosuid,nodev,exec' },
    RestartPolicy: { Name: 'unless-stopped', MaximumRetryCount: 0 },
    PortBindings: portBindings(request.ports),
    NetworkMode: request.network,
    // tini inside the image is PID 1 and reaps; Docker's own init would stand in its place.
    Init: false,
  };
  if (request.securityMode === 'privileged') {
    return { ...common, Privileged: true, SecurityOpt: ['seccomp=unconfined', 'apparmor=unconfined'] };
  }
  return {
    ...common,
    ...NODE_CAPABILITIES,
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

export function nodeContainerSpec(request: NodeRequest): Docker.ContainerCreateOptions {
  const hostConfig = nodeHostConfig(request);
  return {
    name: request.name,
    Hostname: request.name,
    Image: request.image,
    Cmd: [request.role],
    Env: request.env,
    Labels: {
      [LABELS.cluster]: request.cluster,
      [LABELS.role]: request.role,
      [LABELS.version]: VIND_VERSION,
      ...request.labels,
    },
    ExposedPorts: Object.fromEntries(Object.keys(hostConfig.PortBindings ?? {}).map((k) => [k, {}])),
    HostConfig: hostConfig,
    NetworkingConfig: {
      EndpointsConfig: { [request.network]: { IPAMConfig: { IPv4Address: request.address } } },
    },
    StopSignal: 'SIGTERM',
    StopTimeout: 30,
  };
}

/**
 * The image cache: the Docker socket (it exports and pulls images through the host's engine) and the
 * user's registry credentials read-only, both in a folder the cache's agent closes to all but root,
 * and its blob volume. No published port: nodes reach it by name on the cluster networks it is
 * attached to.
 */
export function imageCacheContainerSpec(
  request: ImageCacheRequest,
  hostSocket: string,
): Docker.ContainerCreateOptions {
  return {
    name: IMAGE_CACHE.container,
    Image: request.image,
    Cmd: ['image-cache'],
    Labels: { [LABELS.role]: 'image-cache', [LABELS.version]: VIND_VERSION },
    HostConfig: {
      Binds: [
        `${hostSocket}:${IMAGE_CACHE.dockerSocket}`,
        `${IMAGE_CACHE.volume}:${IMAGE_CACHE.root}`,
        ...(request.dockerConfigDir ? [`${request.dockerConfigDir}:${IMAGE_CACHE.dockerConfigDir}:ro`] : []),
      ],
      RestartPolicy: { Name: 'unless-stopped', MaximumRetryCount: 0 },
      NetworkMode: request.network,
    },
  };
}

/**
 * A cluster's front door: the node image in role `front-door`, as nobody (65534), with no capability,
 * no mount, a read-only root and no socket; it publishes the API server's port and reaches the
 * control plane and the image cache on the cluster network.
 */
export function frontDoorContainerSpec(request: FrontDoorRequest): Docker.ContainerCreateOptions {
  const bindings = portBindings([{ ...request.port, containerPort: API_SERVER_PORT }]);
  return {
    name: frontDoorName(request.cluster),
    Image: request.image,
    Cmd: ['front-door'],
    User: '65534:65534',
    Env: request.env,
    Labels: {
      [LABELS.cluster]: request.cluster,
      [LABELS.role]: 'front-door',
      [LABELS.version]: VIND_VERSION,
      ...request.labels,
    },
    ExposedPorts: Object.fromEntries(Object.keys(bindings).map((k) => [k, {}])),
    HostConfig: {
      PortBindings: bindings,
      NetworkMode: request.network,
      RestartPolicy: { Name: 'unless-stopped', MaximumRetryCount: 0 },
      CapDrop: ['ALL'],
      SecurityOpt: ['no-new-privileges'],
      ReadonlyRootfs: true,
      Init: false,
    },
    StopTimeout: 5,
  };
}

/**
 * A cluster's WireGuard hub: the node image in role `hub`, with NET_ADMIN and NET_RAW (interfaces,
 * routes, iptables) and the TUN device (wireguard-go), nothing else; forwarding and proxy ARP set as
 * sysctls of its own network namespace. Its UDP port is published on every host address at a fixed
 * port (Docker would pick another at each restart): remote machines dial it from outside.
 */
export function hubContainerSpec(request: HubRequest): Docker.ContainerCreateOptions {
  const port = `${HUB.listenPort}/udp`;
  return {
    name: request.name,
    Hostname: request.name,
    Image: request.image,
    Cmd: ['hub'],
    Env: request.env,
    Labels: { [LABELS.cluster]: request.cluster, [LABELS.role]: 'hub', [LABELS.version]: VIND_VERSION },
    ExposedPorts: { [port]: {} },
    HostConfig: {
      Binds: [`${varVolumeName(request.name)}:/var/lib/vind`],
      Tmpfs: { '/run': 'rw,nosuid,nodev', '/tmp': 'rw,nosuid,nodev' },
      PortBindings: { [port]: [{ HostIp: '0.0.0.0', HostPort: String(request.hostPort) }] },
      NetworkMode: request.network,
      RestartPolicy: { Name: 'unless-stopped', MaximumRetryCount: 0 },
      CapDrop: ['ALL'],
      CapAdd: ['NET_ADMIN', 'NET_RAW'],
      SecurityOpt: ['no-new-privileges'],
      Devices: [{ PathOnHost: '/dev/net/tun', PathInContainer: '/dev/net/tun', CgroupPermissions: 'rwm' }],
      Sysctls: { 'net.ipv4.ip_forward': '1', 'net.ipv4.conf.all.proxy_arp': '1' },
      Init: false,
    },
    NetworkingConfig: {
      EndpointsConfig: { [request.network]: { IPAMConfig: { IPv4Address: request.address } } },
    },
    StopTimeout: 10,
  };
}

/**
 * The image build's seeding container: the node image with a node's capabilities (containerd mounts
 * snapshots), no network, no volume, and tmpfs mounts for its work. No label: its committed file
 * system and configuration become the node image, which must not carry any of its own.
 */
export function seedContainerSpec(request: SeedRequest): Docker.ContainerCreateOptions {
  return {
    name: request.name,
    Image: request.image,
    Cmd: request.command,
    HostConfig: {
      ...NODE_CAPABILITIES,
      NetworkMode: 'none',
      Tmpfs: Object.fromEntries(request.tmpfs.map((path) => [path, 'rw,nosuid,nodev,exec'])),
      Init: false,
    },
  };
}

/** A container that only starts and exits: whether the engine lets it run privileged. */
export function privilegedProbeSpec(image: string): Docker.ContainerCreateOptions {
  return {
    Image: image,
    Entrypoint: ['/bin/true'],
    Labels: { [LABELS.role]: 'probe' },
    HostConfig: { Privileged: true, AutoRemove: false },
  };
}
