// Role `control-plane`: the datastore (kine over SQLite, or an external one), kube-apiserver,
// kube-controller-manager and kube-scheduler as supervised processes. Not a Kubernetes node.
// First start: PKI, bootstrap token and cluster-info. Every start: the same files are reused. After
// a sleep in mode checkpoint the daemons are restored from their checkpoint instead of started.

import { randomInt } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { writeFileAtomic } from '../shared/atomic-write.js';
import {
  ADMIN_KUBECONFIG,
  API_SERVER_PORT,
  CHECKPOINT,
  clusterDnsAddress,
  type ControlPlaneSettings,
  COREDNS_IMAGE,
  METRICS_SERVER_IMAGE,
  DATASTORE_URL_FILE,
  datastoreSpace,
  decodeNodeEnv,
  type JoinInfo,
  JOIN_FILE,
  kubernetesServiceAddress,
  parseJoinInfo,
  PKI_DIR,
  STATE_DIR,
  STATUS_REASONS,
  LOAD_BALANCER,
} from '../shared/contract.js';
import { parseDatastoreUrl, redactUrl } from '../shared/datastore.js';
import { admissionConfiguration } from './admission.js';
import { claimDatastoreSpace, clusterId } from './datastore-space.js';
import { startFromSeed } from './seeded-datastore.js';
import { EtcdClient } from './etcd-client.js';
import { ensureEncryptionConfiguration } from './encryption.js';
import { fatalDatastoreError } from './datastore-errors.js';
import { renderKubeconfig } from '../shared/kubeconfig.js';
import {
  apiReady,
  applyObject,
  isNodeReady,
  type KubeNode,
  type KubeObject,
  kubeRequest,
  type KubeTarget,
  watchCollection,
} from '../shared/kubernetes.js';
import { PermanentError, poll } from '../shared/poll.js';
import {
  type BootstrapToken,
  bootstrapRbac,
  bootstrapTokenSecret,
  clusterInfo,
  coreDns,
} from './manifests.js';
import { signDetachedJws } from './join.js';
import { caCertHash, ensurePki, type PkiPaths } from './pki.js';
import { daemonsToCheckpoint, raisePidFloor, restoreDaemons, serveCheckpoints } from './checkpoint.js';
import { LoadBalancerController } from './load-balancer/controller.js';
import { approveKubeletServingCertificates } from './kubelet-serving.js';
import { signKubeletClientCertificates } from './kubelet-client-signing.js';
import { loadCa } from './x509.js';
import { log } from './log.js';
import { metricsServer } from './metrics-manifests.js';
import { keepPodRoutes } from './pod-routes.js';
import { networkPolicyRbac } from './network-policy-rules.js';
import { installSafetyNet } from './safety-net.js';
import { storageManifests } from './storage-manifests.js';
import { ReasonedError, settingsOrStop, setStatus } from './status.js';
import type { ServiceSpec, Supervisor } from './supervisor.js';

const LOCAL_SERVER = `https://127.0.0.1:${API_SERVER_PORT}`;
const ADMISSION_CONFIG = `${STATE_DIR}/admission.yaml`;
const ENCRYPTION_CONFIG = `${PKI_DIR}/encryption.yaml`;
const CLUSTER_ID_FILE = `${STATE_DIR}/cluster-id`;
const TOKEN_LIFETIME_MS = 24 * 3600 * 1000;
/** The field manager of everything the agent applies. */
const FIELD_MANAGER = 'vind';

function tokenPart(length: number): string {
  const alphabet = 'abcdefghijklmnopqrstuvwxyz0123456789';
  return Array.from({ length }, () => alphabet[randomInt(alphabet.length)]).join('');
}

/** Reuses the join token while it has more than an hour left, else makes a new one. */
async function joinToken(): Promise<BootstrapToken> {
  if (existsSync(JOIN_FILE)) {
    const saved = parseJoinInfo(await readFile(JOIN_FILE, 'utf8'));
    if (saved.expiration && Date.parse(saved.expiration) - Date.now() > 3600 * 1000) {
      const [id, secret] = saved.token.split('.');
      return { id: id!, secret: secret!, expiration: saved.expiration };
    }
  }
  return {
    id: tokenPart(6),
    secret: tokenPart(16),
    expiration: new Date(Date.now() + TOKEN_LIFETIME_MS).toISOString().replace(/\.\d+Z$/, 'Z'),
  };
}

async function kubeconfigFor(pki: PkiPaths, cert: string, key: string, server: string): Promise<string> {
  return renderKubeconfig({
    contextName: 'vind',
    server,
    caData: Buffer.from(await readFile(pki.caCert)).toString('base64'),
    clientCertData: Buffer.from(await readFile(cert)).toString('base64'),
    clientKeyData: Buffer.from(await readFile(key)).toString('base64'),
  });
}

/** Fails in seconds, with the address, when an external datastore does not accept connections. */
async function checkReachable(host: string, port: number): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const socket = connect({ host, port, timeout: 5000 });
    socket.once('connect', () => {
      socket.destroy();
      resolve();
    });
    socket.once('timeout', () => {
      socket.destroy();
      reject(
        new ReasonedError(
          `datastore ${host}:${port} did not answer within 5s`,
          STATUS_REASONS.datastoreUnreachable,
        ),
      );
    });
    socket.once('error', (error: NodeJS.ErrnoException) =>
      reject(
        new ReasonedError(
          `datastore ${host}:${port} cannot be reached (${error.code ?? error.message})`,
          STATUS_REASONS.datastoreUnreachable,
        ),
      ),
    );
  });
}

/** The external datastore's URL, from the root-only file the CLI put in. */
async function datastoreUrl(): Promise<string> {
  return (await readFile(DATASTORE_URL_FILE, 'utf8')).trim();
}

interface Datastore {
  /** The etcd endpoint for the API server. */
  etcd: string;
  /** kine, unless the API server talks to an external etcd itself. */
  kine?: ServiceSpec;
  /** An external datastore's address, dialled before anything is started on it. */
  external?: { host: string; port: number };
  /** Rejects with one line when the datastore refuses in a way that waiting cannot fix. */
  refused: Promise<never>;
}

/** kine serves the etcd API on loopback only, its metrics too. */
export const KINE_ARGS = ['--listen-address=127.0.0.1:2379', '--metrics-bind-address=127.0.0.1:2380'];
const SQLITE_FILE = `${STATE_DIR}/kine/state.db`;

export function sqliteEndpoint(file: string): string {
  return `sqlite://${file}?_journal=WAL&cache=shared&_busy_timeout=30000`;
}

/** Where the API server's data lives, and kine's spec where it needs kine; nothing is started. */
async function planDatastore(source: ControlPlaneSettings['datastore']): Promise<Datastore> {
  let refuse: (error: Error) => void = () => undefined;
  const refused = new Promise<never>((_, reject) => (refuse = reject));
  // Nobody waits on it once the start is over: a later refusal is for kine's log, not a crash.
  refused.catch(() => undefined);
  let endpoint = sqliteEndpoint(SQLITE_FILE);
  let external: Datastore['external'];
  if (source === 'sqlite') {
    await mkdir(`${STATE_DIR}/kine`, { recursive: true });
    // A first start begins from the bootstrap policy the image build wrote, when the image has it.
    await startFromSeed(SQLITE_FILE);
  } else {
    // The same parser that validated the URL in the CLI: one reading of every datastore form.
    const datastore = parseDatastoreUrl(await datastoreUrl());
    if (datastore.kind === 'sqlite') {
      throw new PermanentError(`${DATASTORE_URL_FILE} names no external datastore`);
    }
    external = { host: datastore.host, port: datastore.port };
    if (datastore.kind === 'etcd') {
      return { etcd: datastore.url.replace(/^etcd:\/\//, 'http://'), external, refused };
    }
    endpoint = datastore.url;
  }
  const kine: ServiceSpec = {
    name: 'kine',
    command: 'kine',
    args: KINE_ARGS,
    // In kine's environment, not its arguments: `ps` on the host shows arguments to everyone.
    env: { KINE_ENDPOINT: endpoint },
    onOutput: (line) => {
      const reason = fatalDatastoreError(line);
      if (reason) refuse(new PermanentError(`the datastore refused kine: ${reason}`));
    },
  };
  return { etcd: 'http://127.0.0.1:2379', kine, external, refused };
}

/** Also what the image build's datastore seed starts the API server with (datastore-seed.ts). */
export function apiServerArgs(
  settings: Pick<ControlPlaneSettings, 'nodeIp' | 'datastore' | 'clusterName' | 'serviceSubnet'>,
  pki: PkiPaths,
  etcd: string,
  files = { encryption: ENCRYPTION_CONFIG, admission: ADMISSION_CONFIG },
): string[] {
  return [
    `--advertise-address=${settings.nodeIp}`,
    `--secure-port=${API_SERVER_PORT}`,
    `--etcd-servers=${etcd}`,
    `--etcd-prefix=${settings.datastore === 'external' ? `${datastoreSpace(settings.clusterName)}/registry` : '/registry'}`,
    `--encryption-provider-config=${files.encryption}`,
    `--admission-control-config-file=${files.admission}`,
    `--service-cluster-ip-range=${settings.serviceSubnet}`,
    `--client-ca-file=${pki.caCert}`,
    `--tls-cert-file=${pki.apiServerCert}`,
    `--tls-private-key-file=${pki.apiServerKey}`,
    `--kubelet-client-certificate=${pki.apiServerKubeletClientCert}`,
    `--kubelet-client-key=${pki.apiServerKubeletClientKey}`,
    // Kubelets serve with certificates of the cluster CA (kubelet-serving.ts): logs, exec and
    // port-forward go only to the kubelet the node's name and address say.
    `--kubelet-certificate-authority=${pki.caCert}`,
    '--kubelet-preferred-address-types=InternalIP,Hostname',
    `--service-account-issuer=https://kubernetes.default.svc.cluster.local`,
    `--service-account-key-file=${pki.serviceAccountPub}`,
    `--service-account-signing-key-file=${pki.serviceAccountKey}`,
    '--authorization-mode=Node,RBAC',
    '--enable-admission-plugins=NodeRestriction',
    '--enable-bootstrap-token-auth=true',
    '--allow-privileged=true',
    `--requestheader-client-ca-file=${pki.frontProxyCaCert}`,
    '--requestheader-allowed-names=front-proxy-client',
    '--requestheader-extra-headers-prefix=X-Remote-Extra-',
    '--requestheader-group-headers=X-Remote-Group',
    '--requestheader-username-headers=X-Remote-User',
    `--proxy-client-cert-file=${pki.frontProxyClientCert}`,
    `--proxy-client-key-file=${pki.frontProxyClientKey}`,
    // Webhooks, aggregated APIs and conversion webhooks are dialled at a ready endpoint of their
    // Service, reached over the pod routes; this container needs no Service handling of its own.
    '--enable-aggregator-routing=true',
    '--profiling=false',
  ];
}

type Manifest = Record<string, unknown>;

/**
 * Applies objects over the API itself (server-side apply), not with kubectl, whose start and API
 * discovery cost about a second of CPU on two cores. Namespaces first, then everything else at once,
 * each retried until its namespace exists: the API server makes kube-system and kube-public moments
 * after it starts serving.
 */
async function applyObjects(target: KubeTarget, manifests: Manifest[]): Promise<void> {
  const apply = (object: KubeObject) =>
    poll(
      `${object.kind} ${object.metadata.name} to be applied`,
      async () => {
        await applyObject(target, object, FIELD_MANAGER);
        return true;
      },
      { timeoutMs: 60_000, intervalMs: 100 },
    );
  const objects = manifests as unknown as KubeObject[];
  await Promise.all(objects.filter((o) => o.kind === 'Namespace').map(apply));
  await Promise.all(objects.filter((o) => o.kind !== 'Namespace').map(apply));
}

/** Credentials files of the control plane: admin (local and on the network) and the two controllers. */
async function writeKubeconfigs(pki: PkiPaths, server: string): Promise<void> {
  const files: [string, string, string, string][] = [
    [`${STATE_DIR}/admin-local.conf`, pki.adminCert, pki.adminKey, LOCAL_SERVER],
    [ADMIN_KUBECONFIG, pki.adminCert, pki.adminKey, server],
    [
      `${STATE_DIR}/controller-manager.conf`,
      pki.controllerManagerCert,
      pki.controllerManagerKey,
      LOCAL_SERVER,
    ],
    [`${STATE_DIR}/scheduler.conf`, pki.schedulerCert, pki.schedulerKey, LOCAL_SERVER],
  ];
  for (const [path, cert, key, url] of files) {
    await writeFileAtomic(path, await kubeconfigFor(pki, cert, key, url), { mode: 0o600 });
  }
}

async function startLoadBalancerController(
  target: KubeTarget,
  settings: ControlPlaneSettings,
  signal: AbortSignal,
): Promise<void> {
  const { first, last, hostPorts } = settings.loadBalancer;
  const cache =
    hostPorts && settings.imageCache && settings.imageCacheToken
      ? { cacheUrl: settings.imageCache, token: settings.imageCacheToken }
      : undefined;
  const controller = new LoadBalancerController(
    target,
    { range: { first, last }, hostPorts: cache, instance: settings.nodeName },
    signal,
  );
  const { namespace, name } = LOAD_BALANCER.announcements;
  const previous = await kubeRequest<{ data?: Record<string, string> }>(
    target,
    'GET',
    `/api/v1/namespaces/${namespace}/configmaps/${name}`,
  );
  if (previous.status === 200) controller.seedAnnouncements(previous.body.data);
  controller.start();
  log(`load balancer: addresses ${first}-${last}${cache ? ', ports published on the host' : ''}`);
}

function controllerManagerSpec(settings: ControlPlaneSettings, pki: PkiPaths): ServiceSpec {
  const cm = `${STATE_DIR}/controller-manager.conf`;
  return {
    name: 'kube-controller-manager',
    command: 'kube-controller-manager',
    args: [
      `--kubeconfig=${cm}`,
      `--authentication-kubeconfig=${cm}`,
      `--authorization-kubeconfig=${cm}`,
      '--bind-address=127.0.0.1',
      `--client-ca-file=${pki.caCert}`,
      `--requestheader-client-ca-file=${pki.frontProxyCaCert}`,
      `--cluster-signing-cert-file=${pki.caCert}`,
      `--cluster-signing-key-file=${pki.caKey}`,
      `--root-ca-file=${pki.caCert}`,
      `--service-account-private-key-file=${pki.serviceAccountKey}`,
      '--use-service-account-credentials=false',
      '--allocate-node-cidrs=true',
      `--cluster-cidr=${settings.podSubnet}`,
      '--node-cidr-mask-size=24',
      `--service-cluster-ip-range=${settings.serviceSubnet}`,
      '--controllers=*,bootstrapsigner,tokencleaner',
      // One control plane: no election to win, and no lease writes every few seconds.
      '--leader-elect=false',
      // It watches this folder (inotify); on the node's volume rather than the image's overlay, where
      // CRIU could not open the watch again from its file handle.
      `--flex-volume-plugin-dir=${STATE_DIR}/flexvolume`,
      '--profiling=false',
    ],
  };
}

const SCHEDULER_CONFIG = `${STATE_DIR}/scheduler.yaml`;

/**
 * The scheduler's settings. A pod that found no node is tried again after a back-off that doubles up
 * to 10 s by default: CoreDNS, created before any node is Ready, waited up to seconds more after its
 * node was. One second at most costs a few more attempts for pods that cannot be placed, each
 * only after an event that might change that.
 */
export function schedulerConfiguration(kubeconfig: string): string {
  return `${JSON.stringify(
    {
      apiVersion: 'kubescheduler.config.k8s.io/v1',
      kind: 'KubeSchedulerConfiguration',
      clientConnection: { kubeconfig },
      leaderElection: { leaderElect: false },
      enableProfiling: false,
      podInitialBackoffSeconds: 1,
      podMaxBackoffSeconds: 1,
    },
    null,
    2,
  )}\n`;
}

function schedulerSpec(): ServiceSpec {
  const sc = `${STATE_DIR}/scheduler.conf`;
  return {
    name: 'kube-scheduler',
    command: 'kube-scheduler',
    args: [
      `--config=${SCHEDULER_CONFIG}`,
      `--authentication-kubeconfig=${sc}`,
      `--authorization-kubeconfig=${sc}`,
      '--bind-address=127.0.0.1',
    ],
  };
}

/**
 * A normal start: the datastore first (an external one dialled and claimed; kine over SQLite may be
 * running already), then the rest at once.
 */
async function startDaemons(
  supervisor: Supervisor,
  settings: ControlPlaneSettings,
  datastore: Datastore,
  daemons: ServiceSpec[],
  kineStarted: boolean,
): Promise<void> {
  // Out of the way of what a fresh container starts before it restores a checkpoint.
  await raisePidFloor(CHECKPOINT.pidBase);
  if (datastore.external) await checkReachable(datastore.external.host, datastore.external.port);
  if (datastore.kine && !kineStarted) supervisor.start(datastore.kine);
  if (settings.datastore === 'external') {
    // Before the API server reads anything there: is this space this cluster's?
    const client = new EtcdClient(datastore.etcd);
    try {
      await Promise.race([
        claimDatastoreSpace(client, {
          id: await clusterId(CLUSTER_ID_FILE),
          name: settings.clusterName,
          space: datastoreSpace(settings.clusterName),
          where: redactUrl(await datastoreUrl()),
          reuse: settings.reuseDatastore,
        }),
        datastore.refused,
      ]);
    } finally {
      client.close();
    }
  }
  for (const spec of daemons) if (spec !== datastore.kine) supervisor.start(spec);
}

export async function runControlPlane(supervisor: Supervisor, signal: AbortSignal): Promise<void> {
  const settings = settingsOrStop(() => decodeNodeEnv('control-plane', process.env)) as ControlPlaneSettings;
  await setStatus('starting', 'control plane starting');
  // The safety net's rules go in while the certificates are made; nothing here sends a packet to a pod
  // or Service before the objects are applied, which waits for it.
  const safetyNet = installSafetyNet(settings);
  safetyNet.catch(() => undefined);
  const datastore = await planDatastore(settings.datastore);
  // kine over SQLite needs no certificate: started first, it listens by the time the API server dials
  // it, whose etcd client otherwise waits out a back-off. A checkpoint restores it with the rest.
  const earlyKine =
    settings.datastore === 'sqlite' && !existsSync(CHECKPOINT.dir) ? datastore.kine : undefined;
  if (earlyKine) {
    await raisePidFloor(CHECKPOINT.pidBase);
    supervisor.start(earlyKine);
  }

  const pki = await ensurePki(PKI_DIR, {
    apiServerDnsNames: [
      'localhost',
      settings.nodeName,
      'kubernetes',
      'kubernetes.default',
      'kubernetes.default.svc',
      'kubernetes.default.svc.cluster.local',
    ],
    apiServerIps: ['127.0.0.1', settings.nodeIp, kubernetesServiceAddress(settings.serviceSubnet)],
  });
  const server = `https://${settings.nodeIp}:${API_SERVER_PORT}`;
  await writeKubeconfigs(pki, server);
  await writeFileAtomic(ADMISSION_CONFIG, admissionConfiguration(settings.podSecurity));
  await writeFileAtomic(SCHEDULER_CONFIG, schedulerConfiguration(`${STATE_DIR}/scheduler.conf`));
  await ensureEncryptionConfiguration(ENCRYPTION_CONFIG);

  // The join information is there before the API server is: the CLI hands it to the workers at once,
  // and they join as soon as the API server lets them.
  const token = await joinToken();
  const tokenText = `${token.id}.${token.secret}`;
  const join: JoinInfo = {
    server,
    token: tokenText,
    caCertHash: caCertHash(await readFile(pki.caCert, 'utf8')),
    expiration: token.expiration,
  };
  await writeFileAtomic(JOIN_FILE, JSON.stringify(join), { mode: 0o600 });
  await safetyNet;

  const daemons = [
    ...(datastore.kine ? [datastore.kine] : []),
    {
      name: 'kube-apiserver',
      command: 'kube-apiserver',
      args: apiServerArgs(settings, pki, datastore.etcd),
    },
    controllerManagerSpec(settings, pki),
    schedulerSpec(),
  ];
  // A checkpoint (sleep mode checkpoint) is restored before anything else starts here.
  if (!(await restoreDaemons(supervisor, daemons))) {
    await startDaemons(supervisor, settings, datastore, daemons, earlyKine !== undefined);
  }

  const target = {
    server: LOCAL_SERVER,
    ca: await readFile(pki.caCert),
    cert: await readFile(pki.adminCert),
    key: await readFile(pki.adminKey),
  };
  // Serving, with the namespaces the join objects go into: the API server's post-start work (the
  // bootstrap policy, priority classes) may still be going on, and need not be waited for.
  await Promise.race([
    poll(
      'kube-apiserver to serve',
      async () => {
        const answer = await kubeRequest(target, 'GET', '/api/v1/namespaces/kube-public', undefined, 2000);
        return answer.status === 200 ? true : undefined;
      },
      { timeoutMs: 120_000, intervalMs: 50 },
    ),
    datastore.refused,
  ]);
  log('kube-apiserver serving');
  const caPem = await readFile(pki.caCert, 'utf8');
  // First what a worker needs to join, then the cluster's add-ons.
  await applyObjects(target, [
    ...bootstrapRbac(),
    // Workers' agents enforce NetworkPolicy on vind's pod network; another CNI brings its own.
    ...(settings.cni === 'default' ? networkPolicyRbac() : []),
    bootstrapTokenSecret(token),
    // Signed here, as the bootstrap signer of the controller manager would, so that workers need not
    // wait for that controller to start before they can join.
    clusterInfo(server, caPem, {
      [`jws-kubeconfig-${token.id}`]: signDetachedJws(clusterInfoKubeconfig(server, caPem), tokenText),
    }),
  ]);
  log('join objects applied');
  // A joining worker asks for its kubelet's client certificate before the controller manager is up.
  signKubeletClientCertificates(target, await loadCa(caPem, await readFile(pki.caKey, 'utf8')), signal);
  // A worker's kubelet asks for its serving certificate the moment it registers.
  approveKubeletServingCertificates(target, signal);
  // The control plane is not a node: it routes to every node's pods.
  keepPodRoutes(target, undefined, signal);
  const addOns = [
    ...coreDns(COREDNS_IMAGE, clusterDnsAddress(settings.serviceSubnet)),
    ...metricsServer({
      image: METRICS_SERVER_IMAGE,
      caPem,
      certPem: await readFile(pki.metricsServerCert, 'utf8'),
      keyPem: await readFile(pki.metricsServerKey, 'utf8'),
    }),
    ...storageManifests(settings.storage),
  ];
  const isWorkload = (object: Manifest) => WORKLOAD_KINDS.includes(String(object.kind));
  await applyObjects(
    target,
    addOns.filter((o) => !isWorkload(o)),
  );
  const workloads = addOns.filter(isWorkload);
  // With another CNI no node is Ready before the user installs it: the workloads wait, Pending, as
  // on any cluster; on vind's own network they are made once a node can run them.
  if (settings.cni === 'none') await applyObjects(target, workloads);
  else applyOnceANodeIsReady(target, workloads, signal);
  await poll('kube-apiserver to be ready', async () => ((await apiReady(target)) ? true : undefined), {
    timeoutMs: 120_000,
  });
  await startLoadBalancerController(target, settings, signal);
  await serveCheckpoints(supervisor, daemonsToCheckpoint(daemons.map((d) => d.name)));
  await setStatus('ready', `control plane ready at ${server}`);
}

/** Kinds whose objects make pods. */
const WORKLOAD_KINDS = ['Deployment', 'DaemonSet'];

/**
 * Applies the add-ons' workloads once some node is Ready. The scheduler tries a pod it found no node
 * for again only after a back-off and its next pass: CoreDNS made before its node was Ready was placed
 * a second after the node was, one made after it at once.
 */
function applyOnceANodeIsReady(target: KubeTarget, workloads: Manifest[], signal: AbortSignal): void {
  const watching = new AbortController();
  signal.addEventListener('abort', () => watching.abort(), { once: true });
  let started = false;
  watchCollection<KubeNode>(
    target,
    '/api/v1/nodes',
    (nodes) => {
      if (started || !nodes.some(isNodeReady)) return;
      started = true;
      watching.abort();
      applyObjects(target, workloads).then(
        () => log(`add-ons: ${workloads.length} workloads created, a node being Ready`),
        (error: Error) => log(`add-ons: ${error.message}`),
      );
    },
    (error) => log(`add-ons: watching nodes: ${error.message.split('\n')[0]}`),
    watching.signal,
  );
}

function clusterInfoKubeconfig(server: string, caPem: string): string {
  return (clusterInfo(server, caPem) as { data: { kubeconfig: string } }).data.kubeconfig;
}
