// The external datastore path with MySQL: a real MariaDB server (Debian's package) started by the
// test, kine in the control plane storing the cluster in it, addressed in kine's tcp(...) form.

import { chown, mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createClusterOnDatastore,
  hostAddressOnDefaultBridge,
  removeByLabel,
  requireNodeImage,
  uniqueName,
  waitFor,
} from './helpers.js';

const cluster = uniqueName('e2e-my');
const PASSWORD = 'vind-e2e-password';
const port = 20000 + Math.floor(Math.random() * 20000);
let scratch: string;
let socket: string;
let address: string;
let server: ResultPromise | undefined;

function sql(statement: string, asVind = false) {
  const target = asVind
    ? ['-h', address, '-P', String(port), '-u', 'vind', `-p${PASSWORD}`]
    : ['-S', socket, '-u', 'root'];
  return execa('mariadb', [...target, '-N', '-B', '-e', statement], { reject: false });
}

describe('an external MySQL datastore', () => {
  beforeAll(async () => {
    await requireNodeImage();
    address = await hostAddressOnDefaultBridge();
    scratch = await mkdtemp(join(tmpdir(), 'vind-e2e-mysql-'));
    const data = join(scratch, 'data');
    socket = join(scratch, 'mysqld.sock');
    const uid = Number((await execa('id', ['-u', 'mysql'])).stdout);
    const gid = Number((await execa('id', ['-g', 'mysql'])).stdout);
    await mkdir(data);
    await chown(scratch, uid, gid);
    await chown(data, uid, gid);
    await execa('mariadb-install-db', [`--datadir=${data}`, '--user=mysql', '--skip-test-db']);
    server = execa(
      'mariadbd',
      [
        '--no-defaults',
        `--datadir=${data}`,
        `--socket=${socket}`,
        `--port=${port}`,
        `--bind-address=${address}`,
        `--pid-file=${join(scratch, 'mysqld.pid')}`,
        '--user=mysql',
        '--skip-log-bin',
      ],
      { reject: false },
    );
    await waitFor(
      'MariaDB to accept connections',
      async () => ((await sql('SELECT 1')).exitCode === 0 ? true : undefined),
      60_000,
      500,
    );
    const granted = await sql(
      `CREATE USER 'vind'@'%' IDENTIFIED BY '${PASSWORD}'; GRANT ALL PRIVILEGES ON *.* TO 'vind'@'%'; FLUSH PRIVILEGES;`,
    );
    expect(granted.exitCode, granted.stderr).toBe(0);
  });

  afterAll(async () => {
    await removeByLabel(cluster);
    if (server) {
      server.kill('SIGTERM');
      await server;
    }
    if (scratch) await rm(scratch, { recursive: true, force: true });
  });

  it('runs the cluster on MySQL and stores its objects there', async () => {
    const url = `mysql://vind:${PASSWORD}@tcp(${address}:${port})/kine`;
    await createClusterOnDatastore(cluster, url, join(scratch, 'kubeconfig'), 'stored-in-mysql');
    const rows = await sql(
      `SELECT COUNT(*) FROM kine.kine WHERE name = '/vind/${cluster}/registry/configmaps/default/stored-in-mysql'`,
      true,
    );
    expect(rows.stderr).toBe('');
    expect(Number(rows.stdout.trim())).toBeGreaterThan(0);
  });
});
