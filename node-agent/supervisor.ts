// Runs the node's daemons as child processes, restarts any that dies (with back-off), and stops
// them in reverse order when the container is asked to stop. A daemon restored from a checkpoint is
// no child of this agent (tini adopts it): it is adopted here by its process id, watched through
// /proc, and once it is gone it is started again as a child like any other.

import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, mkdirSync, readFileSync, type WriteStream } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';
import { log } from './log.js';

export const LOG_DIR = '/var/log/vind';

export interface ServiceSpec {
  name: string;
  command: string;
  args: string[];
  env?: Record<string, string>;
  /** Sees every line the daemon writes (stdout and stderr), e.g. to spot a failure that will not heal. */
  onOutput?: (line: string) => void;
  /** Run as this user and group instead of the agent's own (root). */
  uid?: number;
  gid?: number;
  /** Copy the output to the agent's stdout too (`docker logs`), besides the log file. */
  echo?: boolean;
}

/** A running daemon this agent did not start. */
interface Adopted {
  pid: number;
  /** Field 22 of /proc/<pid>/stat when adopted: a process id used again is not the same process. */
  startTime: string;
  watch: NodeJS.Timeout;
}

interface Service {
  spec: ServiceSpec;
  child?: ChildProcess;
  adopted?: Adopted;
  /** Held daemons are not restarted when they end (a checkpoint stops them on purpose). */
  held: boolean;
  restarts: number;
  startedAt: number;
  logStream: WriteStream;
  timer?: NodeJS.Timeout;
}

const MAX_BACKOFF_MS = 30_000;
const ADOPTED_WATCH_MS = 500;

/** The start time of a live process (field 22 of /proc/<pid>/stat), or undefined for none or a zombie. */
export function processStartTime(pid: number, procRoot = '/proc'): string | undefined {
  let stat: string;
  try {
    stat = readFileSync(`${procRoot}/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  if (fields[0] === 'Z' || fields[0] === 'X') return undefined;
  return fields[19];
}

/** Back-off after a crash: doubles per quick restart, resets after a run of a minute or more. */
export function restartDelay(restarts: number): number {
  return Math.min(MAX_BACKOFF_MS, 500 * 2 ** Math.min(restarts, 10));
}

export class Supervisor {
  private readonly services: Service[] = [];
  private stopping = false;

  constructor(private readonly logDir = LOG_DIR) {
    mkdirSync(logDir, { recursive: true });
  }

  start(spec: ServiceSpec): void {
    this.launch(this.add(spec));
  }

  /**
   * Takes over a running daemon that is no child of this agent, with its output: it is watched by its
   * process id and stopped by signal, and when it ends it is started again from its spec.
   */
  adopt(spec: ServiceSpec, pid: number, output: Readable[]): void {
    const startTime = processStartTime(pid);
    const service = this.add(spec);
    service.startedAt = Date.now();
    this.wireOutput(service, output);
    if (startTime === undefined) {
      this.ended(service, 'gone before it was adopted');
      return;
    }
    const watch = setInterval(() => {
      if (processStartTime(pid) === startTime) return;
      clearInterval(watch);
      service.adopted = undefined;
      this.ended(service, 'ended');
    }, ADOPTED_WATCH_MS);
    service.adopted = { pid, startTime, watch };
    log(`adopted ${spec.name} (pid ${pid})`);
  }

  private add(spec: ServiceSpec): Service {
    const service: Service = {
      spec,
      held: false,
      restarts: 0,
      startedAt: 0,
      logStream: createWriteStream(join(this.logDir, `${spec.name}.log`), { flags: 'a' }),
    };
    this.services.push(service);
    return service;
  }

  /** A daemon's stdout and stderr into its log file, its output watcher and, if asked, `docker logs`. */
  private wireOutput(service: Service, streams: (Readable | null | undefined)[]): void {
    const { spec } = service;
    streams.forEach((stream, index) => {
      if (!stream) return;
      stream.pipe(service.logStream, { end: false });
      if (spec.onOutput) createInterface({ input: stream, crlfDelay: Infinity }).on('line', spec.onOutput);
      if (spec.echo) stream.pipe(index === 0 ? process.stdout : process.stderr, { end: false });
    });
  }

  /** A daemon ended: started again after its back-off, unless the agent stops or holds it. */
  private ended(service: Service, how: string): void {
    if (this.stopping || service.held) return;
    if (Date.now() - service.startedAt > 60_000) service.restarts = 0;
    const delay = restartDelay(service.restarts++);
    log(`${service.spec.name} ${how}; restarting in ${delay}ms`);
    service.timer = setTimeout(() => this.launch(service), delay);
  }

  private launch(service: Service): void {
    const { spec } = service;
    service.startedAt = Date.now();
    const child = spawn(spec.command, spec.args, {
      // Every daemon here is a Go program. A lower GC target keeps idle clusters small on laptops,
      // at a CPU cost that idle daemons do not notice. Go 1.24 listens with MPTCP where the kernel has
      // it; CRIU cannot checkpoint an MPTCP socket, and plain TCP loses nothing on one machine.
      env: { ...process.env, GOGC: '50', GODEBUG: 'multipathtcp=0', ...spec.env },
      stdio: ['ignore', 'pipe', 'pipe'],
      // With a uid, libuv also drops the supplementary groups before the exec.
      ...(spec.uid !== undefined ? { uid: spec.uid } : {}),
      ...(spec.gid !== undefined ? { gid: spec.gid } : {}),
    });
    service.child = child;
    this.wireOutput(service, [child.stdout, child.stderr]);
    child.on('error', (error) => log(`${spec.name}: could not start: ${error.message}`));
    child.on('exit', (code, signal) => {
      service.child = undefined;
      this.ended(service, `exited (${signal ?? `code ${code}`})`);
    });
    log(`started ${spec.name} (pid ${child.pid})`);
  }

  /** The process id of a running daemon, started or adopted. */
  pidOf(name: string): number | undefined {
    const service = this.services.find((s) => s.spec.name === name);
    return service?.child?.pid ?? service?.adopted?.pid;
  }

  /** Daemons that end from now on stay ended (a pending restart is cancelled) until released. */
  hold(names: string[]): void {
    for (const service of this.services.filter((s) => names.includes(s.spec.name))) {
      service.held = true;
      clearTimeout(service.timer);
    }
  }

  /** Lets held daemons be restarted again, and starts those that ended while held. */
  release(names: string[]): void {
    for (const service of this.services.filter((s) => names.includes(s.spec.name))) {
      service.held = false;
      if (!this.stopping && !service.child && !service.adopted) this.launch(service);
    }
  }

  /** Stops every daemon and forgets them, so that a new attempt at the role starts from nothing. */
  async reset(): Promise<void> {
    await this.stopAll();
    for (const service of this.services) service.logStream.end();
    this.services.length = 0;
    this.stopping = false;
  }

  isRunning(name: string): boolean {
    return this.services.some(
      (s) => s.spec.name === name && (s.child !== undefined || s.adopted !== undefined),
    );
  }

  async stopAll(timeoutMs = 10_000): Promise<void> {
    this.stopping = true;
    for (const service of [...this.services].reverse()) {
      clearTimeout(service.timer);
      if (service.adopted) {
        await stopAdopted(service.adopted, timeoutMs);
        service.adopted = undefined;
        continue;
      }
      const child = service.child;
      if (!child || child.exitCode !== null) continue;
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
      await exited;
      clearTimeout(timer);
    }
  }
}

/** SIGTERM, then SIGKILL after the timeout, to a process that is no child: watched until it is gone. */
async function stopAdopted(adopted: Adopted, timeoutMs: number): Promise<void> {
  clearInterval(adopted.watch);
  const alive = () => processStartTime(adopted.pid) === adopted.startTime;
  const signal = (name: NodeJS.Signals) => {
    try {
      process.kill(adopted.pid, name);
    } catch {
      // Gone already.
    }
  };
  if (!alive()) return;
  signal('SIGTERM');
  const deadline = Date.now() + timeoutMs;
  while (alive()) {
    if (Date.now() > deadline) {
      signal('SIGKILL');
      break;
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  while (alive()) await new Promise((resolve) => setTimeout(resolve, 50));
}
