// What end-to-end tests and benchmarks share, free of any test framework: run the real CLI, find and
// remove what a run created by label, kubectl from the node image, and the small workload images.

export const LABEL_CLUSTER = LABELS.cluster;

/** The Docker client, for tests that look at the engine directly. */
export function docker() {
  return dockerRuntime().client;
}

import { join } from 'node:path';
import { execa } from 'execa';
import { detachImageCache, removeImageCache } from '../../cli/image-cache.js';
import { type DebianPackage, parseAptShow } from '../../images/local-path.js';
import { dockerRuntime } from '../../cli/runtime/docker-runtime.js';
import { DEFAULT_KUBERNETES_VERSION } from '../../images/recipe.js';
import { LABELS, nodeImage } from '../../shared/contract.js';
import { poll } from '../../shared/poll.js';
import { PROJECT_ROOT } from '../../images/project-root.js';

export { PROJECT_ROOT };
export const CLI = join(PROJECT_ROOT, 'dist', 'cli', 'main.js');
export const NODE_IMAGE = process.env.VIND_TEST_IMAGE ?? nodeImage(DEFAULT_KUBERNETES_VERSION);

export function runVind(args: string[], env: Record<string, string> = {}) {
  return execa('node', [CLI, ...args], { env, reject: false, stdin: 'ignore', timeout: 600_000 });
}

export function uniqueName(prefix: string): string {
  return `${prefix}-${Math.random().toString(36).slice(2, 8)}`;
}

/** How many containers, volumes and networks still carry the cluster's label. */
export async function objectsLeft(cluster: string): Promise<number> {
  const filter = { label: [`${LABEL_CLUSTER}=${cluster}`] };
  const containers = await docker().listContainers({ all: true, filters: filter });
  const volumes = (await docker().listVolumes({ filters: filter })).Volumes ?? [];
  const networks = await docker().listNetworks({ filters: filter });
  return containers.length + volumes.length + networks.length;
}

/** Removes every container, volume and network labelled with the cluster name. */
export async function removeByLabel(cluster: string): Promise<void> {
  const filter = { label: [`${LABEL_CLUSTER}=${cluster}`] };
  const containers = await docker().listContainers({ all: true, filters: filter });
  await Promise.all(
    containers.map((c) =>
      docker()
        .getContainer(c.Id)
        .remove({ force: true, v: true })
        .catch(() => undefined),
    ),
  );
  const volumes = (await docker().listVolumes({ filters: filter })).Volumes ?? [];
  await Promise.all(
    volumes.map((v) =>
      docker()
        .getVolume(v.Name)
        .remove({ force: true })
        .catch(() => undefined),
    ),
  );
  const networks = await docker().listNetworks({ filters: filter });
  await Promise.all(
    networks.map(async (n) => {
      await detachImageCache(dockerRuntime(), n.Name);
      await docker()
        .getNetwork(n.Id)
        .remove()
        .catch(() => undefined);
    }),
  );
  // The shared image cache goes with the last cluster, as `vind delete` does it.
  const clusters = await docker().listContainers({ all: true, filters: { label: [LABEL_CLUSTER] } });
  if (clusters.length === 0) await removeImageCache(dockerRuntime(), false);
}

export async function requireNodeImage(): Promise<void> {
  try {
    await docker().getImage(NODE_IMAGE).inspect();
  } catch {
    throw new Error(`${NODE_IMAGE} is missing: build it with \`node dist/cli/main.js image build\``);
  }
}

export function waitFor<T>(
  what: string,
  probe: () => Promise<T | undefined>,
  timeoutMs: number,
  intervalMs = 250,
): Promise<T> {
  return poll(what, probe, { timeoutMs, intervalMs });
}

/** kubectl as built into the node image, copied out once into the cache (the host may have none). */
export async function kubectlBinary(nodeImage = NODE_IMAGE): Promise<string> {
  const { cacheDir } = await import('../../cli/paths.js');
  const { existsSync } = await import('node:fs');
  const { mkdir, writeFile, chmod } = await import('node:fs/promises');
  const tar = (await import('tar-stream')).default;
  const image = await docker().getImage(nodeImage).inspect();
  const target = join(cacheDir(), 'kubectl', image.Id.replace('sha256:', '').slice(0, 12), 'kubectl');
  if (existsSync(target)) return target;
  const container = await docker().createContainer({ Image: nodeImage, Entrypoint: ['/bin/true'] });
  try {
    const archive = (await container.getArchive({ path: '/usr/local/bin/kubectl' })) as NodeJS.ReadableStream;
    const extract = tar.extract();
    const chunks: Buffer[] = [];
    await new Promise<void>((resolve, reject) => {
      extract.on('entry', (_header, stream, next) => {
        stream.on('data', (c: unknown) => chunks.push(c as Buffer));
        stream.on('end', next);
      });
      extract.on('finish', resolve);
      extract.on('error', reject);
      archive.pipe(extract);
    });
    await mkdir(join(target, '..'), { recursive: true });
    await writeFile(`${target}.tmp`, Buffer.concat(chunks));
    await chmod(`${target}.tmp`, 0o755);
    const { rename } = await import('node:fs/promises');
    await rename(`${target}.tmp`, target);
    return target;
  } finally {
    await container.remove({ force: true });
  }
}

/** A kubectl bound to one kubeconfig file. */
export function kubectlFor(binary: string, kubeconfig: string) {
  return (args: string[], input?: string) =>
    execa(binary, ['--kubeconfig', kubeconfig, ...args], { reject: false, input, timeout: 120_000 });
}

/** Loads a docker-archive into the host's Docker. */
async function loadIntoDocker(archive: Buffer): Promise<void> {
  const { Readable } = await import('node:stream');
  const stream = await docker().loadImage(Readable.from(archive));
  await new Promise<void>((resolve, reject) =>
    docker().modem.followProgress(stream as NodeJS.ReadableStream, (error) =>
      error ? reject(error) : resolve(),
    ),
  );
}

export const TEST_IMAGE = 'vind-test/busybox:1';

/** A pod of the test image that runs `script` with the PersistentVolumeClaim `claim` at /data. */
export function podOnClaim(name: string, claim: string, script: string) {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name },
    spec: {
      terminationGracePeriodSeconds: 1,
      containers: [
        {
          name: 'main',
          image: TEST_IMAGE,
          imagePullPolicy: 'IfNotPresent',
          command: ['sh', '-c', script],
          volumeMounts: [{ name: 'data', mountPath: '/data' }],
        },
      ],
      volumes: [{ name: 'data', persistentVolumeClaim: { claimName: claim } }],
    },
  };
}

/**
 * A small image for test workloads (shell, httpd, wget, nslookup), built from Debian's static busybox
 * and loaded into the host's Docker: no registry can be reached here.
 */
export async function ensureTestImage(): Promise<string> {
  const existing = await docker()
    .getImage(TEST_IMAGE)
    .inspect()
    .catch(() => undefined);
  if (existing) return TEST_IMAGE;
  const { readFile } = await import('node:fs/promises');
  const { buildDockerArchive } = await import('../../images/docker-archive.js');
  const busybox = await readFile('/bin/busybox');
  const applets = [
    'sh',
    'httpd',
    'wget',
    'nslookup',
    'hostname',
    'sleep',
    'cat',
    'echo',
    'mkdir',
    'nc',
    'ls',
  ];
  const built = await buildDockerArchive({
    reference: TEST_IMAGE,
    files: [
      { path: 'bin/busybox', content: busybox, mode: 0o755 },
      // busybox picks the applet from the name it is called by.
      ...applets.map((a) => ({
        path: `bin/${a}`,
        content: Buffer.alloc(0),
        mode: 0o777,
        linkTarget: 'busybox',
      })),
    ],
    entrypoint: ['/bin/sh'],
  });
  await loadIntoDocker(built.tar);
  return TEST_IMAGE;
}

/**
 * The iperf3 image's Debian packages: iperf3 and the libraries it loads (libiperf0, libsctp1,
 * libssl3, glibc and libgcc_s, which glibc loads to unwind threads), and the static busybox for a
 * shell, `ip` and `httpd`. iperf3's other dependencies (adduser, debconf, init-system-helpers) serve
 * its maintainer scripts only, and gcc-12-base holds documentation: nothing is installed or
 * configured inside the image, the packages are only unpacked.
 */
const IPERF_PACKAGES = ['iperf3', 'libiperf0', 'libsctp1', 'libssl3', 'libc6', 'libgcc-s1', 'busybox-static'];

/** busybox applets linked into /bin: a shell, routes for a client, a trivial HTTP server. */
const IPERF_APPLETS = [
  'sh',
  'ip',
  'httpd',
  'wget',
  'nc',
  'ping',
  'hostname',
  'sleep',
  'cat',
  'echo',
  'mkdir',
  'ls',
];

/** What the packages carry that the image never uses: documentation, service scripts, firewall profiles. */
const IPERF_REMOVALS = ['usr/share', 'etc/init.d', 'etc/ufw', 'lib/systemd', 'usr/lib/systemd'];

/**
 * The candidate version and SHA-256 of each package, from the host's apt lists (no download): the
 * image's tag hashes them, so a Debian update of any of them makes a new image.
 */
async function candidatePackages(packages: string[]): Promise<DebianPackage[]> {
  const shown = await execa('apt-cache', ['show', '--no-all-versions', ...packages], { reject: false });
  const found = packages.map((name) => parseAptShow(name, shown.stdout));
  const missing = packages.filter((_, index) => !found[index]);
  if (shown.exitCode !== 0 || missing.length > 0) {
    throw new Error(
      `the iperf3 test image is built from Debian packages that apt does not know here (${missing.join(', ') || shown.stderr.trim()}): run apt-get update`,
    );
  }
  return found as DebianPackage[];
}

/**
 * An image with iperf3 (`iperf3 -s`, `iperf3 -c`), a shell, `ip` and busybox `httpd`, made of
 * Debian packages fetched with `apt-get download`, unpacked with `dpkg-deb -x` into a root file
 * system and imported into the host's Docker (no registry can be reached here). Tagged by its
 * inputs: the packages' versions and hashes and what is kept of them. `CMD iperf3 -s`.
 */
export async function ensureIperfImage(): Promise<string> {
  const { inputsHash, shortHash } = await import('../../images/inputs.js');
  const packages = await candidatePackages(IPERF_PACKAGES);
  const hash = inputsHash({
    packages: packages.map((p) => `${p.name}=${p.version} ${p.sha256}`).join('\n'),
    applets: IPERF_APPLETS.join(','),
    removals: IPERF_REMOVALS.join(','),
    layout: 'gconv removed; /tmp 1777; CMD iperf3 -s',
  });
  const reference = `vind-test/iperf3:${shortHash(hash)}`;
  const existing = await docker()
    .getImage(reference)
    .inspect()
    .catch(() => undefined);
  if (existing) return reference;

  const { chmod, mkdir, mkdtemp, readdir, rm, symlink } = await import('node:fs/promises');
  const { tmpdir } = await import('node:os');
  const scratch = await mkdtemp(join(tmpdir(), 'vind-iperf3-'));
  try {
    const debs = join(scratch, 'debs');
    const root = join(scratch, 'root');
    await mkdir(debs);
    await mkdir(root);
    const download = await execa(
      'apt-get',
      ['download', '-q', ...packages.map((p) => `${p.name}=${p.version}`)],
      { cwd: debs, reject: false },
    );
    if (download.exitCode !== 0) {
      const reason = download.stderr.split('\n').find((l) => l.startsWith('E:')) ?? download.stderr.trim();
      throw new Error(`apt-get download of the iperf3 image's packages failed: ${reason}`);
    }
    for (const deb of (await readdir(debs)).filter((f) => f.endsWith('.deb'))) {
      await execa('dpkg-deb', ['-x', join(debs, deb), root]);
    }
    for (const path of IPERF_REMOVALS) await rm(join(root, path), { recursive: true, force: true });
    // glibc's character-set converters (8 MB): iperf3 never converts text.
    for (const dir of await readdir(join(root, 'usr', 'lib'))) {
      await rm(join(root, 'usr', 'lib', dir, 'gconv'), { recursive: true, force: true });
    }
    for (const applet of IPERF_APPLETS) await symlink('busybox', join(root, 'bin', applet));
    // iperf3 keeps its send buffer in a file under /tmp.
    await mkdir(join(root, 'tmp'));
    await chmod(join(root, 'tmp'), 0o1777);

    const packing = execa('tar', ['--numeric-owner', '--owner=0', '--group=0', '-C', root, '-cf', '-', '.'], {
      buffer: false,
    });
    const imported = dockerRuntime().importRootfs(packing.stdout, reference, [
      'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
      'CMD ["iperf3", "-s"]',
    ]);
    const [packError, importError] = await Promise.all([
      packing.then(
        () => undefined,
        (error: Error) => error,
      ),
      imported.then(
        () => undefined,
        (error: Error) => error,
      ),
    ]);
    if (packError || importError) {
      // Docker tags an import as it reads it: an interrupted stream must not stay under this tag.
      await docker()
        .getImage(reference)
        .remove({ force: true })
        .catch(() => undefined);
      throw new Error(`importing ${reference}: ${(importError ?? packError)!.message.split('\n')[0]}`);
    }
    return reference;
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}

/**
 * A Deployment with at most one pod per node (required anti-affinity on the hostname), so that its
 * replicas land on distinct workers. With one pod per node there is no room to surge: updates
 * replace pods (Recreate) instead of rolling.
 */
export function spreadDeployment(
  name: string,
  container: Record<string, unknown>,
  replicas: number,
  podSpec: Record<string, unknown> = {},
) {
  return {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: { name },
    spec: {
      replicas,
      strategy: { type: 'Recreate' },
      selector: { matchLabels: { app: name } },
      template: {
        metadata: { labels: { app: name } },
        spec: {
          affinity: {
            podAntiAffinity: {
              requiredDuringSchedulingIgnoredDuringExecution: [
                { labelSelector: { matchLabels: { app: name } }, topologyKey: 'kubernetes.io/hostname' },
              ],
            },
          },
          // Test workloads ignore SIGTERM as PID 1; no need to wait the default 30 s for them.
          terminationGracePeriodSeconds: 1,
          ...podSpec,
          containers: [{ name: 'app', ...container }],
        },
      },
    },
  };
}

/**
 * The host's address on Docker's default bridge: datastore servers started by tests listen there,
 * where node containers on any cluster network reach them.
 */
export function hostAddressOnDefaultBridge(): Promise<string> {
  return dockerRuntime().hostAddressOn('bridge');
}

const FIXTURES = join(PROJECT_ROOT, 'test', 'fixtures');

/**
 * A test server from test/fixtures/<name> (standard library Go), compiled here and loaded into the
 * host's Docker as a one-file image tagged by its source hash.
 */
async function ensureGoFixtureImage(name: string): Promise<string> {
  const { createHash } = await import('node:crypto');
  const { readFile, mkdtemp, rm } = await import('node:fs/promises');
  const { tmpdir } = await import('node:os');
  const source = join(FIXTURES, name);
  const hash = createHash('sha256');
  for (const file of ['go.mod', 'main.go']) hash.update(await readFile(join(source, file)));
  const reference = `vind-test/${name}:${hash.digest('hex').slice(0, 12)}`;
  const existing = await docker()
    .getImage(reference)
    .inspect()
    .catch(() => undefined);
  if (existing) return reference;
  const scratch = await mkdtemp(join(tmpdir(), `vind-${name}-`));
  try {
    const binary = join(scratch, 'server');
    await execa('go', ['build', '-trimpath', '-ldflags=-s -w', '-o', binary, '.'], {
      cwd: source,
      env: { CGO_ENABLED: '0', GOFLAGS: '-mod=mod' },
    });
    const { buildDockerArchive } = await import('../../images/docker-archive.js');
    const built = await buildDockerArchive({
      reference,
      files: [{ path: 'server', content: await readFile(binary), mode: 0o755 }],
      entrypoint: ['/server'],
    });
    await loadIntoDocker(built.tar);
    return reference;
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}

/** The test webhook and aggregated-API server (test/fixtures/webhook-server). */
export function ensureWebhookServerImage(): Promise<string> {
  return ensureGoFixtureImage('webhook-server');
}

/**
 * The echo server (test/fixtures/echo-server): HTTP on 8080 and UDP on 5353, both answering with
 * the pod's hostname and the client address it saw.
 */
export function ensureEchoServerImage(): Promise<string> {
  return ensureGoFixtureImage('echo-server');
}

/** Runs a command in a container and collects its output (the runtime's exec). */
export function execInContainer(
  container: string,
  command: string[],
  input?: import('node:stream').Readable,
) {
  return dockerRuntime().exec(container, command, input);
}
