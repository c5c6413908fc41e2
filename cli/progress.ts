// Long work shows each step and how long it took, on stderr, so stdout stays clean for data.

export interface Reporter {
  /** Runs one named step; the work may add a note (such as "cached") to the line that closes it. */
  step<T>(name: string, work: (note: (text: string) => void) => Promise<T>): Promise<T>;
  info(message: string): void;
  warn(message: string): void;
}

export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)}ms`;
  const seconds = ms / 1000;
  if (seconds < 60) return `${seconds.toFixed(1)}s`;
  const minutes = Math.floor(seconds / 60);
  return `${minutes}m${Math.round(seconds - minutes * 60)
    .toString()
    .padStart(2, '0')}s`;
}

export class StepError extends Error {
  constructor(
    readonly step: string,
    cause: unknown,
  ) {
    super(`${step}: ${cause instanceof Error ? cause.message : String(cause)}`, { cause });
  }
}

export function consoleReporter(stream: NodeJS.WriteStream = process.stderr, quiet = false): Reporter {
  const tty = stream.isTTY === true;
  return {
    async step(name, work) {
      const started = performance.now();
      if (!quiet) stream.write(tty ? ` • ${name} …` : ` • ${name}\n`);
      let detail = '';
      try {
        const result = await work((text) => (detail = `, ${text}`));
        const took = formatDuration(performance.now() - started);
        const line = ` ✓ ${name} (${took}${detail})\n`;
        if (!quiet) stream.write(tty ? `\r\x1b[K${line}` : line);
        return result;
      } catch (error) {
        const took = formatDuration(performance.now() - started);
        if (!quiet) stream.write(tty ? `\r\x1b[K ✗ ${name} (${took})\n` : ` ✗ ${name} (${took})\n`);
        throw error instanceof StepError ? error : new StepError(name, error);
      }
    },
    info(message) {
      if (!quiet) stream.write(`${message}\n`);
    },
    warn(message) {
      stream.write(`warning: ${message}\n`);
    },
  };
}
