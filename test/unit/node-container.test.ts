import { describe, expect, it } from 'vitest';
import { nodeContainerSpec, nodeHostConfig } from '../../cli/node-container.js';

const base = {
  name: 'vind-test-worker',
  cluster: 'test',
  role: 'worker' as const,
  image: 'vind/node:v1.36.3',
  varVolume: 'vind-test-worker-var',
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
    expect(config.Devices?.map((d) => d.PathInContainer)).toEqual(['/dev/kmsg', '/dev/net/tun']);
  });

  it('keeps /var on a volume and /run, /tmp on tmpfs in both modes', () => {
    for (const securityMode of ['privileged', 'capabilities'] as const) {
      const config = nodeHostConfig({ ...base, securityMode });
      expect(config.Binds).toEqual(['vind-test-worker-var:/var']);
      expect(Object.keys(config.Tmpfs ?? {})).toEqual(['/run', '/tmp']);
      expect(config.Init).toBe(false);
    }
  });
});

describe('nodeContainerSpec', () => {
  it('labels the container with its cluster and role and runs the role as command', () => {
    const spec = nodeContainerSpec({ ...base, securityMode: 'capabilities' });
    expect(spec.Labels).toMatchObject({ 'dev.vind.cluster': 'test', 'dev.vind.role': 'worker' });
    expect(spec.Cmd).toEqual(['worker']);
  });

  it('asks for a fixed address on the cluster network', () => {
    const spec = nodeContainerSpec({
      ...base,
      securityMode: 'privileged',
      network: 'vind-test',
      ipv4Address: '172.30.0.3',
    });
    expect(spec.NetworkingConfig?.EndpointsConfig?.['vind-test']?.IPAMConfig?.IPv4Address).toBe('172.30.0.3');
  });
});
