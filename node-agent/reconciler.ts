// The loop behind every watch-driven reconcile in the agent (pod routes, LoadBalancer announcing and
// allocation): one pass at a time against the newest view. A change during a pass asks for another
// pass after it; a pass that fails is tried again after `retryMs`.

import { log } from './log.js';

/** Returns `kick`: call it whenever what the pass reads has changed. */
export function reconciler(
  pass: () => Promise<void>,
  options: { logPrefix: string; retryMs: number; signal: AbortSignal },
): () => void {
  const { logPrefix, retryMs, signal } = options;
  let dirty = false;
  let running = false;
  let retry: NodeJS.Timeout | undefined;
  const kick = (): void => {
    dirty = true;
    void run();
  };
  const run = async () => {
    if (running) return;
    running = true;
    try {
      while (dirty && !signal.aborted) {
        dirty = false;
        await pass();
      }
    } catch (error) {
      log(`${logPrefix}: ${(error as Error).message.split('\n')[0]}`);
      clearTimeout(retry);
      retry = setTimeout(kick, retryMs);
    } finally {
      running = false;
    }
  };
  signal.addEventListener('abort', () => clearTimeout(retry));
  return kick;
}
