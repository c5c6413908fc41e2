import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import {
  LOCAL_PATH_HELPER_IMAGE,
  LOCAL_PATH_PROVISIONER_IMAGE,
  LOCAL_VOLUMES_DIR,
} from '../../shared/contract.js';
import { LOCAL_PATH, localPathStorage, storageManifests } from '../../node-agent/storage-manifests.js';

type Obj = Record<string, unknown>;
type Rule = { resources: string[]; verbs: string[] };

/** The value at a dotted path (`spec.template.spec.containers.0`) of a manifest. */
function pick(value: unknown, path: string): unknown {
  return path.split('.').reduce<unknown>((at, key) => (at as Obj | undefined)?.[key], value);
}

function find(items: Obj[], kind: string): Obj {
  const found = items.find((i) => i.kind === kind);
  if (!found) throw new Error(`no ${kind}`);
  return found;
}

const options = { provisionerImage: 'p:1', helperImage: 'h:1', volumesDir: '/var/volumes' };
const items = localPathStorage(options);
const configMapData = (from: Obj[]) => pick(find(from, 'ConfigMap'), 'data') as Record<string, string>;

describe('storage manifests', () => {
  it('storage: none applies nothing, storage: default the provisioner and its class', () => {
    expect(storageManifests('none')).toEqual([]);
    expect(storageManifests('default').map((i) => i.kind)).toEqual([
      'Namespace',
      'ServiceAccount',
      'ClusterRole',
      'ClusterRoleBinding',
      'Role',
      'RoleBinding',
      'ConfigMap',
      'Deployment',
      'StorageClass',
    ]);
  });

  it('the namespace comes first, so every namespaced object after it can be created', () => {
    expect(items[0]).toMatchObject({ kind: 'Namespace', metadata: { name: LOCAL_PATH.namespace } });
    for (const item of items.slice(1)) {
      const clusterScoped = ['ClusterRole', 'ClusterRoleBinding', 'StorageClass'].includes(
        item.kind as string,
      );
      expect(pick(item, 'metadata.namespace'), item.kind as string).toBe(
        clusterScoped ? undefined : LOCAL_PATH.namespace,
      );
    }
  });

  it('the class is the default one, named standard, bound where the pod is scheduled, deleted with its claim', () => {
    expect(find(items, 'StorageClass')).toEqual({
      apiVersion: 'storage.k8s.io/v1',
      kind: 'StorageClass',
      metadata: {
        name: 'standard',
        annotations: { 'storageclass.kubernetes.io/is-default-class': 'true' },
      },
      provisioner: 'rancher.io/local-path',
      volumeBindingMode: 'WaitForFirstConsumer',
      reclaimPolicy: 'Delete',
    });
  });

  it('volumes live in the configured folder, made and removed by the helper image', () => {
    expect(pick(find(items, 'ConfigMap'), 'metadata.name')).toBe('local-path-config');
    const data = configMapData(items);
    expect(JSON.parse(data['config.json']!)).toEqual({
      nodePathMap: [{ node: 'DEFAULT_PATH_FOR_NON_LISTED_NODES', paths: ['/var/volumes'] }],
    });
    expect(data.setup).toBe('#!/bin/sh\nset -eu\nmkdir -m 0777 -p "$VOL_DIR"\n');
    expect(data.teardown).toBe('#!/bin/sh\nset -eu\nrm -rf "$VOL_DIR"\n');
    const helper = parse(data['helperPod.yaml']!) as unknown;
    expect(pick(helper, 'kind')).toBe('Pod');
    expect(pick(helper, 'spec.automountServiceAccountToken')).toBe(false);
    expect(pick(helper, 'spec.containers.length')).toBe(1);
    // The provisioner reads the helper's log by this container name.
    expect(pick(helper, 'spec.containers.0')).toMatchObject({
      name: 'helper-pod',
      image: 'h:1',
      imagePullPolicy: 'IfNotPresent',
    });
  });

  it('the defaults are the preloaded images and the folder on the node volume', () => {
    const defaults = storageManifests('default');
    const container = pick(find(defaults, 'Deployment'), 'spec.template.spec.containers.0');
    expect(pick(container, 'image')).toBe(LOCAL_PATH_PROVISIONER_IMAGE);
    expect(pick(container, 'env')).toContainEqual({ name: 'HELPER_IMAGE', value: LOCAL_PATH_HELPER_IMAGE });
    const data = configMapData(defaults);
    expect(pick(parse(data['helperPod.yaml']!), 'spec.containers.0.image')).toBe(LOCAL_PATH_HELPER_IMAGE);
    expect(pick(JSON.parse(data['config.json']!), 'nodePathMap.0.paths')).toEqual([LOCAL_VOLUMES_DIR]);
    expect(LOCAL_VOLUMES_DIR.startsWith('/var/')).toBe(true);
  });

  it('the provisioner runs alone, unprivileged, reading its configuration from the mounted map', () => {
    const deployment = find(items, 'Deployment');
    expect(pick(deployment, 'spec.replicas')).toBe(1);
    expect(pick(deployment, 'spec.strategy')).toEqual({ type: 'Recreate' });
    const pod = pick(deployment, 'spec.template.spec');
    expect(pick(pod, 'serviceAccountName')).toBe(LOCAL_PATH.name);
    expect(pick(pod, 'volumes')).toEqual([{ name: 'config', configMap: { name: 'local-path-config' } }]);
    const container = pick(pod, 'containers.0');
    expect(pick(container, 'args')).toEqual(['start', '--config', '/etc/config/config.json']);
    expect(pick(container, 'env')).toContainEqual({ name: 'CONFIG_MOUNT_PATH', value: '/etc/config/' });
    expect(pick(container, 'env')).toContainEqual({ name: 'SERVICE_ACCOUNT_NAME', value: LOCAL_PATH.name });
    expect(pick(container, 'volumeMounts')).toEqual([
      { name: 'config', mountPath: '/etc/config/', readOnly: true },
    ]);
    expect(pick(container, 'securityContext')).toMatchObject({
      runAsNonRoot: true,
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
    });
  });

  it('the namespace admits the helper pods, which mount the node folder, whatever the default level', () => {
    expect(pick(find(items, 'Namespace'), 'metadata.labels')).toEqual({
      'pod-security.kubernetes.io/enforce': 'privileged',
    });
  });

  it('RBAC: volumes cluster-wide, pods and configuration only in its own namespace, bound to its account', () => {
    const clusterRules = pick(find(items, 'ClusterRole'), 'rules') as Rule[];
    const clusterResources = clusterRules.flatMap((r) => r.resources);
    expect(clusterResources).toContain('persistentvolumes');
    expect(clusterResources).not.toContain('pods');
    expect(clusterResources).not.toContain('configmaps');
    const volumes = clusterRules.find((r) => r.resources.includes('persistentvolumes'));
    expect(volumes?.verbs).toEqual(expect.arrayContaining(['create', 'delete']));
    const roleRules = pick(find(items, 'Role'), 'rules') as Rule[];
    expect(roleRules.flatMap((r) => r.resources)).toEqual(['configmaps', 'pods', 'pods/log']);
    for (const kind of ['ClusterRoleBinding', 'RoleBinding']) {
      const binding = find(items, kind);
      expect(pick(binding, 'subjects')).toEqual([
        { kind: 'ServiceAccount', name: LOCAL_PATH.name, namespace: LOCAL_PATH.namespace },
      ]);
      expect(pick(binding, 'roleRef')).toMatchObject({
        kind: kind.replace('Binding', ''),
        name: LOCAL_PATH.name,
      });
    }
  });
});
