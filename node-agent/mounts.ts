// Pure reading of /proc/self/mountinfo and /proc/self/status, so the preparation of a node can
// decide what to remount without guessing.

export interface MountEntry {
  mountPoint: string;
  options: string[];
  fsType: string;
  source: string;
  superOptions: string[];
}

/** Parses mountinfo(5) lines: "... mountpoint options [optional fields] - fstype source superoptions". */
export function parseMountinfo(text: string): MountEntry[] {
  const entries: MountEntry[] = [];
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    const [left, right] = line.split(' - ');
    if (!left || !right) continue;
    const fields = left.split(' ');
    const [fsType, source, superOptions] = right.split(' ');
    entries.push({
      mountPoint: unescapeMountPath(fields[4] ?? ''),
      options: (fields[5] ?? '').split(','),
      fsType: fsType ?? '',
      source: source ?? '',
      superOptions: (superOptions ?? '').split(','),
    });
  }
  return entries;
}

function unescapeMountPath(path: string): string {
  return path.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8)));
}

export function isReadOnly(entry: MountEntry): boolean {
  return entry.options.includes('ro');
}

export type CgroupVersion = 1 | 2;

export function cgroupVersion(mounts: MountEntry[]): CgroupVersion {
  const root = mounts.filter((m) => m.mountPoint === '/sys/fs/cgroup').at(-1);
  return root?.fsType === 'cgroup2' ? 2 : 1;
}

/** cgroup v1 hierarchies under /sys/fs/cgroup (the last mount of each point wins). */
export function cgroupV1Hierarchies(mounts: MountEntry[]): MountEntry[] {
  const byPoint = new Map<string, MountEntry>();
  for (const m of mounts) {
    if (m.fsType === 'cgroup' && m.mountPoint.startsWith('/sys/fs/cgroup/')) byPoint.set(m.mountPoint, m);
  }
  return [...byPoint.values()];
}

/** Capability numbers from linux/capability.h that the node cares about. */
export const CAP_SYS_RESOURCE = 24;

/** Whether a capability is in the bounding set, read from the CapBnd line of /proc/self/status. */
export function hasBoundingCapability(status: string, capability: number): boolean {
  const match = /^CapBnd:\s*([0-9a-f]+)$/m.exec(status);
  if (!match) return false;
  return ((BigInt(`0x${match[1]}`) >> BigInt(capability)) & 1n) === 1n;
}
