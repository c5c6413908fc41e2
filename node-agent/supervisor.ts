// Runs the node's daemons as child processes, restarts any that dies (with back-off), and stops
// them in reverse order when the container is asked to stop.

import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, mkdirSync, type WriteStream } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
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

interface Service {
  spec: ServiceSpec;
  child?: ChildProcess;
  restarts: number;
  startedAt: number;
  logStream: WriteStream;
  timer?: NodeJS.Timeout;
}

const MAX_BACKOFF_MS = 30_000;

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
    const service: Service = {
      spec,
      restarts: 0,
      startedAt: 0,
      logStream: createWriteStream(join(this.logDir, `${spec.name}.log`), { flags: 'a' }),
    };
    this.services.push(service);
    this.launch(service);
  }

  private launch(service: Service): void {
    const { spec } = service;
    service.startedAt = Date.now();
    const child = spawn(spec.command, spec.args, {
      // Every daemon here is a Go program. A lower GC target keeps idle clusters small on laptops,
      // at a CPU cost that idle daemons do not notice.
      env: { ...process.env, GOGC: '50', ...spec.env },
      stdio: ['ignore', 'pipe', 'pipe'],
      // With a uid, libuv also drops the supplementary groups before the exec.
      ...(spec.uid !== undefined ? { uid: spec.uid } : {}),
      ...(spec.gid !== undefined ? { gid: spec.gid } : {}),
    });
    service.child = child;
    child.stdout?.pipe(service.logStream, { end: false });
    child.stderr?.pipe(service.logStream, { end: false });
    const onOutput = spec.onOutput;
    if (onOutput) {
      for (const stream of [child.stdout, child.stderr]) {
        if (stream) createInterface({ input: stream, crlfDelay: Infinity }).on('line', onOutput);
      }
    }
    if (spec.echo) {
      child.stdout?.pipe(process.stdout, { end: false });
      child.stderr?.pipe(process.stderr, { end: false });
    }
    child.on('error', (error) => log(`${spec.name}: could not start: ${error.message}`));
    child.on('exit', (code, signal) => {
      service.child = undefined;
      if (this.stopping) return;
      if (Date.now() - service.startedAt > 60_000) service.restarts = 0;
      const delay = restartDelay(service.restarts++);
      log(`${spec.name} exited (${signal ?? `code ${code}`}); restarting in ${delay}ms`);
      service.timer = setTimeout(() => this.launch(service), delay);
    });
    log(`started ${spec.name} (pid ${child.pid})`);
  }

  /** Stops every daemon and forgets them, so that a new attempt at the role starts from nothing. */
  async reset(): Promise<void> {
    await this.stopAll();
    for (const service of this.services) service.logStream.end();
    this.services.length = 0;
    this.stopping = false;
  }

  isRunning(name: string): boolean {
    return this.services.some((s) => s.spec.name === name && s.child !== undefined);
  }

  async stopAll(timeoutMs = 10_000): Promise<void> {
    this.stopping = true;
    for (const service of [...this.services].reverse()) {
      clearTimeout(service.timer);
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
