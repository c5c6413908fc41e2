// The image build's datastore seed (SEED.datastore): in a throw-away container of the node image, an
// API server with a throw-away PKI starts once on an empty SQLite datastore, as a control plane's
// does, and writes its bootstrap policy there. What belongs to no one cluster stays
// (seeded-datastore.ts); the rest is deleted and the history compacted, and kine's file is the seed.
// Nothing but loopback is needed, and nothing is left behind but the seed.

import { existsSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readFile, rename, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { writeFileAtomic } from '../shared/atomic-write.js';
import { API_SERVER_PORT, DEFAULT_SERVICE_SUBNET, SEED } from '../shared/contract.js';
import { apiReady } from '../shared/kubernetes.js';
import { poll } from '../shared/poll.js';
import { admissionConfiguration } from './admission.js';
import { apiServerArgs, KINE_ARGS, sqliteEndpoint } from './control-plane.js';
import { ensureEncryptionConfiguration } from './encryption.js';
import { EtcdClient } from './etcd-client.js';
import { log } from './log.js';
import { ensurePki } from './pki.js';
import { keptInSeed } from './seeded-datastore.js';
import { Supervisor } from './supervisor.js';

const ETCD = 'http://127.0.0.1:2379';
// Never dialled: the API server listens on loopback only, and what it writes with this address (the
// kubernetes Service's endpoints) is not kept.
const ADVERTISED_ADDRESS = '192.0.2.1';
// What the API server stores encrypted (encryption.ts) starts with this: never kept with a throw-away key.
const ENCRYPTED_VALUE = Buffer.from('k8s:enc:');

/** The last line a daemon wrote to its log, to say why it did not come up. */
async function lastLogLine(file: string): Promise<string> {
  const lines = (await readFile(file, 'utf8').catch(() => '')).trim().split('\n');
  return lines[lines.length - 1] ?? '';
}

/** Deletes what the seed does not keep and compacts the history; returns how many keys were kept. */
async function prune(client: EtcdClient): Promise<number> {
  const entries = await client.range('/registry/', { prefix: true });
  const kept = entries.filter((entry) => keptInSeed(entry.key));
  for (const entry of kept) {
    if (entry.value.subarray(0, ENCRYPTED_VALUE.length).equals(ENCRYPTED_VALUE)) {
      throw new Error(`${entry.key} is encrypted at rest: it cannot be kept with the build's key`);
    }
  }
  const last = kept[kept.length - 1];
  if (!last) throw new Error('the API server wrote none of the bootstrap policy');
  for (const entry of entries) {
    if (keptInSeed(entry.key)) continue;
    if (!(await client.delete(entry))) throw new Error(`${entry.key} changed while it was deleted`);
  }
  // kine takes its newest row for the current revision: were it a deletion, the compaction would
  // remove it and leave the compact revision above the current one, and every watch would fail
  // until the first write. The newest row is one kept object written again unchanged.
  await client.put(last.key, last.value);
  // Without the deleted objects and their history, the file holds only what is kept.
  await client.compact(await client.revision());
  return kept.length;
}

/** Writes the seed to `target`; one line on failure. */
export async function seedDatastore(target: string = SEED.datastore): Promise<void> {
  const started = Date.now();
  const scratch = await mkdtemp(join(tmpdir(), 'vind-datastore-seed-'));
  // Two supervisors: the API server stops while kine goes on serving the pruning.
  const datastore = new Supervisor(join(scratch, 'log'));
  const apiServer = new Supervisor(join(scratch, 'log'));
  const client = new EtcdClient(ETCD);
  try {
    const pki = await ensurePki(join(scratch, 'pki'), {
      apiServerDnsNames: ['localhost'],
      apiServerIps: ['127.0.0.1'],
    });
    const files = {
      encryption: join(scratch, 'encryption.yaml'),
      admission: join(scratch, 'admission.yaml'),
    };
    await ensureEncryptionConfiguration(files.encryption);
    await writeFileAtomic(files.admission, admissionConfiguration('privileged'));
    const db = join(scratch, 'kine', 'state.db');
    await mkdir(dirname(db));
    datastore.start({
      name: 'kine',
      command: 'kine',
      // A compaction on request may reach the newest revision: no history is kept for anyone.
      args: [...KINE_ARGS, '--compact-min-retain=0'],
      env: { KINE_ENDPOINT: sqliteEndpoint(db) },
    });
    apiServer.start({
      name: 'kube-apiserver',
      command: 'kube-apiserver',
      args: [
        ...apiServerArgs(
          {
            nodeIp: ADVERTISED_ADDRESS,
            datastore: 'sqlite',
            clusterName: 'seed',
            serviceSubnet: DEFAULT_SERVICE_SUBNET,
          },
          pki,
          ETCD,
          files,
        ),
        '--bind-address=127.0.0.1',
      ],
    });
    const api = {
      server: `https://127.0.0.1:${API_SERVER_PORT}`,
      ca: await readFile(pki.caCert),
      cert: await readFile(pki.adminCert),
      key: await readFile(pki.adminKey),
    };
    await poll('kube-apiserver to be ready', async () => ((await apiReady(api)) ? true : undefined), {
      timeoutMs: 180_000,
      intervalMs: 250,
    }).catch(async (error: Error) => {
      throw new Error(`${error.message}: ${await lastLogLine(join(scratch, 'log', 'kube-apiserver.log'))}`);
    });
    await apiServer.stopAll();
    const kept = await prune(client);
    client.close();
    // kine closes the database when it stops, and SQLite folds its write-ahead log into the file.
    await datastore.stopAll();
    if (existsSync(`${db}-wal`)) throw new Error(`kine left ${db}-wal: the file alone is not the datastore`);
    await mkdir(dirname(target), { recursive: true });
    await copyFile(db, `${target}.partial`);
    await rename(`${target}.partial`, target);
    const { size } = await stat(target);
    log(
      `datastore seed: ${kept} objects, ${Math.round(size / 1024)} KiB in ${target} (${((Date.now() - started) / 1000).toFixed(1)}s)`,
    );
  } finally {
    client.close();
    await apiServer.stopAll();
    await datastore.stopAll();
    await rm(scratch, { recursive: true, force: true });
  }
}
