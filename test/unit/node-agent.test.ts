import { describe, expect, it } from 'vitest';
import { cniBinDirs, vindOwnsPodNetwork } from '../../node-agent/cni.js';
import { containerdConfig, mirrorHostsToml } from '../../node-agent/containerd.js';
import { qualifiedReference } from '../../shared/image-reference.js';
import { LOCAL_PATH_HELPER_IMAGE, LOCAL_PATH_PROVISIONER_IMAGE } from '../../shared/contract.js';
import {
  CAP_SYS_RESOURCE,
  cgroupV1Hierarchies,
  cgroupVersion,
  hasBoundingCapability,
  isReadOnly,
  parseMountinfo,
} from '../../node-agent/mounts.js';
import { restartDelay } from '../../node-agent/supervisor.js';

// Taken from a node container on a cgroup v1 host with the capability-based security mode.
const MOUNTINFO_V1 = `\
1063 884 0:75 / / rw,relatime master:320 - overlay overlay rw,lowerdir=/l,upperdir=/u,workdir=/w
1064 1063 0:78 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
1066 1063 0:80 / /sys ro,nosuid,nodev,noexec,relatime - sysfs sysfs ro
1067 1066 0:81 / /sys/fs/cgroup ro,nosuid,nodev,noexec,relatime - tmpfs tmpfs rw,mode=755
1068 1067 0:29 / /sys/fs/cgroup/cpu,cpuacct ro,nosuid,nodev,noexec,relatime - cgroup cgroup rw,cpu,cpuacct
1069 1067 0:30 / /sys/fs/cgroup/memory ro,nosuid,nodev,noexec,relatime - cgroup cgroup rw,memory
1070 1067 0:31 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime - cgroup2 cgroup2 rw
1071 1063 0:40 / /var/lib/with\\040space rw - ext4 /dev/vda rw
`;

const MOUNTINFO_V2 = `\
20 1 0:75 / / rw - overlay overlay rw
21 20 0:80 / /sys rw,nosuid - sysfs sysfs rw
22 21 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime - cgroup2 cgroup2 rw,nsdelegate
`;

describe('mountinfo', () => {
  it('parses mount points, options and file system types', () => {
    const mounts = parseMountinfo(MOUNTINFO_V1);
    expect(mounts).toHaveLength(8);
    const sys = mounts.find((m) => m.mountPoint === '/sys')!;
    expect(sys.fsType).toBe('sysfs');
    expect(isReadOnly(sys)).toBe(true);
    expect(mounts.find((m) => m.mountPoint === '/var/lib/with space')).toBeDefined();
  });

  it('tells cgroup v1 from v2 by what is mounted on /sys/fs/cgroup', () => {
    expect(cgroupVersion(parseMountinfo(MOUNTINFO_V1))).toBe(1);
    expect(cgroupVersion(parseMountinfo(MOUNTINFO_V2))).toBe(2);
  });

  it('lists the v1 hierarchies and leaves the unified mount out', () => {
    const points = cgroupV1Hierarchies(parseMountinfo(MOUNTINFO_V1)).map((m) => m.mountPoint);
    expect(points).toEqual(['/sys/fs/cgroup/cpu,cpuacct', '/sys/fs/cgroup/memory']);
  });
});

describe('hasBoundingCapability', () => {
  it('reads the bounding set', () => {
    expect(hasBoundingCapability('CapBnd:\t000001ffffffffff\n', CAP_SYS_RESOURCE)).toBe(true);
    // This workplace's hosts: every capability except CAP_SYS_RESOURCE (bit 24).
    expect(hasBoundingCapability('CapBnd:\t000001fffeffffff\n', CAP_SYS_RESOURCE)).toBe(false);
    expect(hasBoundingCapability('no such line', CAP_SYS_RESOURCE)).toBe(false);
  });
});

describe('containerdConfig', () => {
  const options = {
    sandboxImage: 'vind.dev/pause:3.10',
    restrictOomScoreAdj: true,
    cgroupDriver: 'cgroupfs' as const,
    cniBinDirs: ['/usr/lib/cni'],
    cniConfDir: '/etc/cni/net.d',
  };

  it('pins the sandbox image and the registry hosts folder', () => {
    const config = containerdConfig(options);
    expect(config).toContain('version = 3');
    expect(config).toContain('sandbox = "vind.dev/pause:3.10"');
    // The local-path images too: the helper runs only now and then, and no registry has it.
    expect(config).toContain(`local-path-helper = "${LOCAL_PATH_HELPER_IMAGE}"`);
    expect(config).toContain(`local-path-provisioner = "${LOCAL_PATH_PROVISIONER_IMAGE}"`);
    expect(config).toContain('config_path = "/etc/containerd/certs.d"');
    expect(config).toContain('bin_dirs = ["/usr/lib/cni"]');
  });

  it("looks for a user's CNI plugins first, Debian's as delegates, with networking.cni none", () => {
    expect(containerdConfig({ ...options, cniBinDirs: cniBinDirs('none') })).toContain(
      'bin_dirs = ["/opt/cni/bin", "/usr/lib/cni"]',
    );
    expect(cniBinDirs('default')).toEqual(['/usr/lib/cni']);
  });

  it('follows the host on oom_score_adj and the cgroup driver', () => {
    expect(containerdConfig(options)).toContain('restrict_oom_score_adj = true');
    expect(containerdConfig(options)).toContain('SystemdCgroup = false');
    const other = containerdConfig({ ...options, restrictOomScoreAdj: false, cgroupDriver: 'systemd' });
    expect(other).toContain('restrict_oom_score_adj = false');
    expect(other).toContain('SystemdCgroup = true');
  });
});

describe('who owns the pod network', () => {
  it("is vind by default, and the user's CNI with networking.cni none", () => {
    expect(vindOwnsPodNetwork('default')).toBe(true);
    expect(vindOwnsPodNetwork('none')).toBe(false);
  });
});

describe('mirrorHostsToml', () => {
  it("sends the cluster's token to the cache alone, as a header of its host", () => {
    const token = 'ab'.repeat(32);
    expect(mirrorHostsToml('http://vind-image-cache:5000', token)).toBe(
      [
        '# Written by vind node-agent.',
        '[host."http://vind-image-cache:5000"]',
        '  capabilities = ["pull", "resolve"]',
        '  [host."http://vind-image-cache:5000".header]',
        `    X-Vind-Cache-Token = ["${token}"]`,
        '',
      ].join('\n'),
    );
    // No top-level [header] (it would go to the registries too) and no server: the fallback is the registry.
    expect(mirrorHostsToml('http://vind-image-cache:5000', token)).not.toMatch(/^\[header\]|^server/m);
  });

  it('writes no header without a token', () => {
    expect(mirrorHostsToml('http://c:5000')).toBe(
      '# Written by vind node-agent.\n[host."http://c:5000"]\n  capabilities = ["pull", "resolve"]\n',
    );
  });
});

describe('qualifiedReference', () => {
  it.each([
    ['busybox', 'docker.io/library/busybox:latest'],
    ['user/app:1', 'docker.io/user/app:1'],
    ['vind.dev/pause:3.10', 'vind.dev/pause:3.10'],
    ['localhost/app', 'localhost/app:latest'],
    ['registry:5000/app', 'registry:5000/app:latest'],
  ])('%s -> %s', (input, expected) => {
    expect(qualifiedReference(input)).toBe(expected);
  });
});

describe('restartDelay', () => {
  it('backs off exponentially up to 30 s', () => {
    expect(restartDelay(0)).toBe(500);
    expect(restartDelay(1)).toBe(1000);
    expect(restartDelay(3)).toBe(4000);
    expect(restartDelay(20)).toBe(30_000);
  });
});

describe('admissionConfiguration', () => {
  it('sets the Pod Security default for enforce, audit and warn, and exempts kube-system', async () => {
    const { admissionConfiguration } = await import('../../node-agent/admission.js');
    const { parse } = await import('yaml');
    const config = parse(admissionConfiguration('restricted')) as {
      plugins: {
        name: string;
        configuration: { defaults: Record<string, string>; exemptions: { namespaces: string[] } };
      }[];
    };
    const podSecurity = config.plugins.find((p) => p.name === 'PodSecurity')!.configuration;
    expect(podSecurity.defaults).toEqual({
      enforce: 'restricted',
      'enforce-version': 'latest',
      audit: 'restricted',
      'audit-version': 'latest',
      warn: 'restricted',
      'warn-version': 'latest',
    });
    expect(podSecurity.exemptions.namespaces).toEqual(['kube-system']);
  });
});

describe('retrying a role', () => {
  it('tells failures that waiting cannot mend from those it may', async () => {
    const { isPermanent, retryDelay, settingsOrStop } = await import('../../node-agent/status.js');
    const { PermanentError } = await import('../../shared/poll.js');
    expect(isPermanent(new Error('datastore 172.17.0.1:5432 cannot be reached (ECONNREFUSED)'))).toBe(false);
    expect(isPermanent(new PermanentError('the password was refused'))).toBe(true);
    // As join reports a CA hash that does not match: wrapped, with the permanent error as its cause.
    const wrapped = new Error('joining https://x:6443: hash mismatch', { cause: new PermanentError('hash') });
    expect(isPermanent(wrapped)).toBe(true);
    expect(() =>
      settingsOrStop(() => {
        throw new Error('VIND_NODE_IP is not set');
      }),
    ).toThrow(PermanentError);
    expect([0, 1, 2, 5, 9].map(retryDelay)).toEqual([2000, 4000, 8000, 60_000, 60_000]);
  });
});

describe('the claim on a datastore space', () => {
  const claim = {
    id: 'new-id',
    name: 'dev',
    space: '/vind/dev',
    where: 'postgres://vind:***@db:5432/kine',
    reuse: false,
  };

  it('claims an empty space and keeps its own', async () => {
    const { claimDecision } = await import('../../node-agent/datastore-space.js');
    expect(claimDecision(undefined, false, claim)).toBe('create');
    expect(claimDecision({ id: 'new-id', name: 'dev', created: 'x' }, true, claim)).toBe('keep');
  });

  it("refuses another cluster's space, or objects without an owner, unless asked to take them over", async () => {
    const { claimDecision } = await import('../../node-agent/datastore-space.js');
    const { PermanentError } = await import('../../shared/poll.js');
    const other = { id: 'old-id', name: 'dev', created: '2026-11-01T10:00:00Z' };
    expect(() => claimDecision(other, true, claim)).toThrow(PermanentError);
    expect(() => claimDecision(other, true, claim)).toThrow(
      'the datastore already holds a cluster "dev" made 2026-11-01T10:00:00Z under /vind/dev/ in postgres://vind:***@db:5432/kine: remove them there, or take them over with `vind create --reuse-datastore` (their Secrets cannot be read and are dropped)',
    );
    expect(() => claimDecision(undefined, true, claim)).toThrow(
      /already holds objects of an unknown cluster/,
    );
    expect(claimDecision(other, true, { ...claim, reuse: true })).toBe('take-over');
  });

  it('encrypts Secrets with a secretbox key first, identity after', async () => {
    const { encryptionConfiguration } = await import('../../node-agent/encryption.js');
    const { parse } = await import('yaml');
    const config = parse(encryptionConfiguration('a2V5')) as {
      resources: { resources: string[]; providers: Record<string, unknown>[] }[];
    };
    expect(config.resources[0]!.resources).toEqual(['secrets']);
    expect(Object.keys(config.resources[0]!.providers[0]!)).toEqual(['secretbox']);
    expect(config.resources[0]!.providers[1]).toEqual({ identity: {} });
  });
});

describe('schedulerConfiguration', () => {
  it('runs without election and caps the back-off of unschedulable pods at one second', async () => {
    const { schedulerConfiguration } = await import('../../node-agent/control-plane.js');
    const config = JSON.parse(schedulerConfiguration('/var/lib/vind/scheduler.conf')) as Record<
      string,
      unknown
    >;
    expect(config).toMatchObject({
      apiVersion: 'kubescheduler.config.k8s.io/v1',
      kind: 'KubeSchedulerConfiguration',
      clientConnection: { kubeconfig: '/var/lib/vind/scheduler.conf' },
      leaderElection: { leaderElect: false },
      enableProfiling: false,
      podInitialBackoffSeconds: 1,
      podMaxBackoffSeconds: 1,
    });
  });
});
