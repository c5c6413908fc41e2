import { chmod, mkdir, mkdtemp, readdir, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import {
  kubeconfigPath,
  mergeIntoKubeconfigFile,
  mergeKubeconfigText,
  removeFromKubeconfigFile,
  removeFromKubeconfigText,
} from '../../cli/kubeconfig.js';
import { type ClusterCredentials, renderKubeconfig } from '../../shared/kubeconfig.js';

function creds(name: string, port = 6443): ClusterCredentials {
  return {
    contextName: `vind-${name}`,
    server: `https://127.0.0.1:${port}`,
    caData: Buffer.from(`ca of ${name}`).toString('base64'),
    clientCertData: Buffer.from(`cert of ${name}`).toString('base64'),
    clientKeyData: Buffer.from(`key of ${name}`).toString('base64'),
  };
}

interface Named {
  name: string;
  [key: string]: unknown;
}
interface Kubeconfig {
  clusters: Named[];
  users: Named[];
  contexts: Named[];
  'current-context': string;
  [key: string]: unknown;
}

function names(config: Kubeconfig, key: 'clusters' | 'users' | 'contexts'): string[] {
  return (config[key] ?? []).map((entry) => entry.name);
}

// A kubeconfig as kubectl writes it, with another cluster, preferences and extensions.
const OTHER = `apiVersion: v1
kind: Config
clusters:
- cluster:
    certificate-authority-data: b3RoZXI=
    server: https://other.example:443
    extensions:
    - name: client.authentication.k8s.io/exec
      extension:
        audience: other
  name: other
users:
- name: other
  user:
    token: other-token
contexts:
- context:
    cluster: other
    namespace: team
    user: other
  name: other
current-context: other
preferences:
  colors: true
`;

describe('kubeconfigPath', () => {
  it('takes the first entry of KUBECONFIG', () => {
    expect(kubeconfigPath({ KUBECONFIG: '/a/config:/b/config' })).toBe('/a/config');
    expect(kubeconfigPath({ KUBECONFIG: ':/b/config' })).toBe('/b/config');
  });

  it('falls back to ~/.kube/config', () => {
    expect(kubeconfigPath({ HOME: '/home/ada' })).toBe('/home/ada/.kube/config');
    expect(kubeconfigPath({ HOME: '/home/ada', KUBECONFIG: '' })).toBe('/home/ada/.kube/config');
  });
});

describe('renderKubeconfig', () => {
  it('names cluster, user and context alike and makes the context current', () => {
    const config = parse(renderKubeconfig(creds('dev'))) as Kubeconfig;
    expect(config).toEqual({
      apiVersion: 'v1',
      kind: 'Config',
      preferences: {},
      clusters: [
        {
          name: 'vind-dev',
          cluster: { server: 'https://127.0.0.1:6443', 'certificate-authority-data': creds('dev').caData },
        },
      ],
      users: [
        {
          name: 'vind-dev',
          user: {
            'client-certificate-data': creds('dev').clientCertData,
            'client-key-data': creds('dev').clientKeyData,
          },
        },
      ],
      contexts: [{ name: 'vind-dev', context: { cluster: 'vind-dev', user: 'vind-dev' } }],
      'current-context': 'vind-dev',
    });
  });

  it('keeps long certificate data on one line', () => {
    const long = { ...creds('dev'), caData: 'A'.repeat(3000) };
    expect(renderKubeconfig(long)).toContain(`certificate-authority-data: ${'A'.repeat(3000)}\n`);
  });
});

describe('mergeKubeconfigText', () => {
  it('starts a new kubeconfig from nothing', () => {
    expect(mergeKubeconfigText(undefined, creds('dev'))).toBe(renderKubeconfig(creds('dev')));
    expect(mergeKubeconfigText('', creds('dev'))).toBe(renderKubeconfig(creds('dev')));
  });

  it('adds to another cluster and keeps everything of it', () => {
    const merged = mergeKubeconfigText(`# managed by hand\n${OTHER}`, creds('dev'));
    const config = parse(merged) as Kubeconfig;
    const before = parse(OTHER) as Kubeconfig;
    expect(names(config, 'clusters')).toEqual(['other', 'vind-dev']);
    expect(names(config, 'users')).toEqual(['other', 'vind-dev']);
    expect(names(config, 'contexts')).toEqual(['other', 'vind-dev']);
    expect(config.clusters[0]).toEqual(before.clusters[0]);
    expect(config.users[0]).toEqual(before.users[0]);
    expect(config.contexts[0]).toEqual(before.contexts[0]);
    expect(config.preferences).toEqual({ colors: true });
    expect(config['current-context']).toBe('vind-dev');
    expect(merged.startsWith('# managed by hand\n')).toBe(true);
    expect(merged).not.toContain('insecure-skip-tls-verify');
  });

  it('replaces entries of the same name without duplicates', () => {
    const stale = OTHER.replace(
      'clusters:\n',
      'clusters:\n- name: vind-dev\n  cluster:\n    server: https://127.0.0.1:1\n    insecure-skip-tls-verify: true\n',
    );
    const once = mergeKubeconfigText(stale, creds('dev', 7000));
    const twice = mergeKubeconfigText(once, creds('dev', 7001));
    const config = parse(twice) as Kubeconfig;
    expect(names(config, 'clusters')).toEqual(['vind-dev', 'other']);
    expect(names(config, 'users')).toEqual(['other', 'vind-dev']);
    expect(names(config, 'contexts')).toEqual(['other', 'vind-dev']);
    expect(config.clusters[0]).toEqual({
      name: 'vind-dev',
      cluster: { server: 'https://127.0.0.1:7001', 'certificate-authority-data': creds('dev').caData },
    });
    expect(twice).not.toContain('insecure-skip-tls-verify');
  });

  it('fills in null and empty sections', () => {
    const config = parse(
      mergeKubeconfigText('apiVersion: v1\nkind: Config\nclusters: null\nusers: []\n', creds('dev')),
    ) as Kubeconfig;
    expect(names(config, 'clusters')).toEqual(['vind-dev']);
    expect(names(config, 'users')).toEqual(['vind-dev']);
    expect(names(config, 'contexts')).toEqual(['vind-dev']);
  });

  it('refuses to touch a file it cannot read', () => {
    expect(() => mergeKubeconfigText('clusters: [\n', creds('dev'))).toThrow(
      /^kubeconfig is not valid YAML \(line 2\)/,
    );
    expect(() => mergeKubeconfigText('- a\n', creds('dev'))).toThrow('kubeconfig is not a YAML mapping');
    expect(() => mergeKubeconfigText('clusters: {}\n', creds('dev'))).toThrow(
      'kubeconfig field clusters is not a list',
    );
  });
});

describe('removeFromKubeconfigText', () => {
  it('removes the three entries and unsets the current context', () => {
    const merged = mergeKubeconfigText(OTHER, creds('dev'));
    const config = parse(removeFromKubeconfigText(merged, 'vind-dev')) as Kubeconfig;
    const before = parse(OTHER) as Kubeconfig;
    expect(config).toEqual({ ...before, 'current-context': '' });
  });

  it('keeps another current context', () => {
    const merged = mergeKubeconfigText(mergeKubeconfigText(OTHER, creds('dev')), creds('prod'));
    const config = parse(removeFromKubeconfigText(merged, 'vind-dev')) as Kubeconfig;
    expect(names(config, 'clusters')).toEqual(['other', 'vind-prod']);
    expect(config['current-context']).toBe('vind-prod');
  });

  it('leaves the text alone when the name is not there', () => {
    expect(removeFromKubeconfigText(OTHER, 'vind-dev')).toBe(OTHER);
  });
});

describe('kubeconfig files', () => {
  let dir: string;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'vind-kubeconfig-'));
  });

  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const mode = async (path: string) => (await stat(path)).mode & 0o777;

  it('creates the directory (0700) and the file (0600)', async () => {
    const path = join(dir, 'home', '.kube', 'config');
    await mergeIntoKubeconfigFile(path, creds('dev'));
    expect(await readFile(path, 'utf8')).toBe(renderKubeconfig(creds('dev')));
    expect(await mode(path)).toBe(0o600);
    expect(await mode(join(dir, 'home', '.kube'))).toBe(0o700);
    // Neither the temp file nor the lock is left behind.
    expect(await readdir(join(dir, 'home', '.kube'))).toEqual(['config']);
  });

  it('merges into an existing file, keeps other clusters and makes the file 0600', async () => {
    const path = join(dir, 'config');
    await writeFile(path, OTHER);
    await chmod(path, 0o644);
    await mergeIntoKubeconfigFile(path, creds('dev'));
    await mergeIntoKubeconfigFile(path, creds('dev', 7000));
    const config = parse(await readFile(path, 'utf8')) as Kubeconfig;
    expect(names(config, 'clusters')).toEqual(['other', 'vind-dev']);
    expect(names(config, 'contexts')).toEqual(['other', 'vind-dev']);
    expect(config.clusters[1]?.cluster).toMatchObject({ server: 'https://127.0.0.1:7000' });
    expect(await mode(path)).toBe(0o600);
    expect(await readdir(dir)).toEqual(['config']);
  });

  it('writes through a symlink instead of replacing it', async () => {
    await mkdir(join(dir, 'dotfiles'));
    const real = join(dir, 'dotfiles', 'kubeconfig');
    await writeFile(real, OTHER);
    const link = join(dir, 'config');
    await symlink(real, link);
    await mergeIntoKubeconfigFile(link, creds('dev'));
    expect((await stat(link)).isFile()).toBe(true);
    expect(names(parse(await readFile(real, 'utf8')) as Kubeconfig, 'clusters')).toEqual([
      'other',
      'vind-dev',
    ]);
  });

  it('removes only the named entries and says whether it did', async () => {
    const path = join(dir, 'config');
    await writeFile(path, OTHER, { mode: 0o600 });
    await mergeIntoKubeconfigFile(path, creds('dev'));
    expect(await removeFromKubeconfigFile(path, 'vind-dev')).toBe(true);
    expect(parse(await readFile(path, 'utf8'))).toEqual({ ...parse(OTHER), 'current-context': '' });
    expect(await removeFromKubeconfigFile(path, 'vind-dev')).toBe(false);
    expect(await mode(path)).toBe(0o600);
  });

  it('returns false when there is no file', async () => {
    const path = join(dir, 'missing', 'config');
    expect(await removeFromKubeconfigFile(path, 'vind-dev')).toBe(false);
    await expect(stat(path)).rejects.toThrow(/ENOENT/);
  });

  it('writes to the first KUBECONFIG path only', async () => {
    const first = join(dir, 'first');
    const second = join(dir, 'second');
    await writeFile(second, OTHER);
    await mergeIntoKubeconfigFile(kubeconfigPath({ KUBECONFIG: `${first}:${second}` }), creds('dev'));
    expect(names(parse(await readFile(first, 'utf8')) as Kubeconfig, 'clusters')).toEqual(['vind-dev']);
    expect(await readFile(second, 'utf8')).toBe(OTHER);
  });

  it('waits for the lock and merges concurrent writes without losing any', async () => {
    const path = join(dir, 'config');
    await Promise.all(['a', 'b', 'c'].map((name) => mergeIntoKubeconfigFile(path, creds(name))));
    const config = parse(await readFile(path, 'utf8')) as Kubeconfig;
    expect(names(config, 'clusters').sort()).toEqual(['vind-a', 'vind-b', 'vind-c']);
  });
});
