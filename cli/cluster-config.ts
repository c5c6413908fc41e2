// The configuration of one cluster: an optional YAML file (`--config FILE`) merged with command-line flags.
// Every problem becomes one ConfigError line that names the field and says what is allowed.
// The zod schema of the file is the single description of its fields: the types of what a file sets
// (PortMapping, WorkerSpec, ControlPlaneSpec, ClusterFile) are derived from it, so they cannot drift apart.

import { parseDocument } from 'yaml';
import { z } from 'zod';
import { DatastoreUrlError, parseDatastoreUrl, type Datastore } from '../shared/datastore.js';
import { MIN_KUBERNETES_MINOR } from '../images/recipe.js';
import { parseByteSize } from '../shared/byte-size.js';
import {
  DEFAULT_POD_SUBNET,
  DEFAULT_SERVICE_SUBNET,
  POD_SECURITY_LEVELS,
  type PodSecurityLevel,
  CNI_CHOICES,
  type CniChoice,
  STORAGE_CHOICES,
  type StorageChoice,
} from '../shared/contract.js';
import { VindError } from '../shared/errors.js';
import { parseSleepAfter } from './duration.js';
import { formatCidr, ipToInt, overlaps, parseCidr, type Cidr } from '../shared/subnets.js';

export const CONFIG_API_VERSION = 'vind.dev/v1alpha1';
export const CONFIG_KIND = 'Cluster';
export const DEFAULT_CLUSTER_NAME = 'vind';
export const DEFAULT_WORKER_COUNT = 1;
export const MAX_WORKERS = 20;
export const MAX_CLUSTER_NAME_LENGTH = 32;

/** The cluster to create: the file's settings after flags and defaults have filled every gap. */
export interface ClusterConfig {
  name: string;
  kubernetesVersion: string;
  image: string;
  workers: WorkerSpec[];
  podSubnet: string;
  serviceSubnet: string;
  /** Host port on 127.0.0.1 for the API server; 0 = pick a free one. */
  apiServerPort: number;
  datastore: Datastore;
  controlPlane: ControlPlaneSpec;
  /** The Pod Security Standard enforced where a namespace sets none. */
  podSecurity: PodSecurityLevel;
  /** A size limit for the host's image cache (shared by every cluster), set when this one is made. */
  imageCacheLimit?: string;
  /** Take over the space an earlier cluster of this name left in the external datastore. */
  reuseDatastore: boolean;
  loadBalancer: LoadBalancerSpec;
  /** Pause the cluster after this long without a client at its API port; 0: never. */
  sleepAfterMs: number;
  /** vind's pod network with NetworkPolicy, or none (the user installs a CNI; nodes wait NotReady). */
  cni: CniChoice;
  /** A default StorageClass of node-local volumes, or none (the user installs a CSI driver). */
  storage: StorageChoice;
}

export const HOST_PORT_MODES = ['auto', 'always', 'never'] as const;
export type HostPortMode = (typeof HOST_PORT_MODES)[number];
/** Host numbers of the cluster /24 that LoadBalancer addresses may take (Docker never uses them). */
export const LOAD_BALANCER_HOSTS = { first: 128, last: 254 } as const;

export interface LoadBalancerSpec {
  /** Host numbers (last part of the address) inside the cluster's /24, inclusive. */
  range: { first: number; last: number };
  /** Publish LoadBalancer ports on the Docker host's 127.0.0.1: always, never, or where containers are not routable. */
  hostPorts: HostPortMode;
}

export interface CreateFlags {
  name?: string;
  /** Raw flag text, validated here so the message can quote it. */
  workers?: string;
  kubernetesVersion?: string;
  image?: string;
  datastore?: string;
  podSecurity?: string;
  reuseDatastore?: boolean;
  sleepAfter?: string;
}

export class ConfigError extends VindError {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

// ---- single values, shared by flags and the file ----

function sleepAfterValue(text: string): number {
  try {
    return parseSleepAfter(text);
  } catch (error) {
    throw new ConfigError((error as Error).message);
  }
}

function sleepAfterFlag(text: string): number {
  try {
    return parseSleepAfter(text);
  } catch (error) {
    throw new ConfigError(`invalid --sleep-after: ${(error as Error).message}`);
  }
}

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

export function validateClusterName(name: string): string {
  if (name.length > MAX_CLUSTER_NAME_LENGTH || !DNS_LABEL.test(name)) {
    throw new ConfigError(
      `invalid cluster name "${name}": use lowercase letters, digits and '-', starting and ending with a letter or digit, at most ${MAX_CLUSTER_NAME_LENGTH} characters`,
    );
  }
  return name;
}

const KUBERNETES_VERSION = /^v?(1\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-(alpha|beta|rc)\.(0|[1-9][0-9]*))?)$/;

export function normalizeKubernetesVersion(version: string): string {
  const match = KUBERNETES_VERSION.exec(version);
  if (!match) {
    throw new ConfigError(
      `invalid Kubernetes version "${version}": use v1.MINOR.PATCH, e.g. v1.36.3, optionally followed by -alpha.N, -beta.N or -rc.N`,
    );
  }
  if (Number(match[2]) < MIN_KUBERNETES_MINOR) {
    throw new ConfigError(
      `Kubernetes v${match[1]} is older than vind supports: use v1.${MIN_KUBERNETES_MINOR}.0 or later (the node image's containerd and kubelet settings need it)`,
    );
  }
  return `v${match[1]}`;
}

// Loose on purpose: Docker is the judge of references; this only catches blanks and flag-like values.
const IMAGE_REFERENCE = /^[a-zA-Z0-9][^\s]*$/;

function validateImage(image: string): string {
  if (!IMAGE_REFERENCE.test(image)) {
    throw new ConfigError(`invalid image "${image}": use a Docker image reference, e.g. vind/node:v1.36.3`);
  }
  return image;
}

function validatePodSecurity(level: string): PodSecurityLevel {
  if (!(POD_SECURITY_LEVELS as readonly string[]).includes(level)) {
    throw new ConfigError(`invalid Pod Security level "${level}": use ${POD_SECURITY_LEVELS.join(', ')}`);
  }
  return level as PodSecurityLevel;
}

/** `200-210`: host numbers inside the cluster's /24, within LOAD_BALANCER_HOSTS. */
export function parseLoadBalancerRange(text: string): { first: number; last: number } {
  const { first: low, last: high } = LOAD_BALANCER_HOSTS;
  const match = /^(\d{1,3})-(\d{1,3})$/.exec(text.trim());
  const first = Number(match?.[1]);
  const last = Number(match?.[2]);
  if (!match || first < low || last > high || first > last) {
    throw new ConfigError(
      `"${text}" is not a LoadBalancer range: use FIRST-LAST, the last part of the addresses in the cluster's /24, within ${low}-${high} (e.g. 200-210)`,
    );
  }
  return { first, last };
}

function validateCacheLimit(size: string): string {
  let bytes: number;
  try {
    bytes = parseByteSize(size);
  } catch (error) {
    throw new ConfigError((error as Error).message);
  }
  if (bytes < 64 * 1024 * 1024)
    throw new ConfigError(`"${size}" is too small for the image cache: use 64MiB or more`);
  return size;
}

function parseWorkersFlag(text: string): number {
  if (!/^[0-9]+$/.test(text))
    throw new ConfigError(`invalid --workers "${text}": use a whole number 0 or more`);
  const count = Number(text);
  if (count > MAX_WORKERS) {
    throw new ConfigError(`invalid --workers "${text}": at most ${MAX_WORKERS} workers are supported`);
  }
  return count;
}

/** The shared parser with its error turned into a ConfigError, so a bad URL is reported like any other field. */
function readDatastoreUrl(url: string): Datastore {
  try {
    return parseDatastoreUrl(url);
  } catch (error) {
    if (error instanceof DatastoreUrlError) throw new ConfigError(error.message);
    throw error;
  }
}

/** Labels the kubelet may set on its own Node in the kubernetes.io and k8s.io namespaces. */
const KUBELET_LABELS = new Set([
  'kubernetes.io/hostname',
  'kubernetes.io/os',
  'kubernetes.io/arch',
  'beta.kubernetes.io/os',
  'beta.kubernetes.io/arch',
  'beta.kubernetes.io/instance-type',
  'node.kubernetes.io/instance-type',
  'topology.kubernetes.io/zone',
  'topology.kubernetes.io/region',
  'failure-domain.beta.kubernetes.io/zone',
  'failure-domain.beta.kubernetes.io/region',
]);
const KUBELET_LABEL_NAMESPACES = ['kubelet.kubernetes.io', 'node.kubernetes.io'];

function inNamespace(prefix: string, namespace: string): boolean {
  return prefix === namespace || prefix.endsWith(`.${namespace}`);
}

/**
 * A node label the kubelet refuses to start with (`--node-labels` in kubernetes.io or k8s.io outside
 * the allowed set), or that NodeRestriction refuses at registration (node-restriction.kubernetes.io):
 * caught here, in one line, instead of as a worker that never joins.
 */
export function refusedNodeLabel(key: string): string | undefined {
  const slash = key.indexOf('/');
  if (slash < 0) return undefined;
  const prefix = key.slice(0, slash);
  if (inNamespace(prefix, 'node-restriction.kubernetes.io')) {
    return `node label "${key}" cannot be set by a node itself (NodeRestriction): set it after create with \`kubectl label node\``;
  }
  const kubernetesNamespace = inNamespace(prefix, 'kubernetes.io') || inNamespace(prefix, 'k8s.io');
  if (!kubernetesNamespace || KUBELET_LABELS.has(key)) return undefined;
  if (KUBELET_LABEL_NAMESPACES.some((ns) => inNamespace(prefix, ns))) return undefined;
  return (
    `node label "${key}" is in the kubernetes.io/k8s.io namespace, which the kubelet refuses: use a key under ` +
    `node.kubernetes.io/ or kubelet.kubernetes.io/, one of ${[...KUBELET_LABELS].join(', ')}, or a prefix of your own`
  );
}

function validateLabelKey(key: string): string | undefined {
  const slash = key.indexOf('/');
  const prefix = slash >= 0 ? key.slice(0, slash) : undefined;
  const name = slash >= 0 ? key.slice(slash + 1) : key;
  const nameOk = name.length <= 63 && /^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$/.test(name);
  const prefixOk =
    prefix === undefined ||
    (prefix.length <= 253 && prefix.split('.').every((part) => part.length <= 63 && DNS_LABEL.test(part)));
  if (nameOk && prefixOk) return undefined;
  return `invalid label key "${key}": use an optional DNS subdomain prefix and '/', then a name of at most 63 characters (letters, digits, '-', '_', '.') starting and ending with a letter or digit`;
}

function validateLabelValue(value: string): string | undefined {
  if (value === '' || (value.length <= 63 && /^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$/.test(value))) {
    return undefined;
  }
  return `invalid label value "${value}": use at most 63 characters (letters, digits, '-', '_', '.') starting and ending with a letter or digit, or an empty string`;
}

// ---- the file schema ----

/** Strict objects whose unknown-key message lists the allowed fields. */
function strictObject<T extends z.ZodRawShape>(shape: T) {
  return z.strictObject(shape, {
    error: (issue) => {
      if (issue.code === 'unrecognized_keys')
        return `unknown field (allowed: ${Object.keys(shape).join(', ')})`;
      if (issue.code === 'invalid_type') return `expected a mapping, got ${describeInput(issue.input)}`;
      return undefined;
    },
  });
}

/** Runs a validator that throws ConfigError and turns its message into an issue at this field. */
function checked<T>(validate: (value: string) => T) {
  return z.string().transform((value, ctx): T => {
    try {
      return validate(value);
    } catch (error) {
      if (!(error instanceof ConfigError)) throw error;
      ctx.issues.push({ code: 'custom', message: error.message, input: value });
      return z.NEVER;
    }
  });
}

function port(what: string) {
  return z
    .number({
      error: (issue) =>
        issue.input === undefined
          ? `missing: use a ${what} 1-65535`
          : `expected a ${what} 1-65535, got ${describeInput(issue.input)}`,
    })
    .int({ error: `use a whole number 1-65535 as ${what}` })
    .min(1, { error: `use a ${what} 1-65535` })
    .max(65535, { error: `use a ${what} 1-65535` });
}

const portMappingSchema = strictObject({
  containerPort: port('container port'),
  hostPort: port('host port'),
  listenAddress: z
    .string()
    .refine(
      (address) => {
        try {
          ipToInt(address);
          return true;
        } catch {
          return false;
        }
      },
      {
        error: (issue) =>
          `invalid listenAddress "${String(issue.input)}": use an IPv4 address, e.g. 127.0.0.1`,
      },
    )
    .nullish()
    .transform((address) => address ?? '127.0.0.1'),
  protocol: z
    .string()
    .transform((protocol) => protocol.toUpperCase())
    .pipe(z.enum(['TCP', 'UDP'], { error: 'use TCP or UDP' }))
    .nullish()
    .transform((protocol) => protocol ?? 'TCP'),
});

export type PortMapping = z.output<typeof portMappingSchema>;

const portMappingsSchema = z
  .array(portMappingSchema, {
    error: (issue) => `expected a list of port mappings, got ${describeInput(issue.input)}`,
  })
  .nullish()
  .transform((mappings) => mappings ?? []);

const labelsSchema = z
  .record(z.string(), z.unknown(), {
    error: (issue) => `expected a mapping of label keys to values, got ${describeInput(issue.input)}`,
  })
  .nullish()
  .transform((labels, ctx): Record<string, string> => {
    const result: Record<string, string> = {};
    for (const [key, value] of Object.entries(labels ?? {})) {
      const problem =
        validateLabelKey(key) ??
        refusedNodeLabel(key) ??
        (typeof value === 'string'
          ? validateLabelValue(value)
          : `expected a string, got ${describeInput(value)}; quote the value, e.g. "${String(value)}"`);
      if (problem) ctx.issues.push({ code: 'custom', message: problem, input: value, path: [key] });
      else result[key] = value as string;
    }
    return result;
  });

const workerSpecSchema = strictObject({
  labels: labelsSchema,
  extraPortMappings: portMappingsSchema,
});

export type WorkerSpec = z.output<typeof workerSpecSchema>;

const workersSchema = z.union(
  [
    z
      .number()
      .int({ error: `use a whole number 0-${MAX_WORKERS} or a list of worker settings` })
      .min(0, { error: `use a whole number 0-${MAX_WORKERS} or a list of worker settings` })
      .max(MAX_WORKERS, { error: `at most ${MAX_WORKERS} workers are supported` }),
    z
      .array(workerSpecSchema.nullish())
      .max(MAX_WORKERS, { error: `at most ${MAX_WORKERS} workers are supported` })
      // A bare `-` in the list is a plain worker.
      .transform((specs) => specs.map((spec) => spec ?? emptyWorker())),
  ],
  {
    error: (issue) =>
      `use a whole number 0-${MAX_WORKERS} or a list of worker settings, got ${describeInput(issue.input)}`,
  },
);

function subnet(min: number, max: number) {
  return checked((text): string => {
    let cidr: Cidr;
    try {
      cidr = parseCidr(text);
    } catch (error) {
      throw new ConfigError((error as Error).message);
    }
    if (cidr.prefix < min || cidr.prefix > max) {
      throw new ConfigError(
        `prefix length /${cidr.prefix} of ${text} is not allowed: use /${min} to /${max}`,
      );
    }
    return formatCidr(cidr);
  });
}

function literal(value: string) {
  return z.literal(value, {
    error: (issue) =>
      issue.input === undefined
        ? `missing: use ${value}`
        : `${JSON.stringify(issue.input)} is not supported: use ${value}`,
  });
}

const controlPlaneSchema = strictObject({ extraPortMappings: portMappingsSchema });

export type ControlPlaneSpec = z.output<typeof controlPlaneSchema>;

const fileSchema = strictObject({
  apiVersion: literal(CONFIG_API_VERSION),
  kind: literal(CONFIG_KIND),
  name: checked(validateClusterName).nullish(),
  kubernetesVersion: checked(normalizeKubernetesVersion).nullish(),
  image: checked(validateImage).nullish(),
  workers: workersSchema.nullish(),
  networking: strictObject({
    podSubnet: subnet(8, 24).nullish(),
    serviceSubnet: subnet(12, 24).nullish(),
    apiServerPort: z
      .number({ error: (issue) => `expected a port number, got ${describeInput(issue.input)}` })
      .int({ error: 'use a whole number 1-65535, or 0 to pick a free port' })
      .min(0, { error: 'use a whole number 1-65535, or 0 to pick a free port' })
      .max(65535, { error: 'use a whole number 1-65535, or 0 to pick a free port' })
      .nullish(),
    cni: z.enum(CNI_CHOICES, { error: `use ${CNI_CHOICES.join(' or ')}` }).nullish(),
  }).nullish(),
  storage: z.enum(STORAGE_CHOICES, { error: `use ${STORAGE_CHOICES.join(' or ')}` }).nullish(),
  datastore: strictObject({ url: checked(readDatastoreUrl).nullish() }).nullish(),
  controlPlane: controlPlaneSchema.nullish(),
  podSecurity: checked(validatePodSecurity).nullish(),
  imageCache: strictObject({ limit: checked(validateCacheLimit).nullish() }).nullish(),
  sleepAfter: checked(sleepAfterValue).nullish(),
  loadBalancer: strictObject({
    range: checked(parseLoadBalancerRange).nullish(),
    hostPorts: z.enum(HOST_PORT_MODES, { error: `use ${HOST_PORT_MODES.join(', ')}` }).nullish(),
  }).nullish(),
}).transform((file) => ({
  // Flat, with every field the file leaves out (or sets to null) undefined, for resolveClusterConfig.
  name: file.name ?? undefined,
  kubernetesVersion: file.kubernetesVersion ?? undefined,
  image: file.image ?? undefined,
  workers: file.workers ?? undefined,
  podSubnet: file.networking?.podSubnet ?? undefined,
  serviceSubnet: file.networking?.serviceSubnet ?? undefined,
  apiServerPort: file.networking?.apiServerPort ?? undefined,
  cni: file.networking?.cni ?? undefined,
  storage: file.storage ?? undefined,
  datastore: file.datastore?.url ?? undefined,
  controlPlane: file.controlPlane ?? emptyControlPlane(),
  podSecurity: file.podSecurity ?? undefined,
  imageCacheLimit: file.imageCache?.limit ?? undefined,
  sleepAfterMs: file.sleepAfter ?? undefined,
  loadBalancer: {
    range: file.loadBalancer?.range ?? { ...LOAD_BALANCER_HOSTS },
    hostPorts: file.loadBalancer?.hostPorts ?? 'auto',
  },
}));

/** What a config file sets; absent fields fall back to flags or defaults in resolveClusterConfig. */
export type ClusterFile = z.output<typeof fileSchema>;

function describeInput(value: unknown): string {
  if (value === undefined) return 'nothing';
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'object') return 'a mapping';
  if (typeof value === 'string') return `the string ${JSON.stringify(value)}`;
  return `${typeof value} ${String(value)}`;
}

function formatPath(path: readonly PropertyKey[]): string {
  let text = '';
  for (const part of path) {
    if (typeof part === 'number') text += `[${part}]`;
    else text += text ? `.${String(part)}` : String(part);
  }
  return text;
}

function firstIssueMessage(issues: readonly z.core.$ZodIssue[], base: readonly PropertyKey[] = []): string {
  const issue = issues[0];
  if (!issue) return 'invalid';
  if (issue.code === 'invalid_union') {
    // A union (workers: count or list) fails as a whole when every branch fails; the branch whose type
    // matched the input has the precise problem, deeper inside.
    const matched = issue.errors.filter(
      (branch) => !(branch.length === 1 && branch[0]?.code === 'invalid_type' && branch[0].path.length === 0),
    );
    const [branch] = matched;
    if (matched.length === 1 && branch) return firstIssueMessage(branch, [...base, ...issue.path]);
  }
  const path = [...base, ...issue.path];
  if (issue.code === 'unrecognized_keys' && issue.keys[0] !== undefined) path.push(issue.keys[0]);
  const field = formatPath(path);
  return field ? `${field}: ${issue.message}` : issue.message;
}

/** Parses and checks a config file; fields it leaves out are left undefined. Throws ConfigError. */
export function parseConfigFile(text: string, fileLabel: string): ClusterFile {
  const fail = (message: string) => new ConfigError(`config file ${fileLabel}: ${message}`);
  const doc = parseDocument(text);
  const syntaxError = doc.errors[0];
  if (syntaxError) {
    const line = syntaxError.linePos?.[0]?.line;
    // The library's message carries a position and a code excerpt over several lines; keep the first part.
    const reason = (syntaxError.message.split('\n')[0] ?? '').replace(/ at line \d+, column \d+:?$/, '');
    throw fail(`invalid YAML${line === undefined ? '' : ` at line ${line}`}: ${reason}`);
  }
  let data: unknown;
  try {
    data = doc.toJS();
  } catch (error) {
    // Unresolved aliases and the like surface only when converting.
    throw fail(`invalid YAML: ${(error as Error).message}`);
  }
  if (data === null || typeof data !== 'object' || Array.isArray(data)) {
    throw fail(
      `expected a mapping starting with apiVersion: ${CONFIG_API_VERSION} and kind: ${CONFIG_KIND}, got ${describeInput(data)}`,
    );
  }
  const result = fileSchema.safeParse(data, {
    error: (issue) =>
      issue.code === 'invalid_type'
        ? `expected ${issue.expected}, got ${describeInput(issue.input)}`
        : undefined,
  });
  if (!result.success) throw fail(firstIssueMessage(result.error.issues));
  return result.data;
}

// ---- merging ----

function emptyWorker(): WorkerSpec {
  return { labels: {}, extraPortMappings: [] };
}

function emptyControlPlane(): ControlPlaneSpec {
  return { extraPortMappings: [] };
}

function resolveWorkers(flag: string | undefined, fromFile: ClusterFile['workers']): WorkerSpec[] {
  const specs = Array.isArray(fromFile) ? fromFile : [];
  const count =
    flag !== undefined
      ? parseWorkersFlag(flag)
      : typeof fromFile === 'number'
        ? fromFile
        : Array.isArray(fromFile)
          ? fromFile.length
          : DEFAULT_WORKER_COUNT;
  // A count from the flag keeps the file's first specs and pads with plain workers.
  return Array.from({ length: count }, (_, i) => specs[i] ?? emptyWorker());
}

/** Host ports must not collide: same port and protocol on the same address, or on 0.0.0.0 and any other. */
function checkHostPorts(config: ClusterConfig, prefix: string): void {
  const used: { address: string; port: number; protocol: string; owner: string }[] = [];
  if (config.apiServerPort !== 0) {
    used.push({
      address: '127.0.0.1',
      port: config.apiServerPort,
      protocol: 'TCP',
      owner: 'networking.apiServerPort',
    });
  }
  const groups: [string, PortMapping[]][] = [
    ['controlPlane.extraPortMappings', config.controlPlane.extraPortMappings],
    ...config.workers.map((worker, i): [string, PortMapping[]] => [
      `workers[${i}].extraPortMappings`,
      worker.extraPortMappings,
    ]),
  ];
  for (const [path, mappings] of groups) {
    mappings.forEach((mapping, i) => {
      const owner = `${path}[${i}]`;
      const clash = used.find(
        (other) =>
          other.port === mapping.hostPort &&
          other.protocol === mapping.protocol &&
          (other.address === mapping.listenAddress ||
            other.address === '0.0.0.0' ||
            mapping.listenAddress === '0.0.0.0'),
      );
      if (clash) {
        throw new ConfigError(
          `${prefix}${owner}.hostPort: ${mapping.listenAddress}:${mapping.hostPort}/${mapping.protocol} is already used by ${clash.owner}; use a different hostPort`,
        );
      }
      used.push({
        address: mapping.listenAddress,
        port: mapping.hostPort,
        protocol: mapping.protocol,
        owner,
      });
    });
  }
}

export function resolveClusterConfig(options: {
  flags: CreateFlags;
  fileText?: string;
  fileLabel?: string;
  defaultKubernetesVersion: string;
}): ClusterConfig {
  const { flags } = options;
  const file: Partial<ClusterFile> =
    options.fileText === undefined ? {} : parseConfigFile(options.fileText, options.fileLabel ?? 'config');
  // Cross-field problems point into the file only when it is there to point into.
  const filePrefix = options.fileText === undefined ? '' : `config file ${options.fileLabel ?? 'config'}: `;

  const kubernetesVersion =
    flags.kubernetesVersion !== undefined
      ? normalizeKubernetesVersion(flags.kubernetesVersion)
      : (file.kubernetesVersion ?? normalizeKubernetesVersion(options.defaultKubernetesVersion));
  const config: ClusterConfig = {
    name: flags.name !== undefined ? validateClusterName(flags.name) : (file.name ?? DEFAULT_CLUSTER_NAME),
    kubernetesVersion,
    image:
      flags.image !== undefined
        ? validateImage(flags.image)
        : (file.image ?? `vind/node:${kubernetesVersion}`),
    workers: resolveWorkers(flags.workers, file.workers),
    podSubnet: file.podSubnet ?? DEFAULT_POD_SUBNET,
    serviceSubnet: file.serviceSubnet ?? DEFAULT_SERVICE_SUBNET,
    apiServerPort: file.apiServerPort ?? 0,
    datastore:
      flags.datastore !== undefined
        ? readDatastoreUrl(flags.datastore)
        : (file.datastore ?? { kind: 'sqlite' }),
    controlPlane: file.controlPlane ?? emptyControlPlane(),
    podSecurity:
      flags.podSecurity !== undefined
        ? validatePodSecurity(flags.podSecurity)
        : (file.podSecurity ?? 'privileged'),
    imageCacheLimit: file.imageCacheLimit,
    reuseDatastore: flags.reuseDatastore ?? false,
    loadBalancer: file.loadBalancer ?? { range: { ...LOAD_BALANCER_HOSTS }, hostPorts: 'auto' },
    sleepAfterMs:
      flags.sleepAfter !== undefined ? sleepAfterFlag(flags.sleepAfter) : (file.sleepAfterMs ?? 0),
    cni: file.cni ?? 'default',
    storage: file.storage ?? 'default',
  };

  if (overlaps(parseCidr(config.podSubnet), parseCidr(config.serviceSubnet))) {
    const named = (value: string, given: string | undefined) =>
      given === undefined ? `${value} (default)` : value;
    throw new ConfigError(
      `${filePrefix}networking.serviceSubnet ${named(config.serviceSubnet, file.serviceSubnet)} overlaps networking.podSubnet ${named(config.podSubnet, file.podSubnet)}: use subnets that do not overlap`,
    );
  }
  checkHostPorts(config, filePrefix);
  return config;
}
