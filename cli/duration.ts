// Durations as users write them for --wait: 90s, 5m, 1h30m, 250ms, or a bare number of seconds.

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

export function parseDuration(text: string): number {
  const trimmed = text.trim();
  if (/^\d+(\.\d+)?$/.test(trimmed)) return Math.round(Number(trimmed) * 1000);
  const parts = [...trimmed.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h)/g)];
  if (parts.length === 0 || parts.map((p) => p[0]).join('') !== trimmed) {
    throw new Error(`invalid duration "${text}": use a form such as 90s, 5m or 1h30m`);
  }
  return Math.round(parts.reduce((total, p) => total + Number(p[1]) * UNITS[p[2]!]!, 0));
}

/** The shortest auto-sleep idle time: below it a cluster would sleep between two commands. */
export const MIN_SLEEP_AFTER_MS = 5_000;

/**
 * An auto-sleep idle time (--sleep-after, --after, `sleepAfter:`): a duration of at least 5s, or
 * `never` (also 0) for none. Answers milliseconds, 0 for never.
 */
export function parseSleepAfter(text: string): number {
  const trimmed = text.trim();
  if (trimmed === 'never' || trimmed === '0') return 0;
  let ms: number;
  try {
    ms = parseDuration(trimmed);
  } catch {
    throw new Error(`invalid idle time "${text}": use a duration such as 30m or 1h, or never`);
  }
  if (ms < MIN_SLEEP_AFTER_MS) {
    throw new Error(`idle time "${text}" is too short: use at least 5s, or never`);
  }
  return ms;
}

/** A duration as users write it: 90s, 30m, 1h30m. */
export function formatSleepAfter(ms: number): string {
  if (ms === 0) return 'never';
  const parts: string[] = [];
  let rest = Math.round(ms / 1000);
  for (const [unit, seconds] of [
    ['h', 3600],
    ['m', 60],
    ['s', 1],
  ] as const) {
    if (rest >= seconds) {
      parts.push(`${Math.floor(rest / seconds)}${unit}`);
      rest %= seconds;
    }
  }
  return parts.join('') || '0s';
}
