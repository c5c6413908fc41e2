// Every failure the user can act on is a VindError: one line saying what is wrong and how to fix it.

export class VindError extends Error {
  constructor(
    message: string,
    readonly exitCode = 1,
  ) {
    super(message);
    this.name = 'VindError';
  }
}

/** Raised when the user interrupts (Ctrl-C); cleanup runs, then the process exits 130. */
export class InterruptedError extends VindError {
  constructor() {
    super('interrupted', 130);
  }
}

export function describeError(error: unknown): string {
  if (error instanceof Error) return error.message.split('\n')[0] ?? error.message;
  return String(error);
}

/**
 * What `--verbose` adds under the one line: the error and each of its causes, with its stack trace
 * (or its value when it is not an Error). A cycle of causes is cut.
 */
export function errorChain(error: unknown): string {
  const lines: string[] = [];
  const seen = new Set<unknown>();
  let current: unknown = error;
  for (let depth = 0; current !== undefined && !seen.has(current); depth++) {
    seen.add(current);
    const heading = depth === 0 ? 'error' : `caused by`;
    if (current instanceof Error) {
      lines.push(`${heading}: ${current.stack ?? `${current.name}: ${current.message}`}`);
      current = current.cause;
    } else {
      lines.push(`${heading}: ${String(current)}`);
      current = undefined;
    }
  }
  return `${lines.join('\n')}\n`;
}
