// The external datastore path with etcd: a real etcd server (Debian's package) started by the test,
// given straight to kube-apiserver (no kine).

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createClusterOnDatastore,
  execInContainer,
  hostAddressOnDefaultBridge,
  kubectlBinary,
  kubectlFor,
  removeByLabel,
  requireNodeImage,
  uniqueName,
  waitFor,
} from './helpers.js';

const cluster = uniqueName('e2e-etcd');
const clientPort = 20000 + Math.floor(Math.random() * 20000);
const peerPort = clientPort + 1;
let scratch: string;
let address: string;
let server: ResultPromise | undefined;

/** Reads a key through etcd's v3 JSON gateway. */
async function etcdKeys(key: string): Promise<number> {
  const response = await fetch(`http://${address}:${clientPort}/v3/kv/range`, {
    method: 'POST',
    body: JSON.stringify({ key: Buffer.from(key).toString('base64'), keys_only: true }),
  });
  return ((await response.json()) as { kvs?: unknown[] }).kvs?.length ?? 0;
}

/** A key's value, read through etcd's v3 JSON gateway. */
async function etcdValue(key: string): Promise<Buffer | undefined> {
  const response = await fetch(`http://${address}:${clientPort}/v3/kv/range`, {
    method: 'POST',
    body: JSON.stringify({ key: Buffer.from(key).toString('base64') }),
  });
  const value = ((await response.json()) as { kvs?: { value: string }[] }).kvs?.[0]?.value;
  return value === undefined ? undefined : Buffer.from(value, 'base64');
}

describe('an external etcd datastore', () => {
  beforeAll(async () => {
    await requireNodeImage();
    address = await hostAddressOnDefaultBridge();
    scratch = await mkdtemp(join(tmpdir(), 'vind-e2e-etcd-'));
    const client = `http://${address}:${clientPort}`;
    const peer = `http://127.0.0.1:${peerPort}`;
    server = execa(
      'etcd',
      [
        `--data-dir=${join(scratch, 'data')}`,
        `--listen-client-urls=${client}`,
        `--advertise-client-urls=${client}`,
        `--listen-peer-urls=${peer}`,
        `--initial-advertise-peer-urls=${peer}`,
        `--initial-cluster=default=${peer}`,
      ],
      { reject: false },
    );
    await waitFor(
      'etcd to answer',
      async () => ((await fetch(`${client}/health`).catch(() => undefined))?.ok ? true : undefined),
      30_000,
      250,
    );
  });

  afterAll(async () => {
    await removeByLabel(cluster);
    if (server) {
      server.kill('SIGTERM');
      await server;
    }
    if (scratch) await rm(scratch, { recursive: true, force: true });
  });

  it('runs the cluster on etcd and stores its objects there', async () => {
    const url = `etcd://${address}:${clientPort}`;
    await createClusterOnDatastore(cluster, url, join(scratch, 'kubeconfig'), 'stored-in-etcd');
    expect(await etcdKeys(`/vind/${cluster}/registry/configmaps/default/stored-in-etcd`)).toBe(1);
    // No kine runs when the API server talks to etcd itself.
    const processes = await execInContainer(`${cluster}-control-plane`, ['ps', '-eo', 'args']);
    expect(processes.stdout).not.toMatch(/^kine /m);
  });

  it('keeps Secrets encrypted in etcd', async () => {
    const kubectl = kubectlFor(await kubectlBinary(), join(scratch, 'kubeconfig'));
    const made = await kubectl([
      'create',
      'secret',
      'generic',
      'kept',
      '--from-literal=password=plain-text-secret',
    ]);
    expect(made.exitCode, made.stderr).toBe(0);
    const stored = await etcdValue(`/vind/${cluster}/registry/secrets/default/kept`);
    expect(stored?.subarray(0, 28).toString()).toBe('k8s:enc:secretbox:v1:vind-1:');
    expect(stored?.includes('plain-text-secret')).toBe(false);
    // The cluster reads it back as it was.
    const read = await kubectl(['get', 'secret', 'kept', '-o', 'jsonpath={.data.password}']);
    expect(Buffer.from(read.stdout, 'base64').toString()).toBe('plain-text-secret');
  });
});
