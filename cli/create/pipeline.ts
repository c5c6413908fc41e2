// Runs a list of named steps, as kind runs its create actions. The runner owns what every step
// shares: the reporter (each step's line and duration), the undo list (each step registers how to
// take back what it made, run last-first on failure or Ctrl-C unless the user asked to keep it), the
// abort signal, and one deadline for the whole run, so `--wait 5m` means five minutes in total.

import { InterruptedError } from '../../shared/errors.js';
import type { Reporter } from '../progress.js';

export interface StepContext {
  signal: AbortSignal;
  /** Absolute time (ms since the epoch) by which everything must be done. */
  deadline: number;
  /** Registers how to take back what the step made; runs last-first if a later step fails. */
  undo(action: () => Promise<void>): void;
  /** Adds a detail to the step's closing line ("cached", a subnet, a path). */
  note(text: string): void;
  /** Tells the user something worth knowing that does not stop the run. */
  warn(message: string): void;
}

export interface Step<S> {
  /** The line shown while the step runs; may depend on the state (`join 2 workers`). */
  name: string | ((state: S) => string);
  /** A step that has nothing to do for this state is left out, silently. */
  skip?(state: S): boolean;
  run(state: S, context: StepContext): Promise<void>;
}

export interface PipelineOptions {
  reporter: Reporter;
  signal: AbortSignal;
  deadline: number;
  /** Keep what was made when a step fails (for inspection) instead of undoing it. */
  retain: boolean;
  /** Said when a failed run keeps what it made. */
  retainMessage?: string;
}

export async function runPipeline<S>(steps: Step<S>[], state: S, options: PipelineOptions): Promise<S> {
  const undo: (() => Promise<void>)[] = [];
  try {
    for (const step of steps) {
      if (options.signal.aborted) throw new InterruptedError();
      if (step.skip?.(state)) continue;
      const name = typeof step.name === 'function' ? step.name(state) : step.name;
      await options.reporter.step(name, (note) =>
        step.run(state, {
          signal: options.signal,
          deadline: options.deadline,
          undo: (action) => undo.push(action),
          note,
          warn: (message) => options.reporter.warn(message),
        }),
      );
      // A Ctrl-C during the last step must not count as success.
      if (options.signal.aborted) throw new InterruptedError();
    }
    return state;
  } catch (error) {
    if (options.retain) {
      if (options.retainMessage) options.reporter.warn(options.retainMessage);
    } else {
      // Every action runs, even when one fails: leaving less behind is always better.
      for (const action of undo.reverse()) await action().catch(() => undefined);
    }
    throw error;
  }
}

/**
 * Runs parallel work and waits for all of it before failing, so that everything the branches made is
 * registered for undo by the time the failure reaches the runner.
 */
export async function allSettledOrThrow(work: Promise<unknown>[]): Promise<void> {
  const results = await Promise.allSettled(work);
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
}
