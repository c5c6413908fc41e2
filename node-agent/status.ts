// The node's state for the CLI (STATUS_FILE of the contract). The CLI reads it with `docker exec`
// while it waits; a failed phase carries the one line to show the user.

import { mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import { writeFileAtomic } from '../shared/atomic-write.js';
import { type NodePhase, type NodeStatus, STATUS_FILE } from '../shared/contract.js';
import { PermanentError } from '../shared/poll.js';
import { log } from './log.js';

export async function setStatus(phase: NodePhase, message: string, reason?: string): Promise<void> {
  const status: NodeStatus = { phase, message, at: new Date().toISOString(), ...(reason ? { reason } : {}) };
  await mkdir(dirname(STATUS_FILE), { recursive: true });
  await writeFileAtomic(STATUS_FILE, JSON.stringify(status));
  log(`${phase}: ${message}`);
}

/** A node's settings, or a failure no retry can mend: the container was made with bad settings. */
export function settingsOrStop<T>(read: () => T): T {
  try {
    return read();
  } catch (error) {
    throw new PermanentError((error as Error).message);
  }
}

/** Whether an error says that trying again cannot help (itself, or what it was caused by). */
export function isPermanent(error: unknown): boolean {
  for (let at = error; at instanceof Error; at = at.cause) {
    if (at instanceof PermanentError) return true;
  }
  return false;
}

/** Back-off between attempts at a role: 2 s doubling to a minute. */
export function retryDelay(attempt: number): number {
  return Math.min(60_000, 2_000 * 2 ** Math.min(attempt, 5));
}

/** An error that names its kind of failure for the CLI (STATUS_REASONS of the contract). */
export class ReasonedError extends Error {
  constructor(
    message: string,
    readonly reason: string,
  ) {
    super(message);
  }
}
