// Makes a plain Docker container fit to run nested containers and a kubelet: writable cgroups,
// shared mount propagation, the sysctls Kubernetes expects. Each step is idempotent, because a
// node container is restarted with the state of its last run.

import { existsSync } from 'node:fs';
import { mkdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { log } from './log.js';
import {
  CAP_SYS_RESOURCE,
  cgroupV1Hierarchies,
  cgroupVersion,
  type CgroupVersion,
  hasBoundingCapability,
  isReadOnly,
  parseMountinfo,
} from './mounts.js';

export interface NodeEnvironment {
  cgroupVersion: CgroupVersion;
  /** False on hosts that withhold CAP_SYS_RESOURCE: negative oom_score_adj is refused there. */
  canLowerOomScore: boolean;
}

async function mounts() {
  return parseMountinfo(await readFile('/proc/self/mountinfo', 'utf8'));
}

async function mount(args: string[]): Promise<void> {
  const result = await execa('mount', args, { reject: false });
  if (result.exitCode !== 0) throw new Error(`mount ${args.join(' ')}: ${result.stderr.trim()}`);
}

async function remountWritable(): Promise<void> {
  const all = await mounts();
  const sys = all.filter((m) => m.mountPoint === '/sys').at(-1);
  if (sys && isReadOnly(sys)) await mount(['-o', 'remount,rw', '/sys']);
  const cgroupRoot = all.filter((m) => m.mountPoint === '/sys/fs/cgroup').at(-1);
  if (cgroupRoot && isReadOnly(cgroupRoot)) await mount(['-o', 'remount,rw', '/sys/fs/cgroup']);
}

/** cgroup v1: every hierarchy is mounted read-only unless the container is privileged. */
async function prepareCgroupV1(): Promise<void> {
  for (const hierarchy of cgroupV1Hierarchies(await mounts())) {
    if (isReadOnly(hierarchy)) await mount(['-o', 'remount,bind,rw', hierarchy.mountPoint]);
  }
  // runc joins every hierarchy listed in /proc/self/cgroup, the named systemd one included.
  const self = await readFile('/proc/self/cgroup', 'utf8');
  if (self.includes(':name=systemd:') && !existsSync('/sys/fs/cgroup/systemd/cgroup.procs')) {
    await mkdir('/sys/fs/cgroup/systemd', { recursive: true });
    await mount(['-t', 'cgroup', '-o', 'none,name=systemd', 'cgroup', '/sys/fs/cgroup/systemd']);
  }
}

/**
 * cgroup v2: a cgroup with processes cannot delegate controllers to children ("no internal
 * processes"). Move everything in the container's root cgroup into a child first, then enable
 * every available controller for the subtree the kubelet will create.
 */
async function prepareCgroupV2(): Promise<void> {
  const root = '/sys/fs/cgroup';
  await mkdir(join(root, 'init'), { recursive: true });
  for (let attempt = 0; attempt < 5; attempt++) {
    const pids = (await readFile(join(root, 'cgroup.procs'), 'utf8')).split('\n').filter(Boolean);
    if (pids.length === 0) break;
    for (const pid of pids) {
      // A process may exit while we move it; that is fine.
      await writeFile(join(root, 'init', 'cgroup.procs'), pid).catch(() => undefined);
    }
  }
  const controllers = (await readFile(join(root, 'cgroup.controllers'), 'utf8')).trim().split(/\s+/);
  const wanted = controllers
    .filter(Boolean)
    .map((c) => `+${c}`)
    .join(' ');
  if (wanted) await writeFile(join(root, 'cgroup.subtree_control'), wanted);
}

/**
 * Kernel settings of the node's own network namespace. Host-wide settings (inotify limits) are
 * left to the user: the CLI warns with the sysctl to run instead of changing the host behind its back.
 */
const SYSCTLS: Record<string, string> = {
  'net/ipv4/ip_forward': '1',
  'net/ipv6/conf/all/forwarding': '1',
  'net/bridge/bridge-nf-call-iptables': '1',
  'net/bridge/bridge-nf-call-ip6tables': '1',
  'net/ipv4/conf/all/route_localnet': '1',
};

async function applySysctls(): Promise<void> {
  for (const [key, value] of Object.entries(SYSCTLS)) {
    const path = join('/proc/sys', key);
    try {
      const current = (await readFile(path, 'utf8')).trim();
      if (current === value) continue;
      await writeFile(path, value);
    } catch (error) {
      log(
        `sysctl ${key.replaceAll('/', '.')}=${value} not applied: ${(error as NodeJS.ErrnoException).code}`,
      );
    }
  }
}

export async function prepareNode(): Promise<NodeEnvironment> {
  await remountWritable();
  const version = cgroupVersion(await mounts());
  if (version === 1) await prepareCgroupV1();
  else await prepareCgroupV2();

  // Volumes the kubelet mounts into pods must propagate into the containers that use them.
  await mount(['--make-rshared', '/']);

  // The kubelet's OOM watcher reads /dev/kmsg; on hosts without it, the console stands in.
  if (!existsSync('/dev/kmsg')) await symlink('/dev/console', '/dev/kmsg').catch(() => undefined);

  await applySysctls();
  for (const dir of ['/var/lib/containerd', '/var/lib/kubelet', '/etc/cni/net.d', '/var/log/vind']) {
    await mkdir(dir, { recursive: true });
  }

  const status = await readFile('/proc/self/status', 'utf8');
  const environment: NodeEnvironment = {
    cgroupVersion: version,
    canLowerOomScore: hasBoundingCapability(status, CAP_SYS_RESOURCE),
  };
  log(
    `prepared: cgroup v${environment.cgroupVersion}, ` +
      `${environment.canLowerOomScore ? 'full' : 'restricted'} oom_score_adj`,
  );
  return environment;
}
