// The one polling helper: ask a probe until it has an answer, the deadline passes or the caller
// aborts. A probe returns undefined for "not yet" and throws for "not yet, and here is why" (the
// last reason is named if time runs out), or throws PermanentError to end the wait at once.

import { InterruptedError } from './errors.js';

/** Thrown by a probe when waiting longer cannot help (a node failed, a hash does not match). */
export class PermanentError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'PermanentError';
  }
}

export class PollTimeoutError extends Error {
  constructor(
    readonly what: string,
    readonly lastError: string | undefined,
    timeoutMs: number,
  ) {
    super(
      `timed out after ${Math.round(timeoutMs / 100) / 10}s waiting for ${what}${lastError ? `: ${lastError}` : ''}`,
    );
    this.name = 'PollTimeoutError';
  }
}

export interface PollOptions {
  /** Absolute time (ms since the epoch) after which the wait fails; or give timeoutMs. */
  deadline?: number;
  timeoutMs?: number;
  intervalMs?: number;
  signal?: AbortSignal;
}

/** Waits `ms`, or less when the signal aborts (then throws InterruptedError). */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  if (signal?.aborted) return Promise.reject(new InterruptedError());
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(timer);
      reject(new InterruptedError());
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

export async function poll<T>(
  what: string,
  probe: () => Promise<T | undefined>,
  options: PollOptions,
): Promise<T> {
  const started = Date.now();
  const deadline = options.deadline ?? started + (options.timeoutMs ?? 60_000);
  const interval = options.intervalMs ?? 200;
  let lastError: string | undefined;
  for (;;) {
    if (options.signal?.aborted) throw new InterruptedError();
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch (error) {
      if (error instanceof PermanentError || error instanceof InterruptedError) throw error;
      lastError = (error as Error).message?.split('\n')[0] ?? String(error);
    }
    const left = deadline - Date.now();
    if (left <= 0) throw new PollTimeoutError(what, lastError, Date.now() - started);
    await sleep(Math.min(interval, left), options.signal);
  }
}
