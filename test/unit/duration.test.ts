import { describe, expect, it } from 'vitest';
import { parseDuration } from '../../cli/duration.js';

describe('parseDuration', () => {
  it.each([
    ['0', 0],
    ['30', 30_000],
    ['90s', 90_000],
    ['5m', 300_000],
    ['1h30m', 5_400_000],
    ['250ms', 250],
    ['1.5s', 1500],
  ])('%s is %i ms', (text, ms) => {
    expect(parseDuration(text)).toBe(ms);
  });

  it.each(['', 'soon', '5 m', '-3s', '5x', '1h-30m'])('rejects "%s"', (text) => {
    expect(() => parseDuration(text)).toThrow(/use a form such as 90s, 5m or 1h30m/);
  });
});
