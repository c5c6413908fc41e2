// Bring your own CSI driver: a cluster created with `storage: none` has no StorageClass, and a
// CSI driver installed as users install one (test/support/csi-hostpath.ts) registers with every
// kubelet and serves a claim end to end: provisioned on the node its pod was scheduled to, mounted
// into the pod, written and read, kept for the next pod, and deleted with its claim.

import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  CSI_DATA_DIR,
  CSI_DRIVER,
  CSI_STORAGE_CLASS,
  CSI_TOPOLOGY_KEY,
  csiHostpathManifests,
  csiStorageClass,
  ensureCsiHostpathImage,
} from '../support/csi-hostpath.js';
import {
  ensureTestImage,
  execInContainer,
  kubectlBinary,
  kubectlFor,
  NODE_IMAGE,
  removeByLabel,
  requireNodeImage,
  runVind,
  podOnClaim,
  uniqueName,
  waitFor,
} from './helpers.js';

const cluster = uniqueName('cs-csi');
const workers = [`${cluster}-worker`, `${cluster}-worker2`];
let scratch: string;
let kubectl: ReturnType<typeof kubectlFor>;
let driverImage: string;

async function apply(object: unknown) {
  const result = await kubectl(['apply', '-f', '-'], JSON.stringify(object));
  expect(result.exitCode, result.stderr).toBe(0);
}

async function getJson<T>(args: string[]): Promise<T> {
  const result = await kubectl([...args, '-o', 'json']);
  expect(result.exitCode, result.stderr).toBe(0);
  return JSON.parse(result.stdout) as T;
}

interface Item {
  metadata: { name: string; labels?: Record<string, string> };
}
interface CsiNode extends Item {
  spec: { drivers?: { name: string; nodeID: string; topologyKeys?: string[] }[] | null };
}
interface Claim extends Item {
  spec: { volumeName?: string };
  status: { phase: string };
}
interface Volume extends Item {
  spec: {
    csi: { driver: string; volumeHandle: string };
    nodeAffinity: {
      required: { nodeSelectorTerms: { matchExpressions: { key: string; values: string[] }[] }[] };
    };
  };
}
interface Pod extends Item {
  spec: { nodeName?: string };
}
interface Event {
  reason: string;
  message: string;
}

/** A pod on the claim `data`: writes a line into the volume if asked to, then stays. */
function podOnData(name: string, write: boolean) {
  const script = write ? 'echo "written by $(hostname)" > /data/hello && sleep 3600' : 'sleep 3600';
  return podOnClaim(name, 'data', script);
}

const claim = {
  apiVersion: 'v1',
  kind: 'PersistentVolumeClaim',
  metadata: { name: 'data' },
  spec: {
    storageClassName: CSI_STORAGE_CLASS,
    accessModes: ['ReadWriteOnce'],
    resources: { requests: { storage: '64Mi' } },
  },
};

async function claimEvents(): Promise<Event[]> {
  const list = await getJson<{ items: Event[] }>([
    'get',
    'events',
    '--field-selector',
    'involvedObject.kind=PersistentVolumeClaim,involvedObject.name=data',
  ]);
  return list.items;
}

/** The lines of a node's mount table that name a volume: what a pod's bind mount leaves there. */
async function mountsOf(node: string, handle: string): Promise<string[]> {
  const table = await execInContainer(node, ['cat', '/proc/self/mountinfo']);
  expect(table.exitCode, table.stderr).toBe(0);
  return table.stdout.split('\n').filter((line) => line.includes(handle));
}

describe('a CSI driver installed on a cluster created with storage: none', () => {
  beforeAll(async () => {
    await requireNodeImage();
    scratch = await mkdtemp(join(tmpdir(), 'vind-e2e-csi-'));
    const kubeconfig = join(scratch, 'kubeconfig');
    kubectl = kubectlFor(await kubectlBinary(), kubeconfig);
    driverImage = await ensureCsiHostpathImage();
    await ensureTestImage();
    const config = join(scratch, 'cluster.yaml');
    await writeFile(
      config,
      ['apiVersion: vind.dev/v1alpha1', 'kind: Cluster', 'workers: [{}, {}]', 'storage: none', ''].join('\n'),
    );
    const created = await runVind(['create', cluster, '--config', config, '--image', NODE_IMAGE], {
      KUBECONFIG: kubeconfig,
    });
    expect(created.exitCode, created.stderr).toBe(0);
  }, 900_000);

  afterAll(async () => {
    await removeByLabel(cluster);
    if (scratch) await rm(scratch, { recursive: true, force: true });
  });

  it('starts with no StorageClass and no CSI driver on any node', async () => {
    const classes = await getJson<{ items: Item[] }>(['get', 'storageclasses']);
    expect(classes.items.map((c) => c.metadata.name)).toEqual([]);
    // The kubelet makes its CSINode when it registers; it lists no driver yet.
    const csiNodes = await waitFor(
      'a CSINode for every worker',
      async () => {
        const list = await getJson<{ items: CsiNode[] }>(['get', 'csinodes']);
        return list.items.length === workers.length ? list.items : undefined;
      },
      60_000,
    );
    expect(csiNodes.map((n) => n.metadata.name).sort()).toEqual(workers);
    for (const node of csiNodes) expect(node.spec.drivers ?? []).toEqual([]);
  });

  it('leaves a claim on the class Pending, waiting for a provisioner that is not there yet', async () => {
    await apply(csiStorageClass());
    await apply(claim);
    await apply(podOnData('writer', true));
    // The scheduler picks a node for the pod, and the volume controller then waits for the driver.
    const waiting = await waitFor(
      'the ExternalProvisioning event on the claim',
      async () => (await claimEvents()).find((e) => e.reason === 'ExternalProvisioning'),
      120_000,
      1000,
    );
    expect(waiting.message).toContain(`external provisioner '${CSI_DRIVER}'`);
    const pending = await getJson<Claim>(['get', 'pvc', 'data']);
    expect(pending.status.phase).toBe('Pending');
    const volumes = await getJson<{ items: Item[] }>(['get', 'pv']);
    expect(volumes.items).toEqual([]);
  });

  it('registers the driver with the kubelet of every worker once installed', async () => {
    await apply(csiHostpathManifests(driverImage));
    const rollout = await kubectl([
      'rollout',
      'status',
      '-n',
      'csi-hostpath',
      'daemonset/csi-hostpath',
      '--timeout=180s',
    ]);
    expect(rollout.exitCode, rollout.stderr + rollout.stdout).toBe(0);
    const registered = await waitFor(
      `${CSI_DRIVER} in the CSINode of every worker`,
      async () => {
        const list = await getJson<{ items: CsiNode[] }>(['get', 'csinodes']);
        const withDriver = list.items.filter((n) => n.spec.drivers?.some((d) => d.name === CSI_DRIVER));
        return withDriver.length === workers.length ? withDriver : undefined;
      },
      60_000,
      500,
    );
    for (const node of registered) {
      const driver = node.spec.drivers!.find((d) => d.name === CSI_DRIVER)!;
      expect(driver.nodeID).toBe(node.metadata.name);
      expect(driver.topologyKeys).toEqual([CSI_TOPOLOGY_KEY]);
    }
    // The kubelet labels its node with the topology the plugin reported.
    const nodes = await getJson<{ items: Item[] }>(['get', 'nodes']);
    for (const node of nodes.items) {
      expect(node.metadata.labels?.[CSI_TOPOLOGY_KEY]).toBe(node.metadata.name);
    }
  });

  let handle: string;
  let volumeNode: string;

  it("provisions the waiting claim on its pod's node, and the pod writes and reads the volume", async () => {
    const bound = await kubectl([
      'wait',
      'pvc/data',
      '--for=jsonpath={.status.phase}=Bound',
      '--timeout=120s',
    ]);
    expect(bound.exitCode, bound.stderr).toBe(0);
    const ready = await kubectl(['wait', 'pod/writer', '--for=condition=Ready', '--timeout=120s']);
    expect(ready.exitCode, ready.stderr).toBe(0);

    const pvc = await getJson<Claim>(['get', 'pvc', 'data']);
    const pv = await getJson<Volume>(['get', 'pv', pvc.spec.volumeName!]);
    const pod = await getJson<Pod>(['get', 'pod', 'writer']);
    handle = pv.spec.csi.volumeHandle;
    volumeNode = pod.spec.nodeName!;
    expect(pv.spec.csi.driver).toBe(CSI_DRIVER);
    expect(pv.spec.nodeAffinity.required.nodeSelectorTerms).toEqual([
      { matchExpressions: [{ key: CSI_TOPOLOGY_KEY, operator: 'In', values: [volumeNode] }] },
    ]);
    expect((await claimEvents()).map((e) => e.reason)).toContain('ProvisioningSucceeded');

    const read = await kubectl(['exec', 'writer', '--', 'cat', '/data/hello']);
    expect(read.exitCode, read.stderr).toBe(0);
    expect(read.stdout.trim()).toBe('written by writer');
    // The file is in the volume's folder on that node: the plugin's bind mount reached the pod.
    const onDisk = await execInContainer(volumeNode, ['cat', `${CSI_DATA_DIR}/${handle}/hello`]);
    expect(onDisk.exitCode, onDisk.stderr).toBe(0);
    expect(onDisk.stdout.trim()).toBe('written by writer');
    expect((await mountsOf(volumeNode, handle)).length).toBeGreaterThan(0);
  });

  it('keeps the data for the next pod, which the volume brings to the same node', async () => {
    const deleted = await kubectl(['delete', 'pod', 'writer', '--wait=true', '--timeout=120s']);
    expect(deleted.exitCode, deleted.stderr).toBe(0);
    // NodeUnpublishVolume took the bind mount away with the pod.
    expect(await mountsOf(volumeNode, handle)).toEqual([]);

    await apply(podOnData('reader', false));
    const ready = await kubectl(['wait', 'pod/reader', '--for=condition=Ready', '--timeout=120s']);
    expect(ready.exitCode, ready.stderr).toBe(0);
    const pod = await getJson<Pod>(['get', 'pod', 'reader']);
    expect(pod.spec.nodeName).toBe(volumeNode);
    const read = await kubectl(['exec', 'reader', '--', 'cat', '/data/hello']);
    expect(read.exitCode, read.stderr).toBe(0);
    expect(read.stdout.trim()).toBe('written by writer');
  });

  it('deletes the volume and its folder with the claim', async () => {
    const pvc = await getJson<Claim>(['get', 'pvc', 'data']);
    const deleted = await kubectl(['delete', 'pod/reader', 'pvc/data', '--wait=true', '--timeout=120s']);
    expect(deleted.exitCode, deleted.stderr).toBe(0);
    const gone = await kubectl(['wait', '--for=delete', `pv/${pvc.spec.volumeName!}`, '--timeout=120s']);
    expect(gone.exitCode, gone.stderr).toBe(0);
    const folder = await execInContainer(volumeNode, ['test', '-e', `${CSI_DATA_DIR}/${handle}`]);
    expect(folder.exitCode).toBe(1);
    expect(await mountsOf(volumeNode, handle)).toEqual([]);
  });
});
