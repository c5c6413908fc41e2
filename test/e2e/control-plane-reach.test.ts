// The control plane reaches pods and Services, and nothing for the pod or Service network leaves the
// host. One cluster (a control plane and two workers) on subnets of its own, so the host rules that
// count leaks see only this cluster's traffic:
// - pods/proxy and services/proxy answer from pods on both workers;
// - a validating admission webhook served by a pod admits and refuses;
// - an APIService backed by a pod answers through the aggregator;
// - inside every container, unrouted pod and Service addresses fail at once, while a hostNetwork pod
//   still reaches a ClusterIP through kube-proxy;
// - the host counted no packet for those networks leaving through anything but a Docker bridge.

import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCertificateAuthority, issueServingCertificate } from '../../node-agent/pki.js';
import {
  docker,
  ensureTestImage,
  ensureWebhookServerImage,
  execInContainer,
  kubectlBinary,
  kubectlFor,
  LABEL_CLUSTER,
  removeByLabel,
  requireNodeImage,
  runVind,
  spreadDeployment,
  TEST_IMAGE,
  uniqueName,
  waitFor,
} from './helpers.js';
import { LeakCounter } from './leak-counter.js';

const cluster = uniqueName('e2e-reach');
const POD_SUBNET = '10.245.0.0/16';
const SERVICE_SUBNET = '10.97.0.0/16';
const WORKERS = [`${cluster}-worker`, `${cluster}-worker2`];
const CONTROL_PLANE = `${cluster}-control-plane`;
const WEBHOOK_NAMESPACE = 'webhook-test';

let scratch: string;
let kubeconfig: string;
let kubectl: ReturnType<typeof kubectlFor>;
let leaks: LeakCounter | undefined;
let webhookImage: string;
let webhookCaBundle = '';
/** What the positive control added to the leak count; every other packet counted is a leak. */
let leakBaseline = 0;

interface Pod {
  metadata: { name: string };
  spec: { nodeName: string };
  status: { podIP: string };
}

async function apply(objects: unknown[], namespace = 'default') {
  const result = await kubectl(
    ['apply', '-n', namespace, '-f', '-'],
    JSON.stringify({ apiVersion: 'v1', kind: 'List', items: objects }),
  );
  expect(result.exitCode, result.stderr).toBe(0);
}

async function pods(app: string, namespace = 'default'): Promise<Pod[]> {
  const result = await kubectl(['get', 'pods', '-n', namespace, '-l', `app=${app}`, '-o', 'json']);
  return (JSON.parse(result.stdout) as { items: Pod[] }).items;
}

async function rollout(name: string, namespace = 'default') {
  const result = await kubectl([
    'rollout',
    'status',
    '-n',
    namespace,
    `deployment/${name}`,
    '--timeout=180s',
  ]);
  expect(result.exitCode, result.stderr).toBe(0);
}

function clusterIpService(name: string, port: number, targetPort: number, namespace = 'default') {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, namespace },
    spec: { selector: { app: name }, ports: [{ port, targetPort }] },
  };
}

const web = spreadDeployment(
  'web',
  {
    image: TEST_IMAGE,
    command: ['sh', '-c', 'mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www'],
    ports: [{ containerPort: 8080 }],
    readinessProbe: { tcpSocket: { port: 8080 }, periodSeconds: 1 },
  },
  2,
);

/**
 * The webhook server: a Deployment, its serving certificate as a Secret, a Service on 443. Returns
 * the CA bundle (base64) that webhook and APIService configurations pin.
 */
async function deployWebhookServer(): Promise<string> {
  const ca = await createCertificateAuthority('vind-e2e-webhook-ca');
  const dnsName = `webhook.${WEBHOOK_NAMESPACE}.svc`;
  const serving = await issueServingCertificate(ca.cert, ca.key, [dnsName, `${dnsName}.cluster.local`]);
  await apply([{ apiVersion: 'v1', kind: 'Namespace', metadata: { name: WEBHOOK_NAMESPACE } }]);
  await apply(
    [
      {
        apiVersion: 'v1',
        kind: 'Secret',
        metadata: { name: 'webhook-tls' },
        type: 'kubernetes.io/tls',
        stringData: { 'tls.crt': serving.cert, 'tls.key': serving.key },
      },
      {
        apiVersion: 'apps/v1',
        kind: 'Deployment',
        metadata: { name: 'webhook' },
        spec: {
          replicas: 1,
          selector: { matchLabels: { app: 'webhook' } },
          template: {
            metadata: { labels: { app: 'webhook' } },
            spec: {
              terminationGracePeriodSeconds: 1,
              containers: [
                {
                  name: 'server',
                  image: webhookImage,
                  env: [
                    { name: 'TLS_CERT', value: '/tls/tls.crt' },
                    { name: 'TLS_KEY', value: '/tls/tls.key' },
                  ],
                  ports: [{ containerPort: 8443 }],
                  readinessProbe: { tcpSocket: { port: 8443 }, periodSeconds: 1 },
                  volumeMounts: [{ name: 'tls', mountPath: '/tls', readOnly: true }],
                },
              ],
              volumes: [{ name: 'tls', secret: { secretName: 'webhook-tls' } }],
            },
          },
        },
      },
      clusterIpService('webhook', 443, 8443, WEBHOOK_NAMESPACE),
    ],
    WEBHOOK_NAMESPACE,
  );
  await rollout('webhook', WEBHOOK_NAMESPACE);
  return Buffer.from(ca.cert).toString('base64');
}

/**
 * A TCP connection attempt from inside a node container, with the node image's Node.js: "connected",
 * the error code the kernel gave (EHOSTUNREACH, ENETUNREACH, ECONNREFUSED), or "timeout" after 5 s.
 */
async function connectFrom(container: string, host: string, port: number): Promise<string> {
  const script =
    `const s = require('net').connect(${port}, '${host}');` +
    `setTimeout(() => { console.log('timeout'); process.exit(0); }, 5000);` +
    `s.on('connect', () => { console.log('connected'); process.exit(0); });` +
    `s.on('error', (e) => { console.log(e.code); process.exit(0); });`;
  const result = await execInContainer(container, ['node', '-e', script]);
  return result.stdout.trim() || result.stderr.trim();
}

/** An HTTP request with busybox nc (its static wget crashes outside a pod's network namespace). */
function httpGetWithNc(host: string, port: number): string[] {
  return ['sh', '-c', `printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 ${host} ${port}`];
}

describe('the control plane reaches pods and Services, and nothing leaks off the host', () => {
  beforeAll(async () => {
    await requireNodeImage();
    scratch = await mkdtemp(join(tmpdir(), 'vind-e2e-reach-'));
    kubeconfig = join(scratch, 'kubeconfig');
    kubectl = kubectlFor(await kubectlBinary(), kubeconfig);
    await ensureTestImage();
    webhookImage = await ensureWebhookServerImage();
    leaks = await LeakCounter.install([POD_SUBNET, SERVICE_SUBNET]);
    const config = join(scratch, 'cluster.yaml');
    await writeFile(
      config,
      [
        'apiVersion: vind.dev/v1alpha1',
        'kind: Cluster',
        'workers: [{}, {}]',
        'networking:',
        `  podSubnet: ${POD_SUBNET}`,
        `  serviceSubnet: ${SERVICE_SUBNET}`,
        '',
      ].join('\n'),
    );
    const created = await runVind(['create', cluster, '--config', config], { KUBECONFIG: kubeconfig });
    expect(created.exitCode, created.stderr).toBe(0);
    await apply([web, clusterIpService('web', 8080, 8080)]);
    await rollout('web');
  });

  afterAll(async () => {
    await leaks?.remove();
    await removeByLabel(cluster);
    if (scratch) await rm(scratch, { recursive: true, force: true });
  });

  it('counts a packet that would leave the host (positive control, from a container without the net)', async () => {
    const before = await leaks!.total();
    // A plain container on the cluster's network, with none of vind's rules: its packet for a pod
    // address follows the default route to the host, where the counting rule sees (and rejects) it.
    const probe = await docker().createContainer({
      Image: TEST_IMAGE,
      Entrypoint: httpGetWithNc('10.245.250.9', 80),
      Labels: { [LABEL_CLUSTER]: cluster },
      HostConfig: { NetworkMode: `vind-${cluster}` },
    });
    try {
      await probe.start();
      await probe.wait();
    } finally {
      await probe.remove({ force: true });
    }
    expect(await leaks!.total()).toBeGreaterThan(before);
    leakBaseline = await leaks!.total();
  });

  it('proxies to a pod on each worker (pods/proxy)', async () => {
    const running = await pods('web');
    expect(new Set(running.map((p) => p.spec.nodeName))).toEqual(new Set(WORKERS));
    for (const pod of running) {
      const result = await kubectl([
        'get',
        '--raw',
        `/api/v1/namespaces/default/pods/${pod.metadata.name}:8080/proxy/`,
      ]);
      expect(result.exitCode, result.stderr).toBe(0);
      expect(result.stdout.trim()).toBe(pod.metadata.name);
    }
  });

  it('proxies to a Service (services/proxy)', async () => {
    const names = (await pods('web')).map((p) => p.metadata.name);
    const result = await kubectl(['get', '--raw', '/api/v1/namespaces/default/services/web:8080/proxy/']);
    expect(result.exitCode, result.stderr).toBe(0);
    expect(names).toContain(result.stdout.trim());
  });

  it('calls a validating admission webhook served by a pod, which admits and refuses', async () => {
    webhookCaBundle = await deployWebhookServer();
    await kubectl(['label', 'namespace', WEBHOOK_NAMESPACE, 'vind-e2e-webhook=on', '--overwrite']);
    await apply([
      {
        apiVersion: 'admissionregistration.k8s.io/v1',
        kind: 'ValidatingWebhookConfiguration',
        metadata: { name: 'vind-e2e-deny' },
        webhooks: [
          {
            name: 'deny.vind.dev',
            admissionReviewVersions: ['v1'],
            sideEffects: 'None',
            failurePolicy: 'Fail',
            timeoutSeconds: 10,
            namespaceSelector: { matchLabels: { 'vind-e2e-webhook': 'on' } },
            rules: [
              {
                apiGroups: [''],
                apiVersions: ['v1'],
                operations: ['CREATE'],
                resources: ['configmaps'],
              },
            ],
            clientConfig: {
              service: { namespace: WEBHOOK_NAMESPACE, name: 'webhook', path: '/validate', port: 443 },
              caBundle: webhookCaBundle,
            },
          },
        ],
      },
    ]);
    // The API server picks up a new webhook configuration within a moment: wait for a refusal.
    let attempt = 0;
    const refused = await waitFor(
      'the webhook to refuse a labelled ConfigMap',
      async () => {
        const name = `denied-${attempt++}`;
        const result = await kubectl(
          ['create', '-n', WEBHOOK_NAMESPACE, '-f', '-'],
          JSON.stringify({
            apiVersion: 'v1',
            kind: 'ConfigMap',
            metadata: { name, labels: { 'vind.dev/deny': 'true' } },
          }),
        );
        if (result.exitCode === 0) {
          await kubectl(['delete', 'configmap', '-n', WEBHOOK_NAMESPACE, name]);
          return undefined;
        }
        return result.stderr;
      },
      60_000,
      1000,
    );
    expect(refused).toContain('denied by the test webhook');
    const admitted = await kubectl(['create', 'configmap', '-n', WEBHOOK_NAMESPACE, 'admitted']);
    expect(admitted.exitCode, admitted.stderr).toBe(0);
    const logs = await kubectl(['logs', '-n', WEBHOOK_NAMESPACE, 'deployment/webhook']);
    expect(logs.stdout).toContain('admission admitted: allowed=true');
  });

  it('serves an aggregated API from a pod through the APIService', async () => {
    await apply([
      {
        apiVersion: 'apiregistration.k8s.io/v1',
        kind: 'APIService',
        metadata: { name: 'v1alpha1.demo.vind.dev' },
        spec: {
          group: 'demo.vind.dev',
          version: 'v1alpha1',
          groupPriorityMinimum: 1000,
          versionPriority: 15,
          service: { namespace: WEBHOOK_NAMESPACE, name: 'webhook', port: 443 },
          caBundle: webhookCaBundle,
        },
      },
    ]);
    await waitFor(
      'the APIService to be Available',
      async () => {
        const result = await kubectl([
          'get',
          'apiservice',
          'v1alpha1.demo.vind.dev',
          '-o',
          'jsonpath={.status.conditions[?(@.type=="Available")].status}',
        ]);
        return result.stdout.trim() === 'True' ? true : undefined;
      },
      60_000,
      500,
    );
    const result = await kubectl(['get', '--raw', '/apis/demo.vind.dev/v1alpha1/greetings']);
    expect(result.exitCode, result.stderr).toBe(0);
    const list = JSON.parse(result.stdout) as { items: { servedBy: string; user: string }[] };
    const [server] = await pods('webhook', WEBHOOK_NAMESPACE);
    expect(list.items[0]).toEqual(
      expect.objectContaining({ servedBy: server!.metadata.name, user: 'kubernetes-admin' }),
    );
    // Discovery through the aggregator too: kubectl finds the resource by its name.
    const listed = await kubectl(['get', 'greetings.demo.vind.dev', '-o', 'name']);
    expect(listed.exitCode, listed.stderr).toBe(0);
    expect(listed.stdout.trim()).toBe('greeting.demo.vind.dev/hello');
  });

  it('refuses unrouted pod and Service addresses at once inside every container', async () => {
    for (const container of [CONTROL_PLANE, ...WORKERS]) {
      // A /24 of the pod network that no node holds: the kernel has no route for it.
      expect(await connectFrom(container, '10.245.250.9', 80), container).toBe('EHOSTUNREACH');
      // A Service address that no Service has: kube-proxy leaves it untranslated, the net refuses it.
      expect(await connectFrom(container, '10.97.250.9', 80), container).toBe('ENETUNREACH');
      // The API server's own Service, through kube-proxy on the workers; the control plane has no
      // Service handling (it dials endpoints), so there the net refuses it too instead of leaking.
      const expected = container === CONTROL_PLANE ? 'ENETUNREACH' : 'connected';
      expect(await connectFrom(container, '10.97.0.1', 443), container).toBe(expected);
    }
  });

  it('still lets a hostNetwork pod reach a ClusterIP through kube-proxy', async () => {
    const serviceIp = (await kubectl(['get', 'service', 'web', '-o', 'jsonpath={.spec.clusterIP}'])).stdout;
    await apply([
      {
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { name: 'host-client' },
        spec: {
          hostNetwork: true,
          nodeName: WORKERS[0],
          terminationGracePeriodSeconds: 1,
          restartPolicy: 'Never',
          containers: [
            {
              name: 'client',
              image: TEST_IMAGE,
              command: httpGetWithNc(serviceIp, 8080),
            },
          ],
        },
      },
    ]);
    const phase = await waitFor(
      'the hostNetwork client to finish',
      async () => {
        const result = await kubectl(['get', 'pod', 'host-client', '-o', 'jsonpath={.status.phase}']);
        return ['Succeeded', 'Failed'].includes(result.stdout) ? result.stdout : undefined;
      },
      60_000,
      500,
    );
    const logs = await kubectl(['logs', 'host-client']);
    expect(phase, logs.stdout).toBe('Succeeded');
    // The answer of one of the Service's pods: its index page is the pod's name.
    const names = (await pods('web')).map((p) => p.metadata.name);
    expect(logs.stdout).toMatch(new RegExp(`^(${names.join('|')})$`, 'm'));
  });

  it('sent no packet for the pod or Service network off the host through all of this', async () => {
    // Pods and Services come and go too: deletions and the churn they cause are part of the run.
    for (const args of [
      ['delete', 'apiservice', 'v1alpha1.demo.vind.dev'],
      ['delete', 'validatingwebhookconfiguration', 'vind-e2e-deny'],
      ['delete', 'namespace', WEBHOOK_NAMESPACE, '--wait=true'],
      ['delete', 'pod', 'host-client'],
      ['delete', 'deployment,service', 'web'],
    ]) {
      const result = await kubectl(args);
      expect(result.exitCode, result.stderr).toBe(0);
    }
    const counts = await leaks!.counts();
    expect(
      (await leaks!.total()) - leakBaseline,
      `packets counted leaving the host: ${JSON.stringify(counts)}; ${leakBaseline} came from the positive control`,
    ).toBe(0);
  });
});
