import { describe, expect, it } from 'vitest';
import {
  imageCacheContainerSpec,
  nodeContainerSpec,
  nodeHostConfig,
  privilegedProbeSpec,
  seedContainerSpec,
} from '../../cli/runtime/container-specs.js';
import type { NodeRequest } from '../../cli/runtime/runtime.js';

const base: NodeRequest = {
  name: 'vind-test-worker',
  cluster: 'test',
  role: 'worker',
  image: 'vind/node:v1.36.3',
  securityMode: 'capabilities',
  network: 'vind-test',
  address: '172.30.0.3',
  env: ['VIND_NODE_NAME=vind-test-worker'],
  ports: [],
  labels: {},
};

describe('nodeHostConfig', () => {
  it('runs privileged where the host allows it', () => {
    const config = nodeHostConfig({ ...base, securityMode: 'privileged' });
    expect(config.Privileged).toBe(true);
    expect(config.CapAdd).toBeUndefined();
    expect(config.CgroupnsMode).toBe('private');
  });

  it('falls back to every capability but CAP_SYS_RESOURCE, with the devices a node needs', () => {
    const config = nodeHostConfig({ ...base, securityMode: 'capabilities' });
    expect(config.Privileged).toBeUndefined();
    expect(config.CapAdd).toEqual(['ALL']);
    expect(config.CapDrop).toEqual(['SYS_RESOURCE']);
    expect(config.MaskedPaths).toEqual([]);
    expect(config.ReadonlyPaths).toEqual([]);
    expect(config.DeviceCgroupRules).toEqual(['a *:* rwm']);
    expect(config.Devices?.map((d: { PathInContainer: string }) => d.PathInContainer)).toEqual([
      '/dev/kmsg',
      '/dev/net/tun',
    ]);
  });

  it('keeps /var on a volume named after the node, and /run, /tmp on tmpfs, in both modes', () => {
    for (const securityMode of ['privileged', 'capabilities'] as const) {
      const config = nodeHostConfig({ ...base, securityMode });
      expect(config.Binds).toEqual(['vind-test-worker-var:/var']);
      expect(Object.keys(config.Tmpfs ?? {})).toEqual(['/run', '/tmp']);
      expect(config.Init).toBe(false);
      expect(config.RestartPolicy?.Name).toBe('unless-stopped');
    }
  });

  it('publishes port mappings per protocol on the given host address', () => {
    const config = nodeHostConfig({
      ...base,
      ports: [
        { containerPort: 6443, hostPort: 41000, listenAddress: '127.0.0.1', protocol: 'TCP' },
        { containerPort: 30053, hostPort: 5353, listenAddress: '0.0.0.0', protocol: 'UDP' },
      ],
    });
    expect(config.PortBindings).toEqual({
      '6443/tcp': [{ HostIp: '127.0.0.1', HostPort: '41000' }],
      '30053/udp': [{ HostIp: '0.0.0.0', HostPort: '5353' }],
    });
  });
});

describe('nodeContainerSpec', () => {
  it('labels the container with its cluster, role and version and runs the role as command', () => {
    const spec = nodeContainerSpec({ ...base, labels: { 'dev.vind.api-port': '41000' } });
    expect(spec.Labels).toMatchObject({
      'dev.vind.cluster': 'test',
      'dev.vind.role': 'worker',
      'dev.vind.api-port': '41000',
    });
    expect(spec.Labels?.['dev.vind.version']).toMatch(/^\d+\.\d+\.\d+/);
    expect(spec.Cmd).toEqual(['worker']);
    expect(spec.Env).toEqual(base.env);
  });

  it('asks for a fixed address on the cluster network', () => {
    const spec = nodeContainerSpec(base);
    expect(spec.NetworkingConfig?.EndpointsConfig?.['vind-test']?.IPAMConfig?.IPv4Address).toBe('172.30.0.3');
  });
});

describe('imageCacheContainerSpec', () => {
  it('is the one container with the Docker socket, publishes nothing, and reads credentials read-only', () => {
    const spec = imageCacheContainerSpec(
      { image: 'vind/node:v1.36.3', network: 'vind-test', dockerConfigDir: '/home/u/.docker' },
      '/run/user/1000/docker.sock',
    );
    expect(spec.HostConfig?.Binds).toEqual([
      '/run/user/1000/docker.sock:/run/vind-engine/docker.sock',
      'vind-image-cache:/var/lib/vind-cache',
      '/home/u/.docker:/run/vind-engine/docker-config:ro',
    ]);
    expect(spec.HostConfig?.PortBindings).toBeUndefined();
    expect(spec.Cmd).toEqual(['image-cache']);
  });
});

describe('privilegedProbeSpec', () => {
  it('asks for a privileged container that does nothing', () => {
    const spec = privilegedProbeSpec('vind/node:v1.36.3');
    expect(spec.HostConfig?.Privileged).toBe(true);
    expect(spec.Entrypoint).toEqual(['/bin/true']);
  });
});

describe('seedContainerSpec', () => {
  const spec = seedContainerSpec({
    name: 'vind-image-seed-1',
    image: 'vind/node:v1.36.3-unseeded',
    command: ['image-seed'],
    tmpfs: ['/opt/vind/seed-work', '/run'],
  });

  it("has a node's capabilities, no network and its tmpfs folders", () => {
    const node = nodeHostConfig(base);
    expect(spec.HostConfig?.CapAdd).toEqual(node.CapAdd);
    expect(spec.HostConfig?.CapDrop).toEqual(node.CapDrop);
    expect(spec.HostConfig?.SecurityOpt).toEqual(node.SecurityOpt);
    expect(spec.HostConfig?.NetworkMode).toBe('none');
    expect(Object.keys(spec.HostConfig?.Tmpfs ?? {})).toEqual(['/opt/vind/seed-work', '/run']);
    expect(spec.HostConfig?.Binds).toBeUndefined();
  });

  it('carries no label of its own, since its configuration is committed as the node image', () => {
    expect(spec.Labels).toBeUndefined();
    expect(spec.Cmd).toEqual(['image-seed']);
  });
});
