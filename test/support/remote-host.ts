// The stand-in for a remote machine (`scripts/remote-host.sh`), for tests: a network namespace with a
// Docker engine of its own, joined to this host by a veth pair, behind NAT (`nat`) or reachable from
// the host (`public`). The script's header says what the firewall allows in each mode.

import { join } from 'node:path';
import Docker from 'dockerode';
import { execa } from 'execa';
import { DockerRuntime, dockerRuntime } from '../../cli/runtime/docker-runtime.js';
import { PROJECT_ROOT } from '../../images/project-root.js';

export type RemoteMode = 'nat' | 'public';

/** The stand-in's addresses and names, as the script makes them. */
export const REMOTE_HOST = {
  /** This host's end of the veth: the only address of the host the stand-in can reach. */
  hostAddress: '10.251.0.1',
  /** The stand-in's own address, where ports its engine publishes are (in `public` mode) reachable. */
  remoteAddress: '10.251.0.2',
  hostInterface: 'vind-rh0',
  namespace: 'vind-remote',
  /** The default bridge of the stand-in's engine; this host has no route to it, as to a LAN machine's. */
  bridgeSubnet: '10.251.1.0/24',
  socket: '/run/vind-remote/docker.sock',
} as const;

export const REMOTE_HOST_SCRIPT = join(PROJECT_ROOT, 'scripts', 'remote-host.sh');

/** A dockerode client on the stand-in's engine. */
export const remoteDocker = new Docker({ socketPath: REMOTE_HOST.socket });

let runtime: DockerRuntime | undefined;

/** The project's runtime on the stand-in's engine (exec, files, save and load), as `DOCKER_HOST` would give. */
export function remoteRuntime(): DockerRuntime {
  runtime ??= new DockerRuntime({
    endpoint: { socketPath: REMOTE_HOST.socket },
    description: `unix://${REMOTE_HOST.socket} (the remote-host stand-in)`,
    source: 'DOCKER_HOST',
    tried: [],
  });
  return runtime;
}

async function script(args: string[]): Promise<string> {
  const result = await execa('bash', [REMOTE_HOST_SCRIPT, ...args], {
    reject: false,
    stdin: 'ignore',
    timeout: 180_000,
  });
  if (result.exitCode !== 0) {
    throw new Error(
      `remote-host.sh ${args.join(' ')} failed (${result.exitCode}): ${`${result.stderr}\n${result.stdout}`.trim()}`,
    );
  }
  return result.stdout;
}

/** Starts the stand-in (or only sets the mode of a running one). */
export async function startRemoteHost(mode: RemoteMode = 'nat'): Promise<void> {
  await script(['start', mode]);
}

/** Stops it and removes everything it made but its data root (the image cache), unless `purge`. */
export async function stopRemoteHost(options: { purge?: boolean } = {}): Promise<void> {
  await script(['stop', ...(options.purge ? ['--purge'] : [])]);
}

export async function setRemoteMode(mode: RemoteMode): Promise<void> {
  await script(['mode', mode]);
}

export interface RemoteHostStatus {
  running: boolean;
  mode?: RemoteMode;
  enginePid?: number;
}

export async function remoteHostStatus(): Promise<RemoteHostStatus> {
  const result = await execa('bash', [REMOTE_HOST_SCRIPT, 'status'], { reject: false, stdin: 'ignore' });
  const match = /running, mode (nat|public), engine pid (\d+)/.exec(result.stdout);
  if (result.exitCode !== 0 || !match) return { running: false };
  return { running: true, mode: match[1] as RemoteMode, enginePid: Number(match[2]) };
}

/**
 * Copies an image from this host's engine into the stand-in's (`docker save | docker load`), unless
 * the stand-in already has that reference at the same image id. Returns whether it copied.
 */
export async function copyImageToRemote(reference: string): Promise<{ copied: boolean; id: string }> {
  const local = await dockerRuntime().client.getImage(reference).inspect();
  const there = await remoteDocker
    .getImage(reference)
    .inspect()
    .catch(() => undefined);
  if (there?.Id === local.Id) return { copied: false, id: local.Id };
  await remoteRuntime().loadImage(await dockerRuntime().saveImages([reference]));
  const loaded = await remoteDocker.getImage(reference).inspect();
  if (loaded.Id !== local.Id) {
    throw new Error(`copying ${reference} to the stand-in gave image ${loaded.Id}, expected ${local.Id}`);
  }
  return { copied: true, id: local.Id };
}
