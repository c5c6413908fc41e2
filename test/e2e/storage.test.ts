// The default StorageClass on a real cluster (a control plane and two workers):
// - one default class, `standard`, served by local-path-provisioner;
// - a claim stays Pending until a pod uses it, then binds on that pod's node;
// - what a pod wrote is read by the next pod of the claim, and survives `vind sleep --mode stop` and
//   `wake`, and a `docker restart` of the worker that holds it;
// - deleting the claim removes the volume and its folder on the node.
// And a cluster made with `storage: none` in its config file has no StorageClass at all.

import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LOCAL_PATH_HELPER_IMAGE, LOCAL_VOLUMES_DIR, PAUSE_IMAGE } from '../../shared/contract.js';
import {
  docker,
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

const DEFAULT_CLASS_ANNOTATION = 'storageclass.kubernetes.io/is-default-class';

interface StorageClass {
  metadata: { name: string; annotations?: Record<string, string> };
  provisioner: string;
  volumeBindingMode: string;
  reclaimPolicy: string;
}

interface Claim {
  spec: { storageClassName?: string; volumeName?: string };
  status: { phase: string };
}

interface Volume {
  spec: {
    hostPath?: { path: string };
    local?: { path: string };
    nodeAffinity?: { required: { nodeSelectorTerms: { matchExpressions: { values: string[] }[] }[] } };
  };
}

interface Pod {
  spec: { nodeName?: string };
  status: { containerStatuses?: { containerID?: string; ready: boolean }[] };
}

type Kubectl = ReturnType<typeof kubectlFor>;

async function ok(kubectl: Kubectl, args: string[], input?: string): Promise<string> {
  const result = await kubectl(args, input);
  expect(result.exitCode, `kubectl ${args.join(' ')}: ${result.stderr}`).toBe(0);
  return result.stdout;
}

async function getJson<T>(kubectl: Kubectl, args: string[]): Promise<T> {
  return JSON.parse(await ok(kubectl, ['get', ...args, '-o', 'json'])) as T;
}

async function createCluster(name: string, kubeconfig: string, extra: string[]): Promise<void> {
  const created = await runVind(['create', name, '--image', NODE_IMAGE, ...extra], {
    KUBECONFIG: kubeconfig,
  });
  expect(created.exitCode, created.stderr).toBe(0);
}

describe('storage: default', () => {
  const cluster = uniqueName('st-e2e-storage');
  let scratch: string;
  let kubectl: Kubectl;
  const written = `kept-${Math.random().toString(36).slice(2, 10)}`;
  /** Set once the claim is bound: the volume, its node (the node's container), its folder there. */
  let volume: { name: string; node: string; path: string };

  const claim = () => getJson<Claim>(kubectl, ['pvc', 'data']);

  function podManifest(name: string, script: string): string {
    return JSON.stringify(podOnClaim(name, 'data', script));
  }

  /** The pod's container, to tell a container started anew from the one before. */
  async function containerId(pod: string): Promise<string | undefined> {
    return (await getJson<Pod>(kubectl, ['pod', pod])).status.containerStatuses?.[0]?.containerID;
  }

  /** Waits for the pod to run a container other than `before`, ready, and returns what it reads. */
  async function readAfterRestart(pod: string, before: string | undefined): Promise<string> {
    await waitFor(
      `pod ${pod} to run again`,
      async () => {
        const status = (await getJson<Pod>(kubectl, ['pod', pod])).status.containerStatuses?.[0];
        return status?.ready && status.containerID !== before ? true : undefined;
      },
      180_000,
      1000,
    );
    return ok(kubectl, ['exec', pod, '--', 'cat', '/data/file']);
  }

  beforeAll(async () => {
    await requireNodeImage();
    await ensureTestImage();
    scratch = await mkdtemp(join(tmpdir(), 'vind-e2e-storage-'));
    const kubeconfig = join(scratch, 'kubeconfig');
    kubectl = kubectlFor(await kubectlBinary(), kubeconfig);
    await createCluster(cluster, kubeconfig, ['--workers', '2']);
  }, 600_000);

  afterAll(async () => {
    await runVind(['delete', cluster]);
    await removeByLabel(cluster);
    if (scratch) await rm(scratch, { recursive: true, force: true });
  }, 180_000);

  it('has one default StorageClass, standard, served by local-path-provisioner', async () => {
    const classes = (await getJson<{ items: StorageClass[] }>(kubectl, ['storageclass'])).items;
    const defaults = classes.filter((c) => c.metadata.annotations?.[DEFAULT_CLASS_ANNOTATION] === 'true');
    expect(defaults.map((c) => c.metadata.name)).toEqual(['standard']);
    expect(defaults[0]).toMatchObject({
      provisioner: 'rancher.io/local-path',
      volumeBindingMode: 'WaitForFirstConsumer',
      reclaimPolicy: 'Delete',
    });
    await ok(kubectl, [
      'wait',
      '--for=condition=Available',
      '-n',
      'local-path-storage',
      'deployment/local-path-provisioner',
      '--timeout=180s',
    ]);
  });

  it('keeps the helper image on every worker, pinned as the pause image is', async () => {
    for (const worker of [`${cluster}-worker`, `${cluster}-worker2`]) {
      const pinned = async (image: string) => {
        const listed = await execInContainer(worker, ['ctr', '-n', 'k8s.io', 'images', 'ls']);
        const line = listed.stdout.split('\n').find((l) => l.startsWith(`${image} `));
        return line?.includes('io.cri-containerd.pinned=pinned') ? true : undefined;
      };
      // The pause image is the control: containerd pins what its configuration names.
      await waitFor(`${PAUSE_IMAGE} pinned on ${worker}`, () => pinned(PAUSE_IMAGE), 30_000, 500);
      await waitFor(
        `${LOCAL_PATH_HELPER_IMAGE} pinned on ${worker}`,
        () => pinned(LOCAL_PATH_HELPER_IMAGE),
        30_000,
        500,
      );
    }
  });

  it('keeps a claim Pending until a pod uses it, then binds it on the node of that pod', async () => {
    await ok(
      kubectl,
      ['apply', '-f', '-'],
      JSON.stringify({
        apiVersion: 'v1',
        kind: 'PersistentVolumeClaim',
        metadata: { name: 'data' },
        spec: { accessModes: ['ReadWriteOnce'], resources: { requests: { storage: '16Mi' } } },
      }),
    );
    // The volume controller says so in an Event once it has seen the claim and chosen to wait.
    await waitFor(
      'the claim to wait for its first consumer',
      async () => {
        const events = await ok(kubectl, [
          'get',
          'events',
          '--field-selector',
          'involvedObject.kind=PersistentVolumeClaim,involvedObject.name=data,reason=WaitForFirstConsumer',
          '-o',
          'name',
        ]);
        return events.trim() ? true : undefined;
      },
      60_000,
      500,
    );
    const waiting = await claim();
    expect(waiting.spec.storageClassName).toBe('standard');
    expect(waiting.status.phase).toBe('Pending');
    expect(waiting.spec.volumeName).toBeFalsy();

    await ok(
      kubectl,
      ['apply', '-f', '-'],
      podManifest('writer', `echo ${written} > /data/file && exec sleep 100000`),
    );
    await ok(kubectl, ['wait', '--for=condition=Ready', 'pod/writer', '--timeout=180s']);
    const bound = await claim();
    expect(bound.status.phase).toBe('Bound');
    const pv = await getJson<Volume>(kubectl, ['pv', bound.spec.volumeName!]);
    const node = (await getJson<Pod>(kubectl, ['pod', 'writer'])).spec.nodeName!;
    expect(node).toMatch(new RegExp(`^${cluster}-worker2?$`));
    expect(pv.spec.nodeAffinity?.required.nodeSelectorTerms[0]?.matchExpressions[0]?.values).toEqual([node]);
    const path = pv.spec.hostPath?.path ?? pv.spec.local?.path ?? '';
    expect(path.startsWith(`${LOCAL_VOLUMES_DIR}/`)).toBe(true);
    volume = { name: bound.spec.volumeName!, node, path };

    // The folder is on the node's own /var, which is the node container's Docker volume.
    const inNode = await execInContainer(node, ['cat', `${path}/file`]);
    expect(inNode.stdout.trim()).toBe(written);
    const mounts = (await docker().getContainer(node).inspect()).Mounts;
    expect(mounts.find((m) => m.Destination === '/var')?.Type).toBe('volume');
  });

  it('a new pod of the claim reads what the deleted pod wrote, on the same node', async () => {
    await ok(kubectl, ['delete', 'pod', 'writer', '--wait=true']);
    await ok(kubectl, ['apply', '-f', '-'], podManifest('reader', 'exec sleep 100000'));
    await ok(kubectl, ['wait', '--for=condition=Ready', 'pod/reader', '--timeout=180s']);
    expect((await getJson<Pod>(kubectl, ['pod', 'reader'])).spec.nodeName).toBe(volume.node);
    expect((await ok(kubectl, ['exec', 'reader', '--', 'cat', '/data/file'])).trim()).toBe(written);
  });

  it('keeps the data through vind sleep --mode stop and wake', async () => {
    const before = await containerId('reader');
    const slept = await runVind(['sleep', cluster, '--mode', 'stop']);
    expect(slept.exitCode, slept.stderr).toBe(0);
    expect((await docker().getContainer(volume.node).inspect()).State.Running).toBe(false);
    const woke = await runVind(['wake', cluster]);
    expect(woke.exitCode, woke.stderr).toBe(0);
    expect((await readAfterRestart('reader', before)).trim()).toBe(written);
  });

  it('keeps the data through a docker restart of the worker that holds it', async () => {
    const before = await containerId('reader');
    const startedAt = (await docker().getContainer(volume.node).inspect()).State.StartedAt;
    await docker().getContainer(volume.node).restart();
    expect((await docker().getContainer(volume.node).inspect()).State.StartedAt).not.toBe(startedAt);
    expect((await readAfterRestart('reader', before)).trim()).toBe(written);
  });

  it('deleting the claim removes its volume and the folder on the node', async () => {
    expect((await execInContainer(volume.node, ['test', '-d', volume.path])).exitCode).toBe(0);
    await ok(kubectl, ['delete', 'pod', 'reader', '--wait=true']);
    await ok(kubectl, ['delete', 'pvc', 'data', '--wait=true']);
    await waitFor(
      `volume ${volume.name} to be deleted`,
      async () => ((await kubectl(['get', 'pv', volume.name])).exitCode !== 0 ? true : undefined),
      120_000,
      500,
    );
    const gone = await kubectl(['get', 'pv', volume.name]);
    expect(gone.stderr).toContain('NotFound');
    expect((await execInContainer(volume.node, ['test', '-e', volume.path])).exitCode).not.toBe(0);
    // Its parent, the node's folder of volumes, stays.
    expect((await execInContainer(volume.node, ['test', '-d', LOCAL_VOLUMES_DIR])).exitCode).toBe(0);
  });
});

describe('storage: none', () => {
  const cluster = uniqueName('st-e2e-nostorage');
  let scratch: string;
  let kubectl: Kubectl;

  beforeAll(async () => {
    await requireNodeImage();
    scratch = await mkdtemp(join(tmpdir(), 'vind-e2e-nostorage-'));
    const kubeconfig = join(scratch, 'kubeconfig');
    const config = join(scratch, 'cluster.yaml');
    await writeFile(config, 'apiVersion: vind.dev/v1alpha1\nkind: Cluster\nstorage: none\n');
    kubectl = kubectlFor(await kubectlBinary(), kubeconfig);
    await createCluster(cluster, kubeconfig, ['--workers', '1', '--config', config]);
  }, 600_000);

  afterAll(async () => {
    await runVind(['delete', cluster]);
    await removeByLabel(cluster);
    if (scratch) await rm(scratch, { recursive: true, force: true });
  }, 180_000);

  it('has no StorageClass and no provisioner', async () => {
    // CoreDNS, applied together with the storage objects, is there: what is missing was left out.
    await ok(kubectl, ['get', '-n', 'kube-system', 'deployment/coredns']);
    const classes = (await getJson<{ items: StorageClass[] }>(kubectl, ['storageclass'])).items;
    expect(classes).toEqual([]);
    const namespace = await kubectl(['get', 'namespace', 'local-path-storage']);
    expect(namespace.exitCode).not.toBe(0);
    expect(namespace.stderr).toContain('NotFound');
  });
});
