// The external datastore path: a real PostgreSQL server (Debian's package) started by the test,
// kine in the control plane storing the cluster in it.

import { mkdtemp, readdir, rm, writeFile, appendFile, chown } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createClusterOnDatastore,
  docker,
  execInContainer,
  hostAddressOnDefaultBridge,
  kubectlBinary,
  kubectlFor,
  removeByLabel,
  requireNodeImage,
  runVind,
  uniqueName,
  waitFor,
} from './helpers.js';

const cluster = uniqueName('e2e-pg');
const PASSWORD = 'vind-e2e-password';
let scratch: string;
let server: ResultPromise | undefined;
let startServer: () => Promise<void>;
let address: string;
const port = 20000 + Math.floor(Math.random() * 20000);

async function postgresBin(): Promise<string> {
  const versions = (await readdir('/usr/lib/postgresql')).sort((x, y) => Number(y) - Number(x));
  if (!versions[0]) throw new Error('PostgreSQL is not installed: run scripts/host-deps.sh');
  return join('/usr/lib/postgresql', versions[0], 'bin');
}

async function user(name: string): Promise<{ uid: number; gid: number }> {
  const uid = Number((await execa('id', ['-u', name])).stdout);
  const gid = Number((await execa('id', ['-g', name])).stdout);
  return { uid, gid };
}

function psql(sql: string) {
  return execa('psql', ['-h', address, '-p', String(port), '-U', 'vind', '-d', 'kine', '-tAc', sql], {
    env: { PGPASSWORD: PASSWORD },
    reject: false,
  });
}

describe('an external PostgreSQL datastore', () => {
  beforeAll(async () => {
    await requireNodeImage();
    // The server listens on the host's address on Docker's default bridge, which node containers reach.
    address = await hostAddressOnDefaultBridge();
    const bin = await postgresBin();
    const owner = await user('postgres');
    scratch = await mkdtemp(join(tmpdir(), 'vind-e2e-pg-'));
    const data = join(scratch, 'data');
    await writeFile(join(scratch, 'password'), PASSWORD);
    await chown(scratch, owner.uid, owner.gid);
    await chown(join(scratch, 'password'), owner.uid, owner.gid);
    await execa(
      join(bin, 'initdb'),
      ['-D', data, '-U', 'vind', `--pwfile=${join(scratch, 'password')}`, '--auth=scram-sha-256'],
      {
        ...owner,
      },
    );
    await appendFile(join(data, 'pg_hba.conf'), 'host all all 0.0.0.0/0 scram-sha-256\n');
    startServer = async () => {
      server = execa(
        join(bin, 'postgres'),
        ['-D', data, '-p', String(port), '-k', scratch, '-c', `listen_addresses=${address}`],
        { ...owner, reject: false },
      );
      await waitFor(
        'PostgreSQL to accept connections',
        async () =>
          (await execa('pg_isready', ['-h', address, '-p', String(port)], { reject: false })).exitCode === 0
            ? true
            : undefined,
        30_000,
      );
    };
    await startServer();
  });

  afterAll(async () => {
    await removeByLabel(cluster);
    if (server) {
      server.kill('SIGINT');
      await server;
    }
    if (scratch) await rm(scratch, { recursive: true, force: true });
  });

  it('runs the cluster on PostgreSQL and stores its objects there', async () => {
    const url = `postgres://vind:${PASSWORD}@${address}:${port}/kine?sslmode=disable`;
    await createClusterOnDatastore(cluster, url, join(scratch, 'kubeconfig'), 'stored-in-postgres');
    const rows = await psql(
      `SELECT count(*) FROM kine WHERE name = '/vind/${cluster}/registry/configmaps/default/stored-in-postgres'`,
    );
    expect(rows.stderr).toBe('');
    expect(Number(rows.stdout.trim())).toBeGreaterThan(0);
    // Secrets (the bootstrap token's, at least) are stored encrypted, none in the clear.
    const secrets = await psql(
      `SELECT encode(substring(value from 1 for 21), 'escape') FROM kine WHERE name LIKE '/vind/${cluster}/registry/secrets/%' AND deleted = 0`,
    );
    const prefixes = secrets.stdout.trim().split('\n').filter(Boolean);
    expect(prefixes.length).toBeGreaterThan(0);
    expect(new Set(prefixes)).toEqual(new Set(['k8s:enc:secretbox:v1:']));
    // The embedded SQLite store was not used.
    const sqlite = await execInContainer(`${cluster}-control-plane`, [
      'test',
      '-e',
      '/var/lib/vind/kine/state.db',
    ]);
    expect(sqlite.exitCode).not.toBe(0);
  });

  it('keeps the password out of `docker inspect` and out of `ps` on the host', async () => {
    const controlPlane = `${cluster}-control-plane`;
    const inspected = JSON.stringify(await docker().getContainer(controlPlane).inspect());
    // Positive control: the inspection does carry the datastore's address, so it is the right object.
    expect(inspected).toContain('VIND_DATASTORE=external');
    expect(inspected).not.toContain(PASSWORD);
    // The host's process list holds the nested kine and API server processes.
    const processes = await execa('ps', ['-eo', 'args', '-ww']);
    expect(processes.stdout).toMatch(/\bkine\b/);
    expect(processes.stdout).not.toContain(PASSWORD);
    // Where it is: one file, readable by root only.
    const file = await execInContainer(controlPlane, ['stat', '-c', '%a %U', '/var/lib/vind/datastore.url']);
    expect(file.stdout.trim()).toBe('600 root');
  });

  it("fails a create with a wrong password at once, with the datastore's reason, leaving nothing", async () => {
    const other = uniqueName('e2e-pg-badpw');
    try {
      const url = `postgres://vind:not-${PASSWORD}@${address}:${port}/kine?sslmode=disable`;
      const created = await runVind(['create', other, '--workers', '0', '--datastore', url], {
        KUBECONFIG: join(scratch, 'kubeconfig-bad'),
      });
      expect(created.exitCode).not.toBe(0);
      // The datastore's own reason, not a timeout after minutes of waiting for the API server.
      expect(created.stderr).toContain(
        'the datastore refused kine: the password was refused (PostgreSQL: password authentication failed for user "vind")',
      );
      expect(created.stderr).not.toContain(PASSWORD);
      const left = await docker().listContainers({
        all: true,
        filters: { label: [`dev.vind.cluster=${other}`] },
      });
      expect(left).toEqual([]);
    } finally {
      await removeByLabel(other);
    }
  });

  it('comes back by itself when the datastore was down while the control plane restarted', async () => {
    const controlPlane = `${cluster}-control-plane`;
    const kubectl = kubectlFor(await kubectlBinary(), join(scratch, 'kubeconfig'));
    server!.kill('SIGINT');
    await server;
    await docker().getContainer(controlPlane).restart({ t: 5 });
    // While the datastore is away the agent says so, and tries again: `vind list` shows why.
    const problem = await waitFor(
      'vind list to show the control plane retrying',
      async () => {
        const listed = JSON.parse((await runVind(['list', '--json'])).stdout) as {
          name: string;
          state: string;
          problems: string[];
        }[];
        const own = listed.find((c) => c.name === cluster);
        return own?.state === 'failing' ? own.problems.join('\n') : undefined;
      },
      90_000,
      1000,
    );
    expect(problem).toMatch(
      new RegExp(
        `^${controlPlane}: retrying: datastore ${address.replaceAll('.', '\\.')}:${port} cannot be reached`,
      ),
    );
    await startServer();
    const stored = await waitFor(
      'the API server to answer from the datastore again',
      async () => {
        const result = await kubectl(['get', 'configmap', 'stored-in-postgres', '-o', 'jsonpath={.data.k}']);
        return result.exitCode === 0 ? result.stdout : undefined;
      },
      180_000,
      1000,
    );
    expect(stored).toBe('v');
  });

  it('keeps a second cluster on the same database in its own space', async () => {
    const other = uniqueName('e2e-pg-other');
    try {
      const url = `postgres://vind:${PASSWORD}@${address}:${port}/kine?sslmode=disable`;
      await createClusterOnDatastore(other, url, join(scratch, 'kubeconfig-other'), 'stored-by-other');
      const spaces = await psql(
        "SELECT name FROM kine WHERE name LIKE '%/registry/configmaps/default/stored-%' ORDER BY name",
      );
      expect(spaces.stdout.trim().split('\n')).toEqual(
        [
          `/vind/${cluster}/registry/configmaps/default/stored-in-postgres`,
          `/vind/${other}/registry/configmaps/default/stored-by-other`,
        ].sort(),
      );
    } finally {
      await removeByLabel(other);
    }
  });

  it('says what delete leaves in the datastore, and refuses to start a new cluster on it unless asked', async () => {
    const kubeconfig = join(scratch, 'kubeconfig');
    const url = `postgres://vind:${PASSWORD}@${address}:${port}/kine?sslmode=disable`;
    const deleted = await runVind(['delete', cluster, '--kubeconfig', kubeconfig]);
    expect(deleted.exitCode, deleted.stderr).toBe(0);
    expect(deleted.stderr).toContain(
      `Its objects, Secrets included (encrypted), stay in postgres://vind:***@${address}:${port}/kine?sslmode=disable under /vind/${cluster}/`,
    );
    expect(deleted.stderr).not.toContain(PASSWORD);
    // A new cluster of the same name finds the old one's objects: refused, in one line.
    const again = await runVind(['create', cluster, '--workers', '0', '--datastore', url], {
      KUBECONFIG: kubeconfig,
    });
    expect(again.exitCode).not.toBe(0);
    expect(again.stderr).toContain(`the datastore already holds a cluster "${cluster}" made `);
    expect(again.stderr).toContain(
      `under /vind/${cluster}/ in postgres://vind:***@${address}:${port}/kine?sslmode=disable: remove them there, or take them over with \`vind create --reuse-datastore\``,
    );
    expect(await leftoversOf(cluster)).toBe(0);
    // Taken over on purpose, the old objects are there.
    const reused = await runVind(
      ['create', cluster, '--workers', '0', '--datastore', url, '--reuse-datastore'],
      {
        KUBECONFIG: kubeconfig,
      },
    );
    expect(reused.exitCode, reused.stderr).toBe(0);
    const kubectl = kubectlFor(await kubectlBinary(), kubeconfig);
    const kept = await kubectl(['get', 'configmap', 'stored-in-postgres', '-o', 'jsonpath={.data.k}']);
    expect(kept.stdout).toBe('v');
  });
});

async function leftoversOf(name: string): Promise<number> {
  const filter = { label: [`dev.vind.cluster=${name}`] };
  const containers = await docker().listContainers({ all: true, filters: filter });
  const volumes = (await docker().listVolumes({ filters: filter })).Volumes ?? [];
  return containers.length + volumes.length;
}
