// `vind image build` on bad input: one clear line, a non-zero exit, and no image left behind.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dockerRuntime } from '../../cli/runtime/docker-runtime.js';
import { runVind } from './helpers.js';

describe('vind image build, failing fast', () => {
  let scratch: string;

  beforeAll(async () => {
    scratch = await mkdtemp(join(tmpdir(), 'vind-image-build-'));
  });

  afterAll(async () => {
    await rm(scratch, { recursive: true, force: true });
  });

  it('rejects a malformed version before doing any work', async () => {
    const result = await runVind(['image', 'build', '--kubernetes-version', 'v1.36'], {
      VIND_CACHE_DIR: scratch,
    });
    expect(result.exitCode).not.toBe(0);
    expect(result.stderr.trim().split('\n')).toEqual([
      'error: invalid --kubernetes-version: "v1.36" is not a Kubernetes version: use the form v1.36.3 ' +
        '(optionally -alpha.N, -beta.N or -rc.N)',
    ]);
  });

  it('names the stage and the log when the module proxy cannot be reached, and tags nothing', async () => {
    // A fresh module cache and a proxy on a closed loopback port: nothing can come from anywhere.
    const version = 'v1.35.4';
    const result = await runVind(['image', 'build', '--kubernetes-version', version], {
      VIND_CACHE_DIR: join(scratch, 'cache'),
      GOMODCACHE: join(scratch, 'gomod'),
      GOPROXY: 'http://127.0.0.1:9',
      GOSUMDB: 'off',
      GOFLAGS: '-modcacherw',
    });
    expect(result.exitCode).not.toBe(0);
    const errorLines = result.stderr.split('\n').filter((l) => l.startsWith('error:'));
    expect(errorLines).toHaveLength(1);
    expect(errorLines[0]).toMatch(/^error: resolve k8s\.io\/kubernetes v1\.35\.4 failed: .*127\.0\.0\.1:9/);
    expect(errorLines[0]).toContain(`full log: ${join(scratch, 'cache', 'logs', 'image-build-resolve.log')}`);
    expect(await dockerRuntime().inspectImage(`vind/node:${version}`)).toBeUndefined();
  });
});
