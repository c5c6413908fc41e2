// node-agent: the entry point of every node container (under tini, which reaps orphans).
// `node-agent worker` prepares the container, runs containerd and the preloaded images, and
// marks the node ready for the CLI by writing /run/vind/ready.

import { mkdir, writeFile } from 'node:fs/promises';
import { importPreloadedImages, startContainerd } from './containerd.js';
import { log } from './log.js';
import { prepareNode } from './prepare.js';
import { Supervisor } from './supervisor.js';

export const READY_FILE = '/run/vind/ready';
const PAUSE_IMAGE = process.env.VIND_PAUSE_IMAGE ?? 'vind.dev/pause:3.10';

const ROLES = ['worker'] as const;
type Role = (typeof ROLES)[number];

async function markReady(role: Role): Promise<void> {
  await mkdir('/run/vind', { recursive: true });
  await writeFile(READY_FILE, JSON.stringify({ role, at: new Date().toISOString() }));
}

async function runWorker(supervisor: Supervisor): Promise<void> {
  const environment = await prepareNode();
  await startContainerd(supervisor, {
    sandboxImage: PAUSE_IMAGE,
    restrictOomScoreAdj: !environment.canLowerOomScore,
    cgroupDriver: 'cgroupfs',
    cniBinDir: '/usr/lib/cni',
    cniConfDir: '/etc/cni/net.d',
  });
  await importPreloadedImages();
  await markReady('worker');
  log('container runtime ready');
}

async function main(): Promise<void> {
  const role = (process.argv[2] ?? 'worker') as Role;
  if (!ROLES.includes(role)) {
    log(`unknown role "${role}": use one of ${ROLES.join(', ')}`);
    process.exit(2);
  }
  const supervisor = new Supervisor();
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log(`${signal}: stopping`);
    void supervisor.stopAll().then(() => process.exit(0));
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  try {
    await runWorker(supervisor);
  } catch (error) {
    log(`failed: ${(error as Error).message}`);
    await supervisor.stopAll();
    process.exit(1);
  }
}

void main();
