import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { followCommand, FollowParser } from '../../cli/runtime/follow-files.js';
import type { FileChange, FollowOptions } from '../../cli/runtime/runtime.js';

// The loop runs in node containers under Debian's sh (dash); here it runs under this machine's sh,
// against real files, driven as a container's would be.

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'vind-follow-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

interface Run {
  changes: FileChange[];
  exitCode: number | null;
}

/**
 * Runs the loop; after the n-th change is seen, `next[n]` changes the files (so that no state is
 * missed however slow the machine is).
 */
function follow(paths: string[], options: FollowOptions, next: (() => Promise<void>)[] = []): Promise<Run> {
  const [command, ...args] = followCommand(paths, options);
  const child = spawn(command!, args);
  const parser = new FollowParser(paths);
  const changes: FileChange[] = [];
  child.stdout.on('data', (chunk: Buffer) => {
    for (const change of parser.push(chunk.toString('utf8'))) {
      changes.push(change);
      void next[changes.length - 1]?.();
    }
  });
  return new Promise((resolve) => child.on('exit', (exitCode) => resolve({ changes, exitCode })));
}

describe('following files inside a container', () => {
  it('reports each file at the start, then each change once, and ends on an end marker', async () => {
    const status = join(dir, 'status');
    const joinFile = join(dir, 'join.json');
    await writeFile(status, '{"phase":"starting"}');
    const run = await follow(
      [status, joinFile],
      { endWhenFirstHas: ['"phase":"ready"', '"phase":"failed"'], timeoutMs: 10_000, intervalMs: 20 },
      [
        async () => undefined,
        () => writeFile(joinFile, '{"token":"a b * $HOME \\\\n"}'),
        () => writeFile(status, '{"phase":"starting","message":"still"}'),
        () => writeFile(status, '{"phase":"ready"}'),
      ],
    );
    expect(run.exitCode).toBe(0);
    expect(run.changes).toEqual([
      { path: status, content: '{"phase":"starting"}' },
      { path: joinFile, content: '' },
      { path: joinFile, content: '{"token":"a b * $HOME \\\\n"}' },
      { path: status, content: '{"phase":"starting","message":"still"}' },
      { path: status, content: '{"phase":"ready"}' },
    ]);
  });

  it('ends by itself at its time limit when no marker comes', async () => {
    const status = join(dir, 'status');
    await writeFile(status, '{"phase":"starting"}');
    const run = await follow([status], {
      endWhenFirstHas: ['"phase":"ready"'],
      timeoutMs: 300,
      intervalMs: 50,
    });
    expect(run.exitCode).toBe(0);
    expect(run.changes).toEqual([{ path: status, content: '{"phase":"starting"}' }]);
  });

  it('reports a file that disappears as empty, and a marker only in the first file ends it', async () => {
    const status = join(dir, 'status');
    const other = join(dir, 'other');
    await writeFile(other, 'ready');
    const run = await follow(
      [status, other],
      { endWhenFirstHas: ['ready'], timeoutMs: 10_000, intervalMs: 20 },
      [async () => undefined, () => rm(other), () => writeFile(status, 'ready')],
    );
    expect(run.changes).toEqual([
      { path: status, content: '' },
      { path: other, content: 'ready' },
      { path: other, content: '' },
      { path: status, content: 'ready' },
    ]);
  });

  it('reassembles lines split across chunks', () => {
    const parser = new FollowParser(['/a', '/b']);
    expect(parser.push('1 {"pha')).toEqual([]);
    expect(parser.push('se":"x"}\n2 \n2 y')).toEqual([
      { path: '/a', content: '{"phase":"x"}' },
      { path: '/b', content: '' },
    ]);
    expect(parser.push('\n')).toEqual([{ path: '/b', content: 'y' }]);
  });
});
