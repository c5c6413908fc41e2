// LoadBalancer Services on one cluster of 1 control plane + 2 workers, created for the run and removed
// at the end (also on a failure or Ctrl-C):
//
//   node dist/bench/load-balancer.js [--runs 10] [--failovers 3] [--seconds 5]
//                                    [--only apply,failover,throughput]
//
// a) apply → first answer: `kubectl apply` of a LoadBalancer Service (port 80) in front of a ready
//    2-replica busybox httpd Deployment, one pod on each worker, until an HTTP GET from the host to
//    http://<address>:80 answers 200; the Service is deleted between runs (target < 1.5 s);
// b) failover: a request from the host every 50 ms while the worker that announces the address
//    (kube-system/vind-load-balancer-announcements) is stopped with `docker stop`: the outage, from
//    the last answer before to the first answer after, and the time from the stop to that answer
//    (target < 3 s); the worker is started again and Ready between runs;
// c) throughput: iperf3 for a few seconds through the address of a LoadBalancer Service (TCP 5201) in
//    front of an iperf3 server pod, then straight to the pod's IP, from a client container on the
//    cluster's Docker network (target: at least 0.9 of the direct figure).
//
// The node image must be built. The workload images (busybox, iperf3) are built on the host and
// reach the nodes through the image cache.

import { readFile } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { connect } from 'node:net';
import { execa } from 'execa';
import { formatDuration } from '../cli/progress.js';
import { LABELS, LOAD_BALANCER, networkName } from '../shared/contract.js';
import { describeError } from '../shared/errors.js';
import { type KubeTarget, kubeRequest, targetFromKubeconfig } from '../shared/kubernetes.js';
import { sleep } from '../shared/poll.js';
import {
  docker,
  ensureIperfImage,
  ensureTestImage,
  kubectlBinary,
  kubectlFor,
  requireNodeImage,
  spreadDeployment,
  TEST_IMAGE,
  waitFor,
} from '../test/support/workloads.js';
import { BenchCluster, firstLine } from '../test/support/bench-cluster.js';

function option(name: string, fallback: number): number {
  const index = process.argv.indexOf(name);
  return index >= 0 ? Number(process.argv[index + 1]) : fallback;
}

const applyRuns = option('--runs', 10);
const failoverRuns = option('--failovers', 3);
const iperfSeconds = option('--seconds', 5);
const onlyIndex = process.argv.indexOf('--only');
const only = new Set(
  (onlyIndex >= 0 ? (process.argv[onlyIndex + 1] ?? '') : 'apply,failover,throughput').split(','),
);

const cluster = `bench-lb-${process.pid}`;
const clientContainers = new Set<string>();
const stopTimers: (() => void)[] = [];
// The measurements and the client containers end before the cluster goes.
const bench = await BenchCluster.open(cluster, 'vind-bench-lb-', async () => {
  for (const stop of stopTimers) stop();
  await Promise.all(
    [...clientContainers].map((name) =>
      docker()
        .getContainer(name)
        .remove({ force: true })
        .catch(() => undefined),
    ),
  );
});
const { kubeconfig } = bench;

function say(line: string): void {
  process.stdout.write(`${line}\n`);
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

// ---- the cluster's API, kubectl and the host's view of an address ----

let target: KubeTarget;
let kubectlRun: ReturnType<typeof kubectlFor>;

async function kubectl(args: string[], input?: string): Promise<string> {
  const result = await kubectlRun(args, input);
  if (result.exitCode !== 0) {
    throw new Error(`kubectl ${args.slice(0, 2).join(' ')}: ${firstLine(result.stderr || result.stdout)}`);
  }
  return result.stdout;
}

async function apiGet<T>(path: string): Promise<T | undefined> {
  const response = await kubeRequest<T>(target, 'GET', path, undefined, 3000);
  if (response.status === 404) return undefined;
  if (response.status !== 200) throw new Error(`GET ${path}: HTTP ${response.status}`);
  return response.body;
}

interface Service {
  status?: { loadBalancer?: { ingress?: { ip?: string }[] } };
}

interface Pod {
  metadata: { name: string; deletionTimestamp?: string };
  spec: { nodeName?: string };
  status?: {
    podIP?: string;
    conditions?: { type: string; status: string }[];
    containerStatuses?: { state?: { running?: { startedAt?: string } } }[];
  };
}

interface Node {
  status?: {
    conditions?: { type: string; status: string; lastHeartbeatTime?: string }[];
    addresses?: { type: string; address: string }[];
  };
}

/** The Service's first ingress address, once the controller has written it. */
async function ingressAddress(name: string): Promise<string | undefined> {
  const service = await apiGet<Service>(`/api/v1/namespaces/default/services/${name}`);
  return service?.status?.loadBalancer?.ingress?.[0]?.ip || undefined;
}

const ANNOUNCEMENTS = `${LOAD_BALANCER.announcements.namespace}/${LOAD_BALANCER.announcements.name}`;

/** Which node announces each address: the ConfigMap's data, `<address>: <node name>`. */
async function announcements(): Promise<Record<string, string>> {
  const { namespace, name } = LOAD_BALANCER.announcements;
  const map = await apiGet<{ data?: Record<string, string> }>(
    `/api/v1/namespaces/${namespace}/configmaps/${name}`,
  );
  return map?.data ?? {};
}

async function pods(app: string): Promise<Pod[]> {
  const list = await apiGet<{ items: Pod[] }>(
    `/api/v1/namespaces/default/pods?labelSelector=${encodeURIComponent(`app=${app}`)}`,
  );
  return list?.items ?? [];
}

async function nodeAddress(name: string): Promise<string> {
  const node = await apiGet<Node>(`/api/v1/nodes/${name}`);
  const address = node?.status?.addresses?.find((a) => a.type === 'InternalIP')?.address;
  if (!address) throw new Error(`node ${name} has no InternalIP`);
  return address;
}

/** The status of one GET on a connection of its own (no keep-alive: each request finds its path anew). */
function httpStatus(url: string, timeoutMs: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const request = httpRequest(url, { agent: false, timeout: timeoutMs }, (response) => {
      response.resume();
      response.on('end', () => resolve(response.statusCode ?? 0));
      response.on('error', reject);
    });
    request.on('timeout', () => request.destroy(new Error(`no answer in ${timeoutMs}ms`)));
    request.on('error', reject);
    request.end();
  });
}

/**
 * When the first 200 comes: a GET every `intervalMs`, each on its own, so that one caught in address
 * resolution does not hold the next back.
 */
function firstAnswer(url: string, timeoutMs: number, intervalMs = 20): Promise<number> {
  return new Promise((resolve, reject) => {
    const deadline = performance.now() + timeoutMs;
    let done = false;
    let lastError = '';
    const finish = (action: () => void) => {
      if (done) return;
      done = true;
      clearInterval(timer);
      action();
    };
    const tick = () => {
      if (done) return;
      if (performance.now() > deadline) {
        finish(() =>
          reject(
            new Error(`no answer from ${url} in ${timeoutMs / 1000}s${lastError ? `: ${lastError}` : ''}`),
          ),
        );
        return;
      }
      httpStatus(url, 2000).then(
        (status) => {
          if (status === 200) {
            const at = performance.now();
            finish(() => resolve(at));
          } else lastError = `HTTP ${status}`;
        },
        (error: Error) => (lastError = error.message),
      );
    };
    const timer = setInterval(tick, intervalMs);
    stopTimers.push(() => finish(() => reject(new Error('interrupted'))));
    tick();
  });
}

function tcpOpen(host: string, port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host, port, timeout: timeoutMs });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('timeout', () => {
      socket.destroy();
      resolve(false);
    });
    socket.once('error', () => resolve(false));
  });
}

// ---- workloads ----

const WEB = 'web';
const IPERF = 'iperf';

function loadBalancerService(name: string, port: number) {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name },
    spec: {
      type: 'LoadBalancer',
      selector: { app: name },
      ports: [{ name: 'main', protocol: 'TCP', port, targetPort: port }],
    },
  };
}

async function deploy(manifest: object, name: string): Promise<void> {
  await kubectl(['apply', '-f', '-'], JSON.stringify(manifest));
  await kubectl(['rollout', 'status', `deployment/${name}`, '--timeout=180s']);
}

/** Deletes a Service, and waits until its address is no longer announced. */
async function deleteService(name: string, address: string | undefined): Promise<void> {
  await kubectl(['delete', 'service', name, '--wait=true', '--timeout=60s']);
  if (!address) return;
  await waitFor(
    `${address} to leave ${ANNOUNCEMENTS} once its Service is gone`,
    async () => ((await announcements())[address] === undefined ? true : undefined),
    30_000,
    100,
  );
}

// ---- a) apply → first answer ----

async function applyToAnswer(): Promise<void> {
  say(`a) kubectl apply of a LoadBalancer Service → first HTTP 200 from the host (${applyRuns} runs)`);
  const service = JSON.stringify(loadBalancerService(WEB, 80));
  const totals: number[] = [];
  for (let run = 1; run <= applyRuns; run++) {
    const started = performance.now();
    let appliedAt = 0;
    const applied = kubectlRun(['apply', '-f', '-'], service).then((result) => {
      appliedAt = performance.now();
      return result;
    });
    let address: string | undefined;
    try {
      address = await waitFor(`an address for Service ${WEB}`, () => ingressAddress(WEB), 60_000, 20);
      const addressAt = performance.now();
      const answeredAt = await firstAnswer(`http://${address}:80/`, 60_000);
      const result = await applied;
      if (result.exitCode !== 0) throw new Error(`kubectl apply: ${firstLine(result.stderr)}`);
      const total = answeredAt - started;
      totals.push(total);
      say(
        `  run ${String(run).padStart(2)}: ${formatDuration(total)} to the first answer from ${address} ` +
          `(address in the status after ${formatDuration(addressAt - started)}, kubectl apply returned after ${formatDuration(appliedAt - started)})`,
      );
    } catch (error) {
      // Leave no Service behind for the next part; the first failure is the one to tell.
      await applied;
      await deleteService(WEB, address).catch(() => undefined);
      throw error;
    }
    await deleteService(WEB, address);
    // A quiet cluster for the next run.
    await sleep(1000);
  }
  say(`  median ${formatDuration(median(totals))} (target < 1.5 s)`);
}

// ---- b) failover ----

interface Probe {
  start: number;
  end: number;
  ok: boolean;
}

/** A GET every `intervalMs` from the host, each on its own connection; what each found, and when. */
class Prober {
  readonly probes: Probe[] = [];
  private readonly inFlight = new Set<number>();
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly url: string,
    private readonly intervalMs = 50,
    private readonly timeoutMs = 2000,
  ) {}

  start(): void {
    this.timer = setInterval(() => this.once(), this.intervalMs);
    stopTimers.push(() => this.stop());
  }

  stop(): void {
    clearInterval(this.timer);
  }

  private once(): void {
    const start = performance.now();
    this.inFlight.add(start);
    httpStatus(this.url, this.timeoutMs)
      .then(
        (status) => status === 200,
        () => false,
      )
      .then((ok) => {
        this.inFlight.delete(start);
        this.probes.push({ start, end: performance.now(), ok });
      });
  }

  /** Every request of the last `ms` answered, and none is left waiting long. */
  steady(ms: number): boolean {
    const now = performance.now();
    const recent = this.probes.filter((p) => p.end >= now - ms);
    const waiting = [...this.inFlight].some((start) => now - start > 500);
    return recent.length >= ms / this.intervalMs / 2 && recent.every((p) => p.ok) && !waiting;
  }
}

interface Outage {
  /** The longest time without an answer, from the last answer before it to the first after. */
  outage: number;
  /** From the stop to the answer that ended the outage. */
  stopToAnswer: number;
  /** Requests sent from the stop to the end of the outage that got no answer. */
  failed: number;
  /** Of the requests sent in the 3 s after the outage, the share answered. */
  shareAfter: number;
}

interface Failover extends Outage {
  from: string;
  to: string;
  stopTook: number;
}

/**
 * The outage around a stop at `stoppedAt`: the longest gap between answers from the last one before
 * the stop up to `after`, the first answer once the stopped container was gone. Times are when
 * answers arrived; an answer may come while the node is still stopping, or only much later.
 */
function outageOf(probes: Probe[], stoppedAt: number, after: number): Outage {
  const answers = probes
    .filter((p) => p.ok)
    .map((p) => p.end)
    .sort((a, b) => a - b);
  const lastBefore = answers.filter((t) => t <= stoppedAt).at(-1) ?? stoppedAt;
  const window = [lastBefore, ...answers.filter((t) => t > stoppedAt && t <= after)];
  let gapStart = lastBefore;
  let gapEnd = window[1] ?? after;
  for (let i = 1; i < window.length; i++) {
    if (window[i]! - window[i - 1]! > gapEnd - gapStart) {
      gapStart = window[i - 1]!;
      gapEnd = window[i]!;
    }
  }
  const failed = probes.filter((p) => !p.ok && p.start >= stoppedAt && p.start <= gapEnd).length;
  const following = probes.filter((p) => p.start > gapEnd && p.start <= gapEnd + 3000);
  const shareAfter = following.length ? following.filter((p) => p.ok).length / following.length : 0;
  return { outage: gapEnd - gapStart, stopToAnswer: gapEnd - stoppedAt, failed, shareAfter };
}

async function nodeBack(node: string, startedAt: number): Promise<void> {
  const address = await nodeAddress(node);
  await waitFor(
    `${node} to be Ready again, with kube-proxy healthy and every ${WEB} pod Ready`,
    async () => {
      const status = await apiGet<Node>(`/api/v1/nodes/${node}`);
      const condition = status?.status?.conditions?.find((c) => c.type === 'Ready');
      // A Ready condition written before the stop says nothing: its heartbeat must be newer.
      const heartbeat = Date.parse(condition?.lastHeartbeatTime ?? '');
      if (condition?.status !== 'True' || !(heartbeat >= startedAt - 1000)) {
        throw new Error(`${node} not Ready`);
      }
      const health = await httpStatus(
        `http://${address}:${LOAD_BALANCER.nodeHealthPort}/healthz`,
        2000,
      ).catch(() => 0);
      if (health !== 200) throw new Error(`kube-proxy on ${node} answers ${health || 'nothing'}`);
      const web = (await pods(WEB)).filter((p) => !p.metadata.deletionTimestamp);
      const ready = (p: Pod) =>
        p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false;
      // The pod on the restarted node may still read Ready from before the stop: it counts once its
      // container is a new one.
      const restarted = (p: Pod) => {
        const containers = p.status?.containerStatuses ?? [];
        return (
          containers.length > 0 &&
          containers.every((c) => Date.parse(c.state?.running?.startedAt ?? '') >= startedAt - 1000)
        );
      };
      const good = web.filter((p) => ready(p) && (p.spec.nodeName !== node || restarted(p)));
      if (web.length !== 2 || good.length !== 2) throw new Error(`${good.length} of 2 ${WEB} pods Ready`);
      return true;
    },
    180_000,
    500,
  );
}

async function oneFailover(prober: Prober, address: string): Promise<Failover> {
  // Start from a quiet state: every request answered, and the same node announcing, for 2 s.
  let announcer = '';
  let since = performance.now();
  const from = await waitFor(
    `every request through ${address} answered and one node announcing it in ${ANNOUNCEMENTS} for 2 s`,
    async () => {
      const node = (await announcements())[address] ?? '';
      const now = performance.now();
      if (node !== announcer) {
        announcer = node;
        since = now;
      }
      if (!node) throw new Error(`no node announces ${address}`);
      if (!prober.steady(2000)) throw new Error('requests are failing');
      return now - since >= 2000 ? node : undefined;
    },
    180_000,
    200,
  );

  const stoppedAt = performance.now();
  await docker().getContainer(from).stop();
  const stopReturned = performance.now();
  const after = await waitFor(
    `an answer through ${address} after ${from} stopped`,
    async () => prober.probes.find((p) => p.ok && p.end > stopReturned)?.end,
    120_000,
    50,
  );
  // Watch 3 s more: the stopped node's pod stays an endpoint until the node is found NotReady.
  await sleep(3000);
  const to = (await announcements())[address] ?? '(none)';

  const outage = outageOf(prober.probes, stoppedAt, after);

  const startedAt = Date.now();
  await docker().getContainer(from).start();
  await nodeBack(from, startedAt);
  return { from, to, ...outage, stopTook: stopReturned - stoppedAt };
}

async function failover(): Promise<void> {
  say(
    `b) failover: docker stop of the worker announcing the address, a request every 50 ms (${failoverRuns} runs)`,
  );
  await kubectl(['apply', '-f', '-'], JSON.stringify(loadBalancerService(WEB, 80)));
  const address = await waitFor(`an address for Service ${WEB}`, () => ingressAddress(WEB), 60_000, 100);
  await firstAnswer(`http://${address}:80/`, 60_000);
  const prober = new Prober(`http://${address}:80/`);
  prober.start();
  const runs: Failover[] = [];
  try {
    for (let run = 1; run <= failoverRuns; run++) {
      const result = await oneFailover(prober, address);
      runs.push(result);
      say(
        `  run ${run}: ${result.from} → ${result.to}: outage ${formatDuration(result.outage)}, ` +
          `stop → answer ${formatDuration(result.stopToAnswer)} (docker stop took ${formatDuration(result.stopTook)}, ` +
          `${result.failed} requests failed; ${Math.round(result.shareAfter * 100)}% answered in the 3 s after)`,
      );
    }
  } finally {
    prober.stop();
  }
  say(
    `  median outage ${formatDuration(median(runs.map((r) => r.outage)))} (target < 3 s), ` +
      `median stop → answer ${formatDuration(median(runs.map((r) => r.stopToAnswer)))}`,
  );
  await deleteService(WEB, address);
}

// ---- c) throughput ----

interface IperfReport {
  error?: string;
  end?: { sum_received?: { bits_per_second?: number } };
}

/** Runs an iperf3 client container on the cluster network; the receiver's bits per second. */
async function iperfClient(image: string, name: string, command: string[]): Promise<number> {
  const container = `${cluster}-${name}`;
  clientContainers.add(container);
  try {
    for (let attempt = 1; ; attempt++) {
      const result = await execa(
        'docker',
        [
          'run',
          '--rm',
          '--name',
          container,
          '--label',
          `${LABELS.cluster}=${cluster}`,
          '--network',
          networkName(cluster),
          '--cap-add',
          'NET_ADMIN',
          image,
          ...command,
        ],
        { reject: false, stdin: 'ignore', timeout: (iperfSeconds + 60) * 1000 },
      );
      const stdout = result.stdout;
      let report: IperfReport = {};
      try {
        report = JSON.parse(stdout.slice(stdout.indexOf('{'))) as IperfReport;
      } catch {
        // no JSON: the reason is on stderr
      }
      // The server runs one test at a time; the readiness probe's connection may still hold it.
      if (report.error?.includes('busy') && attempt < 3) {
        await sleep(2000);
        continue;
      }
      const bits = report.end?.sum_received?.bits_per_second;
      if (result.exitCode !== 0 || report.error || !bits) {
        throw new Error(
          `iperf3 client (${command.join(' ')}): ${report.error || firstLine(result.stderr) || result.shortMessage || `exit ${result.exitCode}`}`,
        );
      }
      return bits;
    }
  } finally {
    await docker()
      .getContainer(container)
      .remove({ force: true })
      .catch(() => undefined);
    clientContainers.delete(container);
  }
}

async function throughput(image: string): Promise<void> {
  say(`c) throughput: iperf3 -t ${iperfSeconds} from a container on ${networkName(cluster)}`);
  await deploy(
    spreadDeployment(
      IPERF,
      { image, imagePullPolicy: 'IfNotPresent', command: ['iperf3', '-s'], ports: [{ containerPort: 5201 }] },
      1,
    ),
    IPERF,
  );
  await kubectl(['apply', '-f', '-'], JSON.stringify(loadBalancerService(IPERF, 5201)));
  const address = await waitFor(`an address for Service ${IPERF}`, () => ingressAddress(IPERF), 60_000, 100);
  await waitFor(
    `${address}:5201 to accept connections`,
    async () => ((await tcpOpen(address, 5201, 1000)) ? true : undefined),
    60_000,
    100,
  );
  // The probe's connection is an aborted test to the server: let it settle.
  await sleep(1000);
  const pod = (await pods(IPERF)).find((p) => p.status?.podIP && !p.metadata.deletionTimestamp);
  if (!pod?.status?.podIP || !pod.spec.nodeName) throw new Error(`the ${IPERF} pod has no IP`);
  const podIp = pod.status.podIP;
  const podNode = pod.spec.nodeName;
  const podNodeAddress = await nodeAddress(podNode);
  const announcer = (await announcements())[address] ?? '(none)';
  say(`  server pod ${podIp} on ${podNode}; ${address} announced by ${announcer}`);

  const seconds = String(iperfSeconds);
  const through = await iperfClient(image, 'iperf-lb', ['iperf3', '-c', address, '-t', seconds, '-J']);
  // Straight to the pod: a route to its IP via its node, as the control plane has one per podCIDR.
  const direct = await iperfClient(image, 'iperf-pod', [
    'sh',
    '-c',
    `ip route add ${podIp}/32 via ${podNodeAddress} && exec iperf3 -c ${podIp} -t ${seconds} -J`,
  ]);
  const gbits = (bits: number) => `${(bits / 1e9).toFixed(2)} Gbit/s`;
  say(`  through ${address}:5201`.padEnd(40) + gbits(through));
  say(`  straight to the pod ${podIp}:5201`.padEnd(40) + gbits(direct));
  say(`  ratio ${(through / direct).toFixed(2)} (target >= 0.9)`);
}

// ---- the run ----

async function main(): Promise<void> {
  await requireNodeImage();
  await ensureTestImage();
  const iperfImage = only.has('throughput') ? await ensureIperfImage() : '';
  kubectlRun = kubectlFor(await kubectlBinary(), kubeconfig);

  say(`load-balancer: 1 control plane + 2 workers (cluster ${cluster}), node image present`);
  // A signal that came while the images were checked: create nothing.
  if (bench.interrupted) return;
  const started = performance.now();
  const create = await bench.create(['--workers', '2']);
  if (create.exitCode !== 0) {
    const reason = create.stderr.split('\n').find((l) => l.startsWith('error')) ?? firstLine(create.stderr);
    throw new Error(`vind create ${cluster}: ${reason.replace(/^error:\s*/, '')}`);
  }
  say(`  cluster created in ${formatDuration(performance.now() - started)}`);
  target = targetFromKubeconfig(await readFile(kubeconfig, 'utf8'));

  if (only.has('apply') || only.has('failover')) {
    await deploy(
      spreadDeployment(
        WEB,
        {
          image: TEST_IMAGE,
          imagePullPolicy: 'IfNotPresent',
          command: ['sh', '-c', 'mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www'],
          ports: [{ containerPort: 80 }],
          readinessProbe: { httpGet: { path: '/', port: 80 }, periodSeconds: 1 },
        },
        2,
      ),
      WEB,
    );
    const nodes = new Set((await pods(WEB)).map((p) => p.spec.nodeName));
    say(`  ${WEB}: 2 httpd pods Ready on ${[...nodes].join(' and ')}`);
  }
  if (only.has('apply')) await applyToAnswer();
  if (only.has('failover')) await failover();
  if (only.has('throughput')) await throughput(iperfImage);
}

let failed = false;
try {
  await main();
} catch (error) {
  if (!bench.interrupted) {
    process.stderr.write(`error: ${describeError(error)}\n`);
    failed = true;
  }
} finally {
  await bench.cleanup();
}
process.exit(bench.exitCode(failed));
