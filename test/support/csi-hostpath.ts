// A CSI driver a user could bring to a cluster created with `storage: none`: the test driver of
// test/fixtures/csi-hostpath (volumes are folders on the node that made them), its image, and the
// objects that install it the way CSI drivers are usually deployed: a CSIDriver, a per-node
// DaemonSet of plugin, registrar and provisioner sharing the plugin's socket, RBAC for the
// provisioner, and a StorageClass that waits for the first consumer.

import { readdir, readFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { dockerRuntime } from '../../cli/runtime/docker-runtime.js';
import { buildDockerArchive } from '../../images/docker-archive.js';
import { inputsHash, shortHash } from '../../images/inputs.js';
import { PROJECT_ROOT } from '../../images/project-root.js';

export const CSI_DRIVER = 'hostpath.csi.vind.dev';
export const CSI_NAMESPACE = 'csi-hostpath';
export const CSI_STORAGE_CLASS = 'csi-hostpath';
/** The node label the kubelet sets from the plugin's NodeGetInfo; volumes are pinned by it. */
export const CSI_TOPOLOGY_KEY = `topology.${CSI_DRIVER}/node`;
/** Where a node keeps its volumes, one folder each, named by the volume handle. */
export const CSI_DATA_DIR = '/var/lib/csi-hostpath-data';

/** The kubelet's folders, as every CSI node plugin sees them. */
const KUBELET_PODS = '/var/lib/kubelet/pods';
const KUBELET_REGISTRY = '/var/lib/kubelet/plugins_registry';
const PLUGIN_DIR = `/var/lib/kubelet/plugins/csi-hostpath`;

const SOURCE = join(PROJECT_ROOT, 'test', 'fixtures', 'csi-hostpath');

/**
 * The driver's one-binary image (plugin, registrar and provisioner are roles of it), compiled here
 * and loaded into the host's Docker, tagged by the hash of its sources and the Go version.
 */
export async function ensureCsiHostpathImage(): Promise<string> {
  const files = (await readdir(SOURCE)).filter((f) => f.endsWith('.go') || f.startsWith('go.')).sort();
  const parts: Record<string, Buffer | string> = {
    go: (await execa('go', ['env', 'GOVERSION'])).stdout.trim(),
  };
  for (const file of files) parts[file] = await readFile(join(SOURCE, file));
  const reference = `vind-test/csi-hostpath:${shortHash(inputsHash(parts))}`;
  if (await dockerRuntime().inspectImage(reference)) return reference;
  const scratch = await mkdtemp(join(tmpdir(), 'vind-csi-hostpath-'));
  try {
    const binary = join(scratch, 'csi-hostpath');
    const built = await execa('go', ['build', '-trimpath', '-ldflags=-s -w', '-o', binary, '.'], {
      cwd: SOURCE,
      env: { CGO_ENABLED: '0', GOFLAGS: '-mod=readonly', GOWORK: 'off' },
      reject: false,
    });
    if (built.exitCode !== 0) {
      throw new Error(`building the CSI test driver failed: ${built.stderr.trim().split('\n').at(-1)}`);
    }
    const archive = await buildDockerArchive({
      reference,
      files: [{ path: 'csi-hostpath', content: await readFile(binary), mode: 0o755 }],
      entrypoint: ['/csi-hostpath'],
    });
    await dockerRuntime().loadImage(archive.tar);
    return reference;
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}

const hostPath = (name: string, path: string, type: string) => ({ name, hostPath: { path, type } });
const nodeName = { name: 'NODE_NAME', valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } } };

/** Everything that installs the driver, as one List for `kubectl apply -f -`. */
export function csiHostpathManifests(image: string) {
  const items = [
    {
      apiVersion: 'v1',
      kind: 'Namespace',
      // The plugin mounts into the kubelet's folders: it needs a privileged pod, whatever the
      // cluster's default Pod Security level.
      metadata: { name: CSI_NAMESPACE, labels: { 'pod-security.kubernetes.io/enforce': 'privileged' } },
    },
    {
      apiVersion: 'storage.k8s.io/v1',
      kind: 'CSIDriver',
      metadata: { name: CSI_DRIVER },
      spec: {
        // A folder needs no attaching: the kubelet goes straight to NodePublishVolume.
        attachRequired: false,
        podInfoOnMount: true,
        volumeLifecycleModes: ['Persistent'],
      },
    },
    {
      apiVersion: 'v1',
      kind: 'ServiceAccount',
      metadata: { name: 'csi-hostpath', namespace: CSI_NAMESPACE },
    },
    {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'ClusterRole',
      metadata: { name: 'csi-hostpath-provisioner' },
      rules: [
        {
          apiGroups: [''],
          resources: ['persistentvolumes'],
          verbs: ['get', 'list', 'watch', 'create', 'delete'],
        },
        { apiGroups: [''], resources: ['persistentvolumeclaims'], verbs: ['get', 'list', 'watch'] },
        { apiGroups: [''], resources: ['nodes'], verbs: ['get', 'list', 'watch'] },
        { apiGroups: [''], resources: ['events'], verbs: ['create', 'patch', 'update'] },
        {
          apiGroups: ['storage.k8s.io'],
          resources: ['storageclasses', 'csinodes'],
          verbs: ['get', 'list', 'watch'],
        },
      ],
    },
    {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'ClusterRoleBinding',
      metadata: { name: 'csi-hostpath-provisioner' },
      subjects: [{ kind: 'ServiceAccount', name: 'csi-hostpath', namespace: CSI_NAMESPACE }],
      roleRef: {
        apiGroup: 'rbac.authorization.k8s.io',
        kind: 'ClusterRole',
        name: 'csi-hostpath-provisioner',
      },
    },
    {
      apiVersion: 'apps/v1',
      kind: 'DaemonSet',
      metadata: { name: 'csi-hostpath', namespace: CSI_NAMESPACE },
      spec: {
        selector: { matchLabels: { app: 'csi-hostpath' } },
        template: {
          metadata: { labels: { app: 'csi-hostpath' } },
          spec: {
            serviceAccountName: 'csi-hostpath',
            terminationGracePeriodSeconds: 5,
            containers: [
              {
                name: 'plugin',
                image,
                imagePullPolicy: 'IfNotPresent',
                args: [
                  'plugin',
                  '--endpoint=unix:///csi/csi.sock',
                  `--driver-name=${CSI_DRIVER}`,
                  '--node-id=$(NODE_NAME)',
                  '--data-dir=/csi-data-dir',
                ],
                env: [nodeName],
                securityContext: { privileged: true },
                volumeMounts: [
                  { name: 'socket-dir', mountPath: '/csi' },
                  // Its bind mounts must reach the kubelet's mount namespace, and from there the pods.
                  { name: 'pods-dir', mountPath: KUBELET_PODS, mountPropagation: 'Bidirectional' },
                  { name: 'data-dir', mountPath: '/csi-data-dir' },
                ],
              },
              {
                name: 'registrar',
                image,
                imagePullPolicy: 'IfNotPresent',
                args: [
                  'registrar',
                  '--csi-address=/csi/csi.sock',
                  `--kubelet-registration-path=${PLUGIN_DIR}/csi.sock`,
                  '--registration-dir=/registration',
                ],
                volumeMounts: [
                  { name: 'socket-dir', mountPath: '/csi' },
                  { name: 'registration-dir', mountPath: '/registration' },
                ],
              },
              {
                name: 'provisioner',
                image,
                imagePullPolicy: 'IfNotPresent',
                args: ['provisioner', '--csi-address=/csi/csi.sock'],
                env: [nodeName],
                volumeMounts: [{ name: 'socket-dir', mountPath: '/csi' }],
              },
            ],
            volumes: [
              hostPath('socket-dir', PLUGIN_DIR, 'DirectoryOrCreate'),
              hostPath('pods-dir', KUBELET_PODS, 'DirectoryOrCreate'),
              hostPath('registration-dir', KUBELET_REGISTRY, 'Directory'),
              hostPath('data-dir', CSI_DATA_DIR, 'DirectoryOrCreate'),
            ],
          },
        },
      },
    },
  ];
  return { apiVersion: 'v1', kind: 'List', items };
}

/** The class users claim from: a volume is made on the node the scheduler picked for its first pod. */
export function csiStorageClass() {
  return {
    apiVersion: 'storage.k8s.io/v1',
    kind: 'StorageClass',
    metadata: { name: CSI_STORAGE_CLASS },
    provisioner: CSI_DRIVER,
    volumeBindingMode: 'WaitForFirstConsumer',
    reclaimPolicy: 'Delete',
  };
}
