import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { authEntry, helperAssignments, helperCredentials } from '../../cli/registry-credentials.js';

describe('helperAssignments', () => {
  it('asks the credsStore for what it lists, and credHelpers for their registries, which win', () => {
    expect(
      helperAssignments(
        { credsStore: 'pass', credHelpers: { 'gcr.io': 'gcloud', 'ghcr.io': 'gh' } },
        { pass: ['https://index.docker.io/v1/', 'ghcr.io'] },
      ),
    ).toEqual([
      { server: 'https://index.docker.io/v1/', helper: 'pass' },
      { server: 'ghcr.io', helper: 'gh' },
      { server: 'gcr.io', helper: 'gcloud' },
    ]);
  });
});

describe('authEntry', () => {
  it('turns a helper answer into an auths entry; <token> means an identity token', () => {
    expect(authEntry({ Username: 'me', Secret: 's3' })).toEqual({ username: 'me', password: 's3' });
    expect(authEntry({ Username: '<token>', Secret: 'refresh' })).toEqual({ identitytoken: 'refresh' });
    expect(authEntry({ Username: 'me' })).toBeUndefined();
  });
});

describe('helperCredentials', () => {
  let dir: string;
  let path: string | undefined;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'vind-creds-'));
    // A credential helper speaking the Docker protocol: `list` prints servers, `get` reads one on stdin.
    const helper = join(dir, 'docker-credential-fake');
    await writeFile(
      helper,
      [
        '#!/bin/sh',
        'case "$1" in',
        '  list) echo \'{"registry.example.com":"me","locked.example.com":"me"}\' ;;',
        '  get) read server; case "$server" in',
        '    registry.example.com) echo \'{"ServerURL":"registry.example.com","Username":"me","Secret":"s3cret"}\' ;;',
        '    *) echo "credentials not found in native keychain" >&2; exit 1 ;;',
        '  esac ;;',
        'esac',
        '',
      ].join('\n'),
    );
    await chmod(helper, 0o755);
    await writeFile(join(dir, 'config.json'), JSON.stringify({ credsStore: 'fake', auths: {} }));
    path = process.env.PATH;
    process.env.PATH = `${dir}:${path}`;
  });

  afterAll(async () => {
    process.env.PATH = path;
    await rm(dir, { recursive: true, force: true });
  });

  it("reads what the user's helper holds, passing over what it will not give", async () => {
    expect(await helperCredentials(dir)).toEqual({
      'registry.example.com': { username: 'me', password: 's3cret' },
    });
  });

  it('gives nothing, and no error, without a config or with a missing helper', async () => {
    expect(await helperCredentials(join(dir, 'nowhere'))).toEqual({});
    await writeFile(join(dir, 'config.json'), JSON.stringify({ credsStore: 'not-installed' }));
    expect(await helperCredentials(dir)).toEqual({});
  });
});
