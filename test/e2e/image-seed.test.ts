// The node image ships containerd's root with the preloaded images unpacked (the build's seed): a
// fresh worker starts with every one of them, imports nothing, runs containers whose lower layers are
// the seed's, and after a restart keeps the root it made.

import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dockerRuntime } from '../../cli/runtime/docker-runtime.js';
import {
  COREDNS_IMAGE,
  LABELS,
  LOCAL_PATH_HELPER_IMAGE,
  LOCAL_PATH_PROVISIONER_IMAGE,
  METRICS_SERVER_IMAGE,
  PAUSE_IMAGE,
  PRELOADED_IMAGES_DIR,
  SEED,
} from '../../shared/contract.js';
import {
  docker,
  execInContainer,
  NODE_IMAGE,
  removeByLabel,
  requireNodeImage,
  uniqueName,
  startBareRuntimeNode,
  waitForRuntimeReady,
} from './helpers.js';

const cluster = uniqueName('e2e-seed');
const name = `vind-${cluster}-worker`;
const SNAPSHOTS = '/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots';
const PRELOADED = [
  PAUSE_IMAGE,
  COREDNS_IMAGE,
  METRICS_SERVER_IMAGE,
  LOCAL_PATH_PROVISIONER_IMAGE,
  LOCAL_PATH_HELPER_IMAGE,
];

async function sh(command: string) {
  return execInContainer(name, ['sh', '-c', command]);
}

describe('the seeded node image', () => {
  beforeAll(async () => {
    await requireNodeImage();
    // A worker with no cluster to join: containerd and the preloaded images, nothing else.
    await startBareRuntimeNode(cluster, name);
  });

  afterAll(async () => {
    await removeByLabel(cluster);
  });

  it('holds the seed instead of the archives, and is still the image its inputs hash names', async () => {
    const listed = await execa(
      'docker',
      [
        'run',
        '--rm',
        '--entrypoint',
        'sh',
        NODE_IMAGE,
        '-c',
        `ls ${SEED.containerdRoot}; ls ${PRELOADED_IMAGES_DIR}`,
      ],
      { reject: false },
    );
    expect(listed.stdout).toContain('io.containerd.metadata.v1.bolt');
    expect(listed.stderr).toContain(`${PRELOADED_IMAGES_DIR}': No such file or directory`);
    const { Config: config } = await docker().getImage(NODE_IMAGE).inspect();
    expect(config.Cmd).toEqual(['worker']);
    expect(config.Entrypoint?.[0]).toBe('/usr/bin/tini');
    expect(config.Labels[LABELS.inputsHash]).toMatch(/^[0-9a-f]{64}$/);
  });

  it('starts with every preloaded image and imports none', async () => {
    const images = (await sh('ctr -n k8s.io images ls -q')).stdout.split('\n');
    expect(images).toEqual(expect.arrayContaining(PRELOADED));
    // Pinned as on a node that imported them: the kubelet's image collection never takes them.
    const listing = (await sh('ctr -n k8s.io images ls')).stdout.split('\n');
    for (const pinned of [PAUSE_IMAGE, LOCAL_PATH_PROVISIONER_IMAGE, LOCAL_PATH_HELPER_IMAGE]) {
      expect(listing.find((line) => line.startsWith(`${pinned} `))).toContain(
        'io.cri-containerd.pinned=pinned',
      );
    }
    const logs = await dockerRuntime().logs(name);
    expect(logs).toContain("containerd root from the image's seed");
    expect(logs).not.toContain('imported ');
  });

  it('links the committed snapshots into the image and keeps the databases on the volume', async () => {
    const links = (await sh(`for s in ${SNAPSHOTS}/*; do readlink "$s"; done`)).stdout.trim().split('\n');
    expect(links.filter((link) => link.startsWith(`${SEED.containerdRoot}/`))).toHaveLength(PRELOADED.length);
    const metadata = await sh('stat -c %F /var/lib/containerd/io.containerd.metadata.v1.bolt/meta.db');
    expect(metadata.stdout.trim()).toBe('regular file');
  });

  it("runs a container on the seed's layer, its writes on the volume", async () => {
    const run = await sh(
      `ctr -n k8s.io run --rm ${LOCAL_PATH_HELPER_IMAGE} e2e-seed sh -c 'echo written > /probe && cat /probe && ls /bin/busybox'`,
    );
    expect(run.exitCode, run.stderr).toBe(0);
    expect(run.stdout).toContain('written');
    expect(run.stdout).toContain('/bin/busybox');
    // The seed itself is untouched: the write went to the container's own upper layer.
    const seeded = await sh(`find ${SEED.containerdRoot} -name probe | wc -l`);
    expect(seeded.stdout.trim()).toBe('0');
  });

  it('keeps its root across a restart', async () => {
    const tagged = await sh(`ctr -n k8s.io images tag ${PAUSE_IMAGE} vind.dev/e2e-kept:1`);
    expect(tagged.exitCode, tagged.stderr).toBe(0);
    await docker().getContainer(name).restart({ t: 5 });
    await waitForRuntimeReady(name);
    expect((await sh('ctr -n k8s.io images ls -q')).stdout.split('\n')).toContain('vind.dev/e2e-kept:1');
    const logs = await dockerRuntime().logs(name);
    expect(logs.split("containerd root from the image's seed")).toHaveLength(2);
  });
});
