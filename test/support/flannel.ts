// flannel as a user installs it on a cluster made with `networking.cni: none`: flanneld and the
// flannel CNI plugin compiled from Go modules into an image in the host's Docker (pods pull it through
// the image cache), and the manifests of its DaemonSet, VXLAN backend.
//
// The module proxy here serves neither github.com/flannel-io/cni-plugin nor the Tencent Cloud SDK
// versions flanneld's go.mod names (for a backend not used here). So the plugin comes from
// github.com/containernetworking/plugins v0.9.1, the last release that carried it before it moved to
// its own repository, and flanneld is built from a wrapper module that replaces the two SDK modules
// with published neighbours.

import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { dockerRuntime } from '../../cli/runtime/docker-runtime.js';
import { logDir } from '../../cli/paths.js';
import { baseImageReference } from '../../images/base-image.js';
import { packDirectory } from '../../images/build-context.js';
import { downloadModule, goVersion } from '../../images/go-build.js';
import { inputsHash, shortHash } from '../../images/inputs.js';
import { stageRunner } from '../../images/stage-runner.js';

const FLANNELD = { module: 'github.com/flannel-io/flannel', version: 'v0.28.10' };
const FLANNEL_PLUGIN = {
  module: 'github.com/containernetworking/plugins',
  version: 'v0.9.1',
  package: './plugins/meta/flannel',
};
const SDK = 'github.com/tencentcloud/tencentcloud-sdk-go/tencentcloud';

/** A module of our own that requires flanneld, so its main package builds with two versions replaced. */
export function flanneldWrapperGoMod(): string {
  return [
    'module vind.test/flanneld',
    '',
    'go 1.26.0',
    '',
    `require ${FLANNELD.module} ${FLANNELD.version}`,
    '',
    'replace (',
    `\t${SDK}/common => ${SDK}/common v1.3.206`,
    `\t${SDK}/vpc => ${SDK}/vpc v1.3.75`,
    ')',
    '',
  ].join('\n');
}

const WRAPPER_TOOLS_GO = `//go:build tools\n\npackage tools\n\nimport _ "${FLANNELD.module}"\n`;

export const FLANNEL_NAMESPACE = 'kube-flannel';
const PLUGIN_IN_IMAGE = '/opt/cni-plugin/flannel';

function dockerfile(base: string): string {
  return [
    // The Debian base of the node image: flanneld runs iptables.
    `FROM ${base}`,
    'COPY flanneld /opt/bin/flanneld',
    `COPY flannel ${PLUGIN_IN_IMAGE}`,
    'ENTRYPOINT ["/opt/bin/flanneld"]',
    '',
  ].join('\n');
}

/**
 * `vind-test/flannel:<hash of its inputs>` in the host's Docker, built when missing: flanneld (cgo
 * for its UDP backend, linked statically, as its own build does on amd64) and the CNI plugin.
 */
export async function ensureFlannelImage(): Promise<string> {
  const docker = dockerRuntime();
  const base = baseImageReference();
  const go = await goVersion();
  const hash = inputsHash({
    flanneld: JSON.stringify(FLANNELD),
    plugin: JSON.stringify(FLANNEL_PLUGIN),
    wrapper: flanneldWrapperGoMod(),
    dockerfile: dockerfile(base),
    go,
  });
  const reference = `vind-test/flannel:${shortHash(hash)}`;
  if (await docker.inspectImage(reference)) return reference;
  if (!(await docker.inspectImage(base))) {
    throw new Error(`${base} is missing: build the node image first (it makes the Debian base)`);
  }

  const runner = await stageRunner(logDir(), 'flannel');
  const scratch = await mkdtemp(join(tmpdir(), 'vind-flannel-'));
  try {
    const context = join(scratch, 'context');
    const wrapper = join(scratch, 'flanneld');
    await mkdir(context);
    await mkdir(wrapper);
    await writeFile(join(wrapper, 'go.mod'), flanneldWrapperGoMod());
    await writeFile(join(wrapper, 'tools.go'), WRAPPER_TOOLS_GO);
    const wrapperEnv = { GOWORK: 'off', GOFLAGS: '-mod=mod' };
    await runner.run('go', ['mod', 'tidy'], { cwd: wrapper, env: wrapperEnv });
    const stamp = `-X ${FLANNELD.module}/pkg/version.Version=${FLANNELD.version}`;
    await runner.run(
      'go',
      [
        'build',
        '-trimpath',
        '-ldflags',
        `-s -w ${stamp} -extldflags=-static`,
        '-o',
        join(context, 'flanneld'),
        FLANNELD.module,
      ],
      { cwd: wrapper, env: { ...wrapperEnv, CGO_ENABLED: '1' } },
    );
    // The plugin inside its own module folder: its own go.mod and go.sum decide its dependencies.
    const plugin = await downloadModule(runner, FLANNEL_PLUGIN.module, FLANNEL_PLUGIN.version);
    await runner.run(
      'go',
      ['build', '-trimpath', '-ldflags', '-s -w', '-o', join(context, 'flannel'), FLANNEL_PLUGIN.package],
      { cwd: plugin.Dir, env: { GOWORK: 'off', GOFLAGS: '-mod=readonly', CGO_ENABLED: '0' } },
    );
    await writeFile(join(context, 'Dockerfile'), dockerfile(base));
    const logFile = join(logDir(), 'flannel-image.log');
    await docker.buildImage(await packDirectory(context, ['Dockerfile', 'flanneld', 'flannel']), {
      tag: reference,
      labels: {},
      logFile,
    });
    return reference;
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}

/** net-conf.json: the cluster's pod network, each node's podCIDR taken from its Node (kube subnet manager). */
export function flannelNetConf(podSubnet: string): string {
  return JSON.stringify({ Network: podSubnet, Backend: { Type: 'vxlan' } }, null, 2);
}

/**
 * The conflist the DaemonSet installs: the flannel plugin reads the node's subnet from flanneld's
 * /run/flannel/subnet.env and delegates to Debian's bridge and host-local in the node image; portmap
 * for hostPort. cniVersion 0.4.0 is the newest that plugin speaks.
 */
export function flannelCniConf(): string {
  return JSON.stringify(
    {
      name: 'cbr0',
      cniVersion: '0.4.0',
      plugins: [
        { type: 'flannel', delegate: { hairpinMode: true, isDefaultGateway: true } },
        { type: 'portmap', capabilities: { portMappings: true } },
      ],
    },
    null,
    2,
  );
}

/** Everything `kubectl apply` gets: namespace, RBAC, configuration and the DaemonSet. */
export function flannelManifests(image: string, podSubnet: string): Record<string, unknown>[] {
  const namespace = FLANNEL_NAMESPACE;
  const hostPath = (name: string, path: string, type?: string) => ({
    name,
    hostPath: { path, ...(type ? { type } : {}) },
  });
  const configMount = { name: 'flannel-cfg', mountPath: '/etc/kube-flannel' };
  /** An init container that copies one file into a folder of the node. */
  const install = (name: string, from: string, to: string, volume: string) => ({
    name,
    image,
    imagePullPolicy: 'IfNotPresent',
    command: ['cp', '-f', from, to],
    volumeMounts: [{ name: volume, mountPath: to.slice(0, to.lastIndexOf('/')) }, configMount],
  });
  const fieldEnv = (name: string, fieldPath: string) => ({ name, valueFrom: { fieldRef: { fieldPath } } });
  return [
    {
      apiVersion: 'v1',
      kind: 'Namespace',
      // Its pods run privileged on the host network, whatever the cluster's Pod Security default.
      metadata: { name: namespace, labels: { 'pod-security.kubernetes.io/enforce': 'privileged' } },
    },
    { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: 'flannel', namespace } },
    {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'ClusterRole',
      metadata: { name: 'flannel' },
      rules: [
        { apiGroups: [''], resources: ['pods', 'nodes', 'namespaces'], verbs: ['get', 'list', 'watch'] },
        // Its annotations (the VTEP's address and MAC) and the NetworkUnavailable condition.
        { apiGroups: [''], resources: ['nodes/status'], verbs: ['patch'] },
      ],
    },
    {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'ClusterRoleBinding',
      metadata: { name: 'flannel' },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'flannel' },
      subjects: [{ kind: 'ServiceAccount', name: 'flannel', namespace }],
    },
    {
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: { name: 'kube-flannel-cfg', namespace },
      data: { 'cni-conf.json': flannelCniConf(), 'net-conf.json': flannelNetConf(podSubnet) },
    },
    {
      apiVersion: 'apps/v1',
      kind: 'DaemonSet',
      metadata: { name: 'kube-flannel-ds', namespace },
      spec: {
        selector: { matchLabels: { app: 'flannel' } },
        template: {
          metadata: { labels: { app: 'flannel' } },
          spec: {
            hostNetwork: true,
            priorityClassName: 'system-node-critical',
            serviceAccountName: 'flannel',
            // NotReady nodes are tainted until the network this DaemonSet brings is there.
            tolerations: [{ operator: 'Exists' }],
            terminationGracePeriodSeconds: 5,
            initContainers: [
              install('install-cni-plugin', PLUGIN_IN_IMAGE, '/opt/cni/bin/flannel', 'cni-plugin'),
              install(
                'install-cni',
                '/etc/kube-flannel/cni-conf.json',
                '/etc/cni/net.d/10-flannel.conflist',
                'cni',
              ),
            ],
            containers: [
              {
                name: 'kube-flannel',
                image,
                imagePullPolicy: 'IfNotPresent',
                // The interface is the one of the default route: the node's eth0 on the cluster network.
                command: ['/opt/bin/flanneld', '--ip-masq', '--kube-subnet-mgr'],
                env: [fieldEnv('POD_NAME', 'metadata.name'), fieldEnv('POD_NAMESPACE', 'metadata.namespace')],
                securityContext: { privileged: true },
                resources: { requests: { cpu: '10m', memory: '50Mi' } },
                volumeMounts: [
                  { name: 'run', mountPath: '/run/flannel' },
                  { name: 'xtables-lock', mountPath: '/run/xtables.lock' },
                  configMount,
                ],
              },
            ],
            volumes: [
              hostPath('run', '/run/flannel'),
              hostPath('cni-plugin', '/opt/cni/bin'),
              hostPath('cni', '/etc/cni/net.d'),
              hostPath('xtables-lock', '/run/xtables.lock', 'FileOrCreate'),
              { name: 'flannel-cfg', configMap: { name: 'kube-flannel-cfg' } },
            ],
          },
        },
      },
    },
  ];
}
