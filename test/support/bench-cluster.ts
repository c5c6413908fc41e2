// A benchmark's own cluster and scratch folder, removed whatever happens: when the run ends, when it
// fails, and on SIGINT, SIGTERM or SIGHUP (the process then exits with 128 + the signal's number).

import { mkdtemp, rm } from 'node:fs/promises';
import { constants, tmpdir } from 'node:os';
import { join } from 'node:path';
import { removeByLabel, runVind } from './workloads.js';

export function firstLine(text: string): string {
  return text.trim().split('\n')[0] ?? '';
}

export class BenchCluster {
  /** The signal that interrupted the run, if one did. */
  interrupted: NodeJS.Signals | undefined;
  readonly kubeconfig: string;
  readonly env: Record<string, string>;
  private creating: ReturnType<typeof runVind> | undefined;
  private created = false;
  private cleaning: Promise<void> | undefined;

  private constructor(
    readonly name: string,
    readonly scratch: string,
    private readonly stopFirst: () => Promise<void>,
  ) {
    this.kubeconfig = join(scratch, 'kubeconfig');
    this.env = { KUBECONFIG: this.kubeconfig };
    for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
      process.on(signal, () => {
        if (this.interrupted) return;
        this.interrupted = signal;
        process.stderr.write(`\n${signal}: removing cluster ${name} …\n`);
        void this.cleanup().finally(() => process.exit(this.exitCode(false)));
      });
    }
  }

  /** `stopFirst` ends what the bench runs against the cluster before the cluster goes. */
  static async open(
    name: string,
    scratchPrefix: string,
    stopFirst: () => Promise<void> = async () => undefined,
  ): Promise<BenchCluster> {
    return new BenchCluster(name, await mkdtemp(join(tmpdir(), scratchPrefix)), stopFirst);
  }

  /** `vind create` of this cluster with `args`, its kubeconfig in the scratch folder. */
  async create(args: string[]): Promise<Awaited<ReturnType<typeof runVind>>> {
    this.created = true;
    this.creating = runVind(['create', this.name, ...args], this.env);
    try {
      return await this.creating;
    } finally {
      this.creating = undefined;
    }
  }

  cleanup(): Promise<void> {
    this.cleaning ??= (async () => {
      await this.stopFirst();
      // A create under way undoes its own work when interrupted; the delete comes after it.
      if (this.creating) {
        this.creating.kill('SIGINT');
        await this.creating;
      }
      if (this.created) {
        const deleted = await runVind(['delete', this.name], this.env);
        if (deleted.exitCode !== 0) {
          process.stderr.write(`cleanup: vind delete ${this.name}: ${firstLine(deleted.stderr)}\n`);
        }
        // Whatever still carries the cluster's label (a bench's own containers included).
        await removeByLabel(this.name).catch(() => undefined);
      }
      await rm(this.scratch, { recursive: true, force: true });
    })();
    return this.cleaning;
  }

  exitCode(failed: boolean): number {
    if (this.interrupted) return 128 + (constants.signals[this.interrupted] ?? 2);
    return failed ? 1 : 0;
  }
}
