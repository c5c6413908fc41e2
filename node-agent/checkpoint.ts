// Sleep mode checkpoint, in the control plane: its daemons (kine, kube-apiserver,
// kube-controller-manager, kube-scheduler; plain processes, no nested PID namespace) are dumped with
// CRIU into CHECKPOINT.dir on the node's volume and stopped; at the next start of the container they
// are restored from there, the API comes back with its memory instead of booting.
//
// - Each daemon is its own process tree, dumped on its own: the clients first, the datastore last,
//   so that nothing writes to the datastore once it is dumped. CRIU kills each tree it dumped; the
//   supervisor holds them, so none is started again.
// - Established TCP connections are closed, not kept (`--tcp-close`): every connection here is a
//   client of the API server or of kine, and client-go and the etcd client dial again. A restore
//   happens in a new network namespace anyway; the container's address is fixed, the listening
//   sockets come back as they were.
// - A daemon's stdout and stderr are sockets to this agent (libuv's stdio pairs). Their peers stay
//   outside the dump (`--external unix[inode]`); at the restore, new pairs made for criu take their
//   place (`--inherit-fd`), so the output goes on to the log files and the output watchers.
// - A restore needs every process and thread id free that the daemons had. The daemons are started
//   with ids from CHECKPOINT.pidBase up, and a fresh container restores before it starts anything
//   that could take such ids (the agent's own few processes stay far below).
// - Restored daemons are children of tini, not of this agent: the supervisor adopts them by process id.
// - The images are used once: removed after a restore, and after a failed one, which falls back to a
//   normal start (copying criu's log to the log folder first).

import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { copyFile, mkdir, readdir, readFile, readlink, rm, stat, writeFile } from 'node:fs/promises';
import { connect, createServer, type Server } from 'node:net';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { writeFileAtomic } from '../shared/atomic-write.js';
import { CHECKPOINT, type CheckpointReport } from '../shared/contract.js';
import { log } from './log.js';
import { LOG_DIR, type ServiceSpec, type Supervisor } from './supervisor.js';

/** The daemons a checkpoint takes, in the order they start (and are restored); dumped in reverse. */
export const CHECKPOINTED_DAEMONS = ['kine', 'kube-apiserver', 'kube-controller-manager', 'kube-scheduler'];

const MANIFEST = join(CHECKPOINT.dir, 'manifest.json');
const NS_LAST_PID = '/proc/sys/kernel/ns_last_pid';
const REQUEST = 'checkpoint';

/** One dumped daemon: its process id (a restore gives it the same) and its output sockets' inodes. */
export interface DumpedDaemon {
  name: string;
  pid: number;
  stdout: number;
  stderr: number;
}

export interface CheckpointManifest {
  version: 1;
  at: string;
  daemons: DumpedDaemon[];
}

/** The inode of a socket from its /proc/<pid>/fd link (`socket:[123]`). */
export function socketInode(link: string): number {
  const match = /^socket:\[(\d+)\]$/.exec(link);
  if (!match) throw new Error(`expected a socket, found ${link}`);
  return Number(match[1]);
}

/**
 * Options both directions share: a job of the agent's session, TCP connections closed, file locks
 * kept, and cgroups left alone: every daemon lives in the container's own cgroup, which a restore
 * (criu runs there) gives them anyway, and a cgroup v2 host mounts the hierarchy read-only in a node.
 */
const COMMON = ['--shell-job', '--tcp-close', '--file-locks', '--manage-cgroups=ignore'];

export function dumpArgs(daemon: DumpedDaemon, dir: string): string[] {
  return [
    'dump',
    '--tree',
    String(daemon.pid),
    '--images-dir',
    dir,
    ...COMMON,
    '--external',
    `unix[${daemon.stdout}]`,
    '--external',
    `unix[${daemon.stderr}]`,
    '--log-file',
    'dump.log',
  ];
}

/** criu is given the new stdout and stderr as its descriptors 3 and 4. */
export function restoreArgs(daemon: DumpedDaemon, dir: string): string[] {
  return [
    'restore',
    '--images-dir',
    dir,
    '--restore-detached',
    ...COMMON,
    '--inherit-fd',
    `fd[3]:socket:[${daemon.stdout}]`,
    '--inherit-fd',
    `fd[4]:socket:[${daemon.stderr}]`,
    '--log-file',
    'restore.log',
  ];
}

export function parseManifest(text: string): CheckpointManifest {
  const value = JSON.parse(text) as Partial<CheckpointManifest>;
  const positive = (n: unknown) => Number.isInteger(n) && (n as number) > 0;
  if (
    value.version !== 1 ||
    !Array.isArray(value.daemons) ||
    value.daemons.length === 0 ||
    !value.daemons.every(
      (d) =>
        CHECKPOINTED_DAEMONS.includes(d.name) && positive(d.pid) && positive(d.stdout) && positive(d.stderr),
    )
  ) {
    throw new Error('the checkpoint manifest is not one this agent wrote');
  }
  return value as CheckpointManifest;
}

/**
 * The lines of a criu log that say why it failed. Some errors criu reports and goes on from (it may
 * not raise its own open-file limit without CAP_SYS_RESOURCE) are left out.
 */
export function criuFailure(logText: string): string {
  const errors = logText
    .split('\n')
    .filter((line) => /\bError\b/.test(line) && !line.includes('RLIMIT_NOFILE'))
    .map((line) => line.replace(/^\([\d.]+\)\s*/, '').trim());
  return errors.slice(0, 3).join('; ') || 'no error in its log';
}

/** The daemons of this control plane a checkpoint takes, in start order. */
export function daemonsToCheckpoint(running: string[]): string[] {
  return CHECKPOINTED_DAEMONS.filter((name) => running.includes(name));
}

interface CriuRun {
  code: number | null;
  output: string;
  /** The parent's ends of descriptors 3 and up, still open after criu ends. */
  extra: Readable[];
}

function runCriu(args: string[], extraPipes = 0): Promise<CriuRun> {
  return new Promise((resolve, reject) => {
    const child = spawn('criu', args, {
      stdio: ['ignore', 'pipe', 'pipe', ...Array<'pipe'>(extraPipes).fill('pipe')],
    });
    let output = '';
    child.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.once('error', reject);
    // 'exit', not 'close': a restored daemon keeps the other ends of the extra pairs open.
    child.once('exit', (code) =>
      resolve({ code, output, extra: child.stdio.slice(3, 3 + extraPipes) as Readable[] }),
    );
  });
}

async function criuLog(dir: string, file: string): Promise<string> {
  const text = await readFile(join(dir, file), 'utf8').catch(() => '');
  // Kept where a failure can be looked at after the images are gone.
  await copyFile(join(dir, file), join(LOG_DIR, `criu-${file}`)).catch(() => undefined);
  return text;
}

/** Makes the next process ids of this PID namespace start above `floor`. */
export async function raisePidFloor(floor: number): Promise<void> {
  try {
    const last = Number((await readFile(NS_LAST_PID, 'utf8')).trim());
    if (last < floor) await writeFile(NS_LAST_PID, String(floor));
  } catch (error) {
    log(`cannot set ${NS_LAST_PID}: ${(error as Error).message}; a checkpoint may not restore`);
  }
}

async function highestThreadId(pids: number[]): Promise<number> {
  let highest = 0;
  for (const pid of pids) {
    const tasks = await readdir(`/proc/${pid}/task`).catch(() => [] as string[]);
    for (const task of tasks) highest = Math.max(highest, Number(task));
  }
  return highest;
}

async function folderBytes(dir: string): Promise<number> {
  let total = 0;
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    total += entry.isDirectory() ? await folderBytes(path) : (await stat(path)).size;
  }
  return total;
}

/**
 * Dumps the daemons into CHECKPOINT.dir and leaves them stopped. On failure the images are removed
 * and the daemons that were stopped start again.
 */
export async function checkpointDaemons(supervisor: Supervisor, names: string[]): Promise<CheckpointReport> {
  const started = Date.now();
  await rm(CHECKPOINT.dir, { recursive: true, force: true });
  await mkdir(CHECKPOINT.dir, { recursive: true });
  supervisor.hold(names);
  try {
    const dumped: DumpedDaemon[] = [];
    for (const name of [...names].reverse()) {
      const pid = supervisor.pidOf(name);
      if (pid === undefined) throw new Error(`${name} is not running`);
      const daemon: DumpedDaemon = {
        name,
        pid,
        stdout: socketInode(await readlink(`/proc/${pid}/fd/1`)),
        stderr: socketInode(await readlink(`/proc/${pid}/fd/2`)),
      };
      const dir = join(CHECKPOINT.dir, name);
      await mkdir(dir);
      const at = Date.now();
      const result = await runCriu(dumpArgs(daemon, dir));
      if (result.code !== 0) {
        const why = criuFailure(await criuLog(dir, 'dump.log'));
        throw new Error(`criu could not dump ${name}: ${why || result.output.trim()}`);
      }
      log(`checkpointed ${name} (pid ${pid}) in ${Date.now() - at}ms`);
      dumped.unshift(daemon);
    }
    const manifest: CheckpointManifest = { version: 1, at: new Date().toISOString(), daemons: dumped };
    // Last: a checkpoint without its manifest is not restored.
    await writeFileAtomic(MANIFEST, JSON.stringify(manifest));
  } catch (error) {
    await rm(CHECKPOINT.dir, { recursive: true, force: true });
    supervisor.release(names);
    throw error;
  }
  return { daemons: names, bytes: await folderBytes(CHECKPOINT.dir), ms: Date.now() - started };
}

/**
 * Restores the daemons of a checkpoint, if there is one, and adopts them with the given specs (by
 * name). Returns whether they run; when not, nothing of the checkpoint is left running or on disk.
 */
export async function restoreDaemons(supervisor: Supervisor, specs: ServiceSpec[]): Promise<boolean> {
  if (!existsSync(CHECKPOINT.dir)) return false;
  const started = Date.now();
  const restored: number[] = [];
  try {
    if (!existsSync(MANIFEST)) throw new Error('the checkpoint is incomplete (no manifest)');
    const manifest = parseManifest(await readFile(MANIFEST, 'utf8'));
    const names = manifest.daemons.map((d) => d.name).join(',');
    if (names !== specs.map((s) => s.name).join(',')) {
      throw new Error(`the checkpoint holds ${names}, this control plane runs ${specs.map((s) => s.name)}`);
    }
    for (const daemon of manifest.daemons) {
      const dir = join(CHECKPOINT.dir, daemon.name);
      const at = Date.now();
      const result = await runCriu(restoreArgs(daemon, dir), 2);
      if (result.code !== 0) {
        for (const stream of result.extra) stream.destroy();
        const why = criuFailure(await criuLog(dir, 'restore.log'));
        throw new Error(`criu could not restore ${daemon.name}: ${why || result.output.trim()}`);
      }
      restored.push(daemon.pid);
      supervisor.adopt(
        specs.find((s) => s.name === daemon.name)!,
        daemon.pid,
        result.extra,
      );
      log(`restored ${daemon.name} (pid ${daemon.pid}) in ${Date.now() - at}ms`);
    }
    // Threads and processes made from now on take ids above the restored ones: the next checkpoint
    // then restores as well as this one did.
    await raisePidFloor(await highestThreadId(restored));
    log(`restored the control plane from its checkpoint of ${manifest.at} in ${Date.now() - started}ms`);
    return true;
  } catch (error) {
    log(`restoring the checkpoint failed, starting anew: ${(error as Error).message}`);
    await supervisor.reset();
    return false;
  } finally {
    await rm(CHECKPOINT.dir, { recursive: true, force: true });
  }
}

type Answer = { ok: true; report: CheckpointReport } | { ok: false; message: string };

/**
 * Listens on CHECKPOINT.socket (root only) for the `checkpoint` command. One checkpoint at a time;
 * after one, the daemons are stopped and another is refused.
 */
export async function serveCheckpoints(supervisor: Supervisor, daemons: string[]): Promise<Server> {
  let busy = false;
  const server = createServer((socket) => {
    let request = '';
    socket.setEncoding('utf8');
    socket.on('error', () => undefined);
    socket.on('data', (chunk: string) => {
      request += chunk;
      if (!request.includes('\n')) return;
      socket.pause();
      const answer = async (): Promise<Answer> => {
        if (request.trim() !== REQUEST) return { ok: false, message: `unknown request ${request.trim()}` };
        if (busy) return { ok: false, message: 'a checkpoint is already under way' };
        busy = true;
        try {
          return { ok: true, report: await checkpointDaemons(supervisor, daemons) };
        } catch (error) {
          return { ok: false, message: (error as Error).message };
        } finally {
          busy = false;
        }
      };
      void answer().then((a) => socket.end(`${JSON.stringify(a)}\n`));
    });
  });
  await rm(CHECKPOINT.socket, { force: true });
  await mkdir(join(CHECKPOINT.socket, '..'), { recursive: true });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    // Only root may connect: the umask is narrowed while the socket file is made.
    const umask = process.umask(0o177);
    server.listen(CHECKPOINT.socket, () => {
      process.umask(umask);
      resolve();
    });
  });
  server.unref();
  return server;
}

/** The `checkpoint` command: asks the running agent for a checkpoint and returns its report. */
export async function requestCheckpoint(timeoutMs = 300_000): Promise<CheckpointReport> {
  const reply = await new Promise<string>((resolve, reject) => {
    const socket = connect(CHECKPOINT.socket);
    let text = '';
    socket.setEncoding('utf8');
    socket.setTimeout(timeoutMs, () => socket.destroy(new Error('the agent did not answer in time')));
    socket.once('connect', () => socket.write(`${REQUEST}\n`));
    socket.on('data', (chunk: string) => (text += chunk));
    socket.once('end', () => resolve(text));
    socket.once('error', (error: NodeJS.ErrnoException) =>
      reject(
        error.code === 'ENOENT' || error.code === 'ECONNREFUSED'
          ? new Error('the control plane is not ready: its agent takes no checkpoint yet')
          : error,
      ),
    );
  });
  let answer: Answer;
  try {
    answer = JSON.parse(reply) as Answer;
  } catch {
    throw new Error(`the agent answered "${reply.trim()}"`);
  }
  if (!answer.ok) throw new Error(answer.message);
  return answer.report;
}
