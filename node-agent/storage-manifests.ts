// The default StorageClass (`storage: default`): local-path-provisioner makes one folder per volume on
// the node the pod was scheduled to, under LOCAL_VOLUMES_DIR on that node's /var volume, and removes
// it when the claim goes. Pure functions, applied by the control plane with CoreDNS.

import {
  LOCAL_PATH_HELPER_IMAGE,
  LOCAL_PATH_PROVISIONER_IMAGE,
  LOCAL_VOLUMES_DIR,
  type StorageChoice,
} from '../shared/contract.js';
import { stringify } from 'yaml';

type Manifest = Record<string, unknown>;

export const LOCAL_PATH = {
  namespace: 'local-path-storage',
  name: 'local-path-provisioner',
  configMap: 'local-path-config',
  /** The provisioner's own name for itself, which a StorageClass names. */
  provisioner: 'rancher.io/local-path',
  /** kind's name for its default class, so manifests written for kind find it. */
  storageClass: 'standard',
} as const;

export interface LocalPathOptions {
  provisionerImage: string;
  helperImage: string;
  /** The folder on every node that holds the volumes. */
  volumesDir: string;
}

const DEFAULTS: LocalPathOptions = {
  provisionerImage: LOCAL_PATH_PROVISIONER_IMAGE,
  helperImage: LOCAL_PATH_HELPER_IMAGE,
  volumesDir: LOCAL_VOLUMES_DIR,
};

/** What the control plane applies for a storage choice: everything below, or nothing. */
export function storageManifests(choice: StorageChoice, options: LocalPathOptions = DEFAULTS): Manifest[] {
  return choice === 'default' ? localPathStorage(options) : [];
}

// The helper pod runs these with the volume's folder in VOL_DIR. Every pod may write the folder, as
// a hostPath volume would let it: the pod's user is not known here.
const SETUP = ['#!/bin/sh', 'set -eu', 'mkdir -m 0777 -p "$VOL_DIR"', ''].join('\n');
const TEARDOWN = ['#!/bin/sh', 'set -eu', 'rm -rf "$VOL_DIR"', ''].join('\n');

/** The pod the provisioner copies for each folder it makes or removes, on the volume's node. */
export function helperPodTemplate(image: string): Manifest {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: 'helper-pod' },
    spec: {
      priorityClassName: 'system-node-critical',
      // It touches only the node's folder; the service account it runs as has no use for a token.
      automountServiceAccountToken: false,
      containers: [
        {
          // The provisioner reads this container's log by this name.
          name: 'helper-pod',
          image,
          imagePullPolicy: 'IfNotPresent',
          resources: { requests: { cpu: '10m', memory: '8Mi' } },
        },
      ],
    },
  };
}

function localPathConfig(options: LocalPathOptions): Manifest {
  const config = {
    nodePathMap: [{ node: 'DEFAULT_PATH_FOR_NON_LISTED_NODES', paths: [options.volumesDir] }],
  };
  return {
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: { name: LOCAL_PATH.configMap, namespace: LOCAL_PATH.namespace },
    data: {
      'config.json': `${JSON.stringify(config, null, 2)}\n`,
      setup: SETUP,
      teardown: TEARDOWN,
      'helperPod.yaml': stringify(helperPodTemplate(options.helperImage)),
    },
  };
}

function rbac(): Manifest[] {
  const subject = { kind: 'ServiceAccount', name: LOCAL_PATH.name, namespace: LOCAL_PATH.namespace };
  const roleRef = (kind: string) => ({ apiGroup: 'rbac.authorization.k8s.io', kind, name: LOCAL_PATH.name });
  return [
    {
      apiVersion: 'v1',
      kind: 'ServiceAccount',
      metadata: { name: LOCAL_PATH.name, namespace: LOCAL_PATH.namespace },
    },
    {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'ClusterRole',
      metadata: { name: LOCAL_PATH.name },
      rules: [
        { apiGroups: [''], resources: ['nodes'], verbs: ['get', 'list', 'watch'] },
        // update: a claim whose node cannot take the volume is handed back to the scheduler.
        { apiGroups: [''], resources: ['persistentvolumeclaims'], verbs: ['get', 'list', 'watch', 'update'] },
        {
          apiGroups: [''],
          resources: ['persistentvolumes'],
          verbs: ['get', 'list', 'watch', 'create', 'patch', 'update', 'delete'],
        },
        { apiGroups: [''], resources: ['events'], verbs: ['create', 'patch'] },
        { apiGroups: ['storage.k8s.io'], resources: ['storageclasses'], verbs: ['get', 'list', 'watch'] },
      ],
    },
    {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'ClusterRoleBinding',
      metadata: { name: LOCAL_PATH.name },
      roleRef: roleRef('ClusterRole'),
      subjects: [subject],
    },
    // Its own namespace only: its configuration, and the helper pods with their logs.
    {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'Role',
      metadata: { name: LOCAL_PATH.name, namespace: LOCAL_PATH.namespace },
      rules: [
        { apiGroups: [''], resources: ['configmaps'], verbs: ['get', 'list', 'watch'] },
        { apiGroups: [''], resources: ['pods'], verbs: ['get', 'list', 'watch', 'create', 'delete'] },
        { apiGroups: [''], resources: ['pods/log'], verbs: ['get'] },
      ],
    },
    {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'RoleBinding',
      metadata: { name: LOCAL_PATH.name, namespace: LOCAL_PATH.namespace },
      roleRef: roleRef('Role'),
      subjects: [subject],
    },
  ];
}

function deployment(options: LocalPathOptions): Manifest {
  const labels = { app: LOCAL_PATH.name };
  const configDir = '/etc/config/';
  return {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: { name: LOCAL_PATH.name, namespace: LOCAL_PATH.namespace, labels },
    spec: {
      replicas: 1,
      // It runs without leader election: never two at once, not even during a rollout.
      strategy: { type: 'Recreate' },
      selector: { matchLabels: labels },
      template: {
        metadata: { labels },
        spec: {
          serviceAccountName: LOCAL_PATH.name,
          containers: [
            {
              name: 'local-path-provisioner',
              image: options.provisionerImage,
              imagePullPolicy: 'IfNotPresent',
              args: ['start', '--config', `${configDir}config.json`],
              env: [
                { name: 'POD_NAMESPACE', valueFrom: { fieldRef: { fieldPath: 'metadata.namespace' } } },
                { name: 'SERVICE_ACCOUNT_NAME', value: LOCAL_PATH.name },
                { name: 'CONFIG_MOUNT_PATH', value: configDir },
                { name: 'HELPER_IMAGE', value: options.helperImage },
              ],
              resources: { requests: { cpu: '10m', memory: '24Mi' } },
              volumeMounts: [{ name: 'config', mountPath: configDir, readOnly: true }],
              securityContext: {
                allowPrivilegeEscalation: false,
                capabilities: { drop: ['ALL'] },
                readOnlyRootFilesystem: true,
                runAsNonRoot: true,
                runAsUser: 65534,
                runAsGroup: 65534,
                seccompProfile: { type: 'RuntimeDefault' },
              },
            },
          ],
          volumes: [{ name: 'config', configMap: { name: LOCAL_PATH.configMap } }],
        },
      },
    },
  };
}

export function localPathStorage(options: LocalPathOptions = DEFAULTS): Manifest[] {
  return [
    {
      apiVersion: 'v1',
      kind: 'Namespace',
      metadata: {
        name: LOCAL_PATH.namespace,
        // The helper pods mount the node's folder and run as root, whatever the cluster's default level.
        labels: { 'pod-security.kubernetes.io/enforce': 'privileged' },
      },
    },
    ...rbac(),
    localPathConfig(options),
    deployment(options),
    {
      apiVersion: 'storage.k8s.io/v1',
      kind: 'StorageClass',
      metadata: {
        name: LOCAL_PATH.storageClass,
        annotations: { 'storageclass.kubernetes.io/is-default-class': 'true' },
      },
      provisioner: LOCAL_PATH.provisioner,
      // The folder is made on the node the scheduler picked for the pod, not on one picked blindly.
      volumeBindingMode: 'WaitForFirstConsumer',
      reclaimPolicy: 'Delete',
    },
  ];
}
