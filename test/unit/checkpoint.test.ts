// Sleep mode checkpoint on the node side: the criu command lines, the manifest, what a failure says,
// and the supervisor adopting a daemon it did not start (watched by process id, started again as a
// child once it ends, held while a checkpoint stops it). And the CRIU of the image build.

import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { aptConfig, atLeast, criuWrapper, parseDependencyClosure } from '../../images/criu.js';
import { CRIU } from '../../images/recipe.js';
import {
  criuFailure,
  daemonsToCheckpoint,
  dumpArgs,
  parseManifest,
  restoreArgs,
  socketInode,
} from '../../node-agent/checkpoint.js';
import { processStartTime, Supervisor } from '../../node-agent/supervisor.js';
import { poll } from '../../shared/poll.js';

const kine = { name: 'kine', pid: 10001, stdout: 3041794, stderr: 3041796 };

describe('criu command lines', () => {
  it('dumps one daemon with its output sockets outside the dump, connections closed', () => {
    expect(dumpArgs(kine, '/var/lib/vind/checkpoint/kine')).toEqual([
      'dump',
      '--tree',
      '10001',
      '--images-dir',
      '/var/lib/vind/checkpoint/kine',
      '--shell-job',
      '--tcp-close',
      '--file-locks',
      '--manage-cgroups=ignore',
      '--external',
      'unix[3041794]',
      '--external',
      'unix[3041796]',
      '--log-file',
      'dump.log',
    ]);
  });

  it('restores it detached, with descriptors 3 and 4 in place of its output sockets', () => {
    expect(restoreArgs(kine, '/d')).toEqual([
      'restore',
      '--images-dir',
      '/d',
      '--restore-detached',
      '--shell-job',
      '--tcp-close',
      '--file-locks',
      '--manage-cgroups=ignore',
      '--inherit-fd',
      'fd[3]:socket:[3041794]',
      '--inherit-fd',
      'fd[4]:socket:[3041796]',
      '--log-file',
      'restore.log',
    ]);
  });

  it('reads socket inodes from /proc links and refuses anything else', () => {
    expect(socketInode('socket:[2630152]')).toBe(2630152);
    expect(() => socketInode('pipe:[12]')).toThrow('expected a socket, found pipe:[12]');
    expect(() => socketInode('/var/log/vind/kine.log')).toThrow('expected a socket');
  });

  it('takes the daemons of this control plane in start order', () => {
    expect(
      daemonsToCheckpoint(['kube-scheduler', 'kube-apiserver', 'kine', 'kube-controller-manager']),
    ).toEqual(['kine', 'kube-apiserver', 'kube-controller-manager', 'kube-scheduler']);
    // An external etcd: no kine.
    expect(daemonsToCheckpoint(['kube-apiserver', 'kube-controller-manager', 'kube-scheduler'])).toEqual([
      'kube-apiserver',
      'kube-controller-manager',
      'kube-scheduler',
    ]);
  });
});

describe('the checkpoint manifest', () => {
  it('reads back what the agent wrote and refuses anything else', () => {
    const manifest = { version: 1, at: '2026-01-01T00:00:00Z', daemons: [kine] };
    expect(parseManifest(JSON.stringify(manifest))).toEqual(manifest);
    for (const bad of [
      { ...manifest, version: 2 },
      { ...manifest, daemons: [] },
      { ...manifest, daemons: [{ ...kine, name: 'sh' }] },
      { ...manifest, daemons: [{ ...kine, pid: 0 }] },
      { ...manifest, daemons: [{ ...kine, stdout: 'x' }] },
    ]) {
      expect(() => parseManifest(JSON.stringify(bad))).toThrow('not one this agent wrote');
    }
  });
});

describe('what a failed criu says', () => {
  it('keeps its errors, without their times and without the open-file limit it goes on from', () => {
    const log = [
      "(00.001698) Error (criu/util.c:1534): rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted",
      '(00.013097) Warn  (compel/arch/x86/src/lib/infect.c:419): Will restore 37 with interrupted system call',
      '(00.051030) pie: 26: Error (criu/pie/restorer.c:2185): Unable to create a thread: -17',
      '(00.051074) Error (criu/cr-restore.c:2331): Restoring FAILED.',
    ].join('\n');
    expect(criuFailure(log)).toBe(
      'pie: 26: Error (criu/pie/restorer.c:2185): Unable to create a thread: -17; Error (criu/cr-restore.c:2331): Restoring FAILED.',
    );
    expect(criuFailure('')).toBe('no error in its log');
  });
});

describe('process start times from /proc', () => {
  let root: string | undefined;
  afterEach(async () => {
    if (root) await rm(root, { recursive: true, force: true });
  });

  it('reads field 22 past a command name with spaces and parentheses; none for a zombie', async () => {
    root = await mkdtemp(join(tmpdir(), 'vind-proc-'));
    const stat = (state: string) =>
      `42 (kube (api) server) ${state} 1 42 1 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 9 0 123456 1000 200`;
    await mkdir(join(root, '42'));
    await writeFile(join(root, '42', 'stat'), stat('S'));
    expect(processStartTime(42, root)).toBe('123456');
    await writeFile(join(root, '42', 'stat'), stat('Z'));
    expect(processStartTime(42, root)).toBeUndefined();
    expect(processStartTime(43, root)).toBeUndefined();
  });

  it('reads this process', () => {
    expect(processStartTime(process.pid)).toMatch(/^\d+$/);
  });
});

describe('the supervisor adopting a daemon it did not start', () => {
  let logDir: string | undefined;
  let supervisor: Supervisor | undefined;
  afterEach(async () => {
    await supervisor?.stopAll(1000);
    if (logDir) await rm(logDir, { recursive: true, force: true });
  });

  it('watches it, starts it anew as a child when it ends, and holds it while asked to', async () => {
    logDir = await mkdtemp(join(tmpdir(), 'vind-supervisor-'));
    supervisor = new Supervisor(logDir);
    const spec = { name: 'sleeper', command: 'sleep', args: ['60'] };
    // Stands for a restored daemon: a process with its output on streams the agent reads.
    const outsider = spawn('sh', ['-c', 'echo restored; exec sleep 60'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const lines: string[] = [];
    supervisor.adopt({ ...spec, onOutput: (line) => lines.push(line) }, outsider.pid!, [
      outsider.stdout!,
      outsider.stderr!,
    ]);
    expect(supervisor.pidOf('sleeper')).toBe(outsider.pid);
    expect(supervisor.isRunning('sleeper')).toBe(true);
    await poll('its output', async () => (lines.includes('restored') ? true : undefined), {
      timeoutMs: 5000,
    });

    outsider.kill('SIGKILL');
    const restarted = await poll(
      'a new child in its place',
      async () => {
        const pid = supervisor!.pidOf('sleeper');
        return pid !== undefined && pid !== outsider.pid ? pid : undefined;
      },
      { timeoutMs: 5000, intervalMs: 50 },
    );
    expect(processStartTime(restarted)).toBeDefined();

    supervisor.hold(['sleeper']);
    process.kill(restarted, 'SIGKILL');
    await poll('it to end', async () => (supervisor!.isRunning('sleeper') ? undefined : true), {
      timeoutMs: 5000,
    });
    await new Promise((resolve) => setTimeout(resolve, 800));
    expect(supervisor.isRunning('sleeper')).toBe(false);

    supervisor.release(['sleeper']);
    expect(supervisor.isRunning('sleeper')).toBe(true);
  });

  it('stops an adopted daemon by signal', async () => {
    logDir = await mkdtemp(join(tmpdir(), 'vind-supervisor-'));
    supervisor = new Supervisor(logDir);
    const outsider = spawn('sleep', ['60'], { stdio: 'ignore' });
    const ended = new Promise((resolve) => outsider.once('exit', (_code, signal) => resolve(signal)));
    supervisor.adopt({ name: 'sleeper', command: 'sleep', args: ['60'] }, outsider.pid!, []);
    await supervisor.stopAll(2000);
    expect(await ended).toBe('SIGTERM');
    expect(supervisor.isRunning('sleeper')).toBe(false);
  });
});

describe('CRIU in the image build', () => {
  it('runs criu with the loader and libraries of its own suite', () => {
    expect(criuWrapper()).toBe(
      [
        '#!/bin/sh',
        `# CRIU ${CRIU.version} from Debian ${CRIU.suite}, run with that suite's own loader and libraries.`,
        'exec /opt/criu/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 --library-path /opt/criu/usr/lib/x86_64-linux-gnu /opt/criu/usr/sbin/criu "$@"',
        '',
      ].join('\n'),
    );
  });

  it('keeps apt to its own folder: sources, lists, cache, package state and keys', () => {
    const config = aptConfig('/w');
    for (const line of [
      'Dir::State::status "/w/state/status";',
      'Dir::Etc::SourceList "/w/sources.list";',
      'Dir::Etc::SourceParts "/w/sources.list.d";',
      'Dir::Etc::TrustedParts "/w/trusted.gpg.d";',
      'Dir::Cache "/w/cache";',
    ]) {
      expect(config).toContain(line);
    }
  });

  it('reads the package closure from apt-cache, without virtual packages', () => {
    const output = [
      'criu',
      '  Depends: libc6',
      '  Depends: <libnet9>',
      'libc6',
      '  Depends: libgcc-s1',
      '<debconf-2.0>',
      'libgcc-s1',
      'libc6',
      '',
    ].join('\n');
    expect(parseDependencyClosure(output)).toEqual(['criu', 'libc6', 'libgcc-s1']);
  });
});

describe('CRIU versions', () => {
  it("takes a suite's newer criu only when it is the minimum or later", () => {
    expect(atLeast('4.2.1-1', '4.2')).toBe(true);
    expect(atLeast('4.3-1', '4.2')).toBe(true);
    expect(atLeast('1:4.2-2', '4.2')).toBe(true);
    expect(atLeast('4.1.1-1', '4.2')).toBe(false);
    expect(atLeast('3.17.1-2', '4.2')).toBe(false);
  });
});
