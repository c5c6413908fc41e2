// The embedded datastore's seed, on real clusters of one image with and without it:
// - a seeded control plane starts from the seed (an unseeded one does not), and ends with the same
//   bootstrap policy as an unseeded one: the same ClusterRoles, bindings, Roles, PriorityClasses,
//   FlowSchemas, priority levels and APIServices, with the same rules, and RBAC answers alike;
// - kube-system's UID, which tools take for the cluster's identity, differs between two clusters of
//   one seed;
// - the `kubernetes` Service, its ServiceCIDR and endpoints follow each cluster's own service subnet.

import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BOOTSTRAP_GROUP } from '../../node-agent/manifests.js';
import { controlPlaneName } from '../../shared/contract.js';
import { removeImages, seedVariants, type SeedVariants } from '../support/seeded-images.js';
import {
  docker,
  kubectlBinary,
  kubectlFor,
  NODE_IMAGE,
  removeByLabel,
  requireNodeImage,
  runVind,
  uniqueName,
  waitFor,
} from './helpers.js';

const SERVICE_SUBNET = '10.101.0.0/16';
const clusters = {
  seeded: uniqueName('e2e-seed'),
  // Of the same seed, with its own service subnet.
  second: uniqueName('e2e-seed-subnet'),
  unseeded: uniqueName('e2e-seed-none'),
};
type Which = keyof typeof clusters;

const BOOTSTRAP_KINDS = [
  'clusterroles',
  'clusterrolebindings',
  'roles',
  'rolebindings',
  'priorityclasses',
  'flowschemas',
  'prioritylevelconfigurations',
  'apiservices',
];

let scratch: string;
let images: SeedVariants | undefined;
const kubectl = {} as Record<Which, ReturnType<typeof kubectlFor>>;

async function json<T>(which: Which, args: string[]): Promise<T> {
  const result = await kubectl[which]([...args, '-o', 'json']);
  expect(result.exitCode, result.stderr).toBe(0);
  return JSON.parse(result.stdout) as T;
}

interface Item {
  metadata: {
    name: string;
    namespace?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
  };
  [field: string]: unknown;
}

/**
 * What the cluster's bootstrap objects say, by kind and name: rules, bindings, values and specs, but
 * not what every object has of its own (uid, times, versions) nor the metrics APIService's CA, which
 * is each cluster's.
 */
async function bootstrapPolicy(which: Which): Promise<Record<string, unknown>> {
  const policy: Record<string, unknown> = {};
  for (const kind of BOOTSTRAP_KINDS) {
    const { items } = await json<{ items: Item[] }>(which, ['get', kind, '--all-namespaces']);
    for (const item of items) {
      const { metadata, ...content } = item;
      delete content.status;
      const spec = content.spec as Record<string, unknown> | undefined;
      if (kind === 'apiservices' && spec) delete spec.caBundle;
      policy[`${kind}/${metadata.namespace ?? ''}/${metadata.name}`] = {
        ...content,
        labels: metadata.labels,
        annotations: metadata.annotations,
      };
    }
  }
  return policy;
}

const kubeconfig = (which: Which) => join(scratch, `${which}.kubeconfig`);

async function create(which: Which, image: string, extraArgs: string[] = []): Promise<void> {
  // No workers: the bootstrap policy, the namespaces and the kubernetes Service are the control plane's.
  const created = await runVind(
    ['create', clusters[which], '--workers', '0', '--image', image, ...extraArgs],
    { KUBECONFIG: kubeconfig(which) },
  );
  expect(created.exitCode, created.stderr).toBe(0);
}

async function agentLog(which: Which): Promise<string> {
  const container = docker().getContainer(controlPlaneName(clusters[which]));
  return (await container.logs({ stdout: true, stderr: true })).toString();
}

describe('the datastore seed', () => {
  beforeAll(async () => {
    await requireNodeImage();
    scratch = await mkdtemp(join(tmpdir(), 'vind-e2e-seed-'));
    images = await seedVariants(NODE_IMAGE);
    const config = join(scratch, 'subnet.yaml');
    await writeFile(
      config,
      [
        'apiVersion: vind.dev/v1alpha1',
        'kind: Cluster',
        'networking:',
        `  serviceSubnet: ${SERVICE_SUBNET}`,
        '',
      ].join('\n'),
    );
    const binary = await kubectlBinary();
    for (const which of Object.keys(clusters) as Which[]) {
      kubectl[which] = kubectlFor(binary, kubeconfig(which));
    }
    // All three at once; each is awaited before a failure is reported, so that afterAll finds them.
    const created = await Promise.allSettled([
      create('seeded', images.seeded),
      create('second', images.seeded, ['--config', config]),
      create('unseeded', images.unseeded),
    ]);
    for (const result of created) if (result.status === 'rejected') throw result.reason;
  }, 600_000);

  afterAll(async () => {
    for (const [which, name] of Object.entries(clusters)) {
      await runVind(['delete', name], { KUBECONFIG: kubeconfig(which as Which) });
      await removeByLabel(name);
    }
    if (images) await removeImages(images.made);
    if (scratch) await rm(scratch, { recursive: true, force: true });
  }, 300_000);

  it('starts a control plane of the seeded image from the seed, and one without it from nothing', async () => {
    expect(await agentLog('seeded')).toContain("datastore: starting from the image's seed");
    expect(await agentLog('second')).toContain("datastore: starting from the image's seed");
    expect(await agentLog('unseeded')).not.toContain('seed');
  });

  it('ends with the bootstrap policy of a cluster that started from nothing', async () => {
    const unseeded = await bootstrapPolicy('unseeded');
    // Upstream's own, and ours applied by the agent.
    for (const name of [
      'clusterroles//system:node-bootstrapper',
      'clusterroles//cluster-admin',
      'clusterroles//system:coredns',
      'clusterrolebindings//system:kube-scheduler',
      'roles/kube-system/extension-apiserver-authentication-reader',
      'rolebindings/kube-public/system:controller:bootstrap-signer',
      'priorityclasses//system-node-critical',
      'flowschemas//exempt',
      'prioritylevelconfigurations//workload-low',
      'apiservices//v1.apps',
      'apiservices//v1beta1.metrics.k8s.io',
    ]) {
      expect(Object.keys(unseeded), name).toContain(name);
    }
    expect(Object.keys(unseeded).filter((key) => key.startsWith('clusterroles/')).length).toBeGreaterThan(60);
    // The aggregated roles (admin, edit, view) are filled in by the controller manager: both clusters
    // get there, whatever they started from.
    await waitFor(
      'the seeded cluster to hold the same bootstrap policy',
      async () => {
        const seeded = await bootstrapPolicy('seeded');
        return JSON.stringify(seeded) === JSON.stringify(await bootstrapPolicy('unseeded'))
          ? true
          : undefined;
      },
      120_000,
      2000,
    ).catch(async () => {
      // Says what differs.
      expect(await bootstrapPolicy('seeded')).toEqual(await bootstrapPolicy('unseeded'));
    });
  });

  it.each([
    ['system:kube-scheduler', 'list', 'nodes', 'yes'],
    ['system:kube-controller-manager', 'get', 'secrets', 'yes'],
    ['system:bootstrap:abcdef', 'create', 'certificatesigningrequests', 'yes', BOOTSTRAP_GROUP],
    ['system:serviceaccount:default:default', 'list', 'pods', 'no'],
    ['system:serviceaccount:default:default', 'create', 'clusterrolebindings', 'no'],
    ['system:serviceaccount:kube-system:coredns', 'watch', 'endpointslices', 'yes'],
    ['system:serviceaccount:kube-system:coredns', 'delete', 'services', 'no'],
  ])('answers alike whether %s may %s %s (%s)', async (user, verb, resource, expected, group?: string) => {
    for (const which of ['seeded', 'unseeded'] as const) {
      const result = await kubectl[which]([
        ...['auth', 'can-i', verb, resource, '-n', 'kube-system', '--as', user],
        ...(group ? ['--as-group', group] : []),
      ]);
      expect(result.stdout.trim(), `${which}: ${result.stderr}`).toBe(expected);
    }
  });

  it('gives each cluster its own kube-system UID', async () => {
    const uid = async (which: Which) =>
      (await json<{ metadata: { uid: string } }>(which, ['get', 'namespace', 'kube-system'])).metadata.uid;
    const uids = new Set([await uid('seeded'), await uid('second'), await uid('unseeded')]);
    expect(uids.size).toBe(3);
  });

  it("puts the kubernetes Service in each cluster's own service subnet", async () => {
    for (const [which, address, cidr] of [
      ['seeded', '10.96.0.1', '10.96.0.0/16'],
      ['second', '10.101.0.1', SERVICE_SUBNET],
    ] as const) {
      const service = await json<{ spec: { clusterIP: string } }>(which, [
        'get',
        'service',
        'kubernetes',
        '-n',
        'default',
      ]);
      expect(service.spec.clusterIP, which).toBe(address);
      const serviceCidr = await json<{ spec: { cidrs: string[] } }>(which, [
        'get',
        'servicecidr',
        'kubernetes',
      ]);
      expect(serviceCidr.spec.cidrs, which).toEqual([cidr]);
      // Its endpoint is this cluster's control plane, not the address the seed was made with.
      const ip = (await docker().getContainer(controlPlaneName(clusters[which])).inspect()).NetworkSettings
        .Networks[`vind-${clusters[which]}`]?.IPAddress;
      const slices = await json<{ items: { endpoints: { addresses: string[] }[] }[] }>(which, [
        'get',
        'endpointslices',
        '-n',
        'default',
        '-l',
        'kubernetes.io/service-name=kubernetes',
      ]);
      expect(
        slices.items.flatMap((s) => s.endpoints.flatMap((e) => e.addresses)),
        which,
      ).toEqual([ip]);
    }
  });
});
