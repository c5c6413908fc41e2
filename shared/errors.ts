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
