import { describe, expect, it } from 'vitest';
import {
  ConfigError,
  parseConfigFile,
  parseLoadBalancerRange,
  resolveClusterConfig,
  validateClusterName,
  type CreateFlags,
} from '../../cli/cluster-config.js';
import { DEFAULT_POD_SUBNET, DEFAULT_SERVICE_SUBNET } from '../../shared/contract.js';

const HEADER = 'apiVersion: vind.dev/v1alpha1\nkind: Cluster\n';
const DATASTORE_FORMS =
  'use postgres://user:password@host:5432/database, mysql://user:password@tcp(host:3306)/database, etcd://host:2379, or sqlite';

function resolve(flags: CreateFlags, body?: string) {
  return resolveClusterConfig({
    flags,
    fileText: body === undefined ? undefined : HEADER + body,
    fileLabel: 'dev.yaml',
    defaultKubernetesVersion: 'v1.36.3',
  });
}

function fileError(body: string, header = HEADER): string {
  try {
    parseConfigFile(header + body, 'dev.yaml');
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return (error as Error).message;
  }
  throw new Error('expected a ConfigError');
}

describe('validateClusterName', () => {
  it('accepts DNS labels up to 32 characters', () => {
    expect(validateClusterName('dev')).toBe('dev');
    expect(validateClusterName('a-1')).toBe('a-1');
    expect(validateClusterName('x'.repeat(32))).toBe('x'.repeat(32));
  });

  it('rejects everything else with one line', () => {
    expect(() => validateClusterName('My_Cluster')).toThrow(
      new ConfigError(
        `invalid cluster name "My_Cluster": use lowercase letters, digits and '-', starting and ending with a letter or digit, at most 32 characters`,
      ),
    );
    for (const bad of ['', '-dev', 'dev-', 'Dev', 'dev.x', 'x'.repeat(33)]) {
      expect(() => validateClusterName(bad)).toThrow(`invalid cluster name "${bad}"`);
    }
  });
});

describe('parseConfigFile', () => {
  it('reads a complete file', () => {
    const file = parseConfigFile(
      `${HEADER}name: dev
kubernetesVersion: 1.35.0-rc.1
workers:
  - labels: { tier: web, example.com/zone: "" }
    extraPortMappings:
      - { containerPort: 30080, hostPort: 8080 }
  -
networking:
  podSubnet: 10.200.0.0/16
  serviceSubnet: 10.100.0.0/20
  apiServerPort: 16443
datastore:
  url: postgres://u:p@db:5432/k8s
controlPlane:
  extraPortMappings:
    - { containerPort: 53, hostPort: 5353, listenAddress: 0.0.0.0, protocol: udp }
loadBalancer:
  range: 200-201
  hostPorts: always
`,
      'dev.yaml',
    );
    expect(file).toEqual({
      name: 'dev',
      kubernetesVersion: 'v1.35.0-rc.1',
      image: undefined,
      workers: [
        {
          labels: { tier: 'web', 'example.com/zone': '' },
          extraPortMappings: [
            { containerPort: 30080, hostPort: 8080, listenAddress: '127.0.0.1', protocol: 'TCP' },
          ],
        },
        { labels: {}, extraPortMappings: [] },
      ],
      podSubnet: '10.200.0.0/16',
      serviceSubnet: '10.100.0.0/20',
      apiServerPort: 16443,
      datastore: { kind: 'postgres', url: 'postgres://u:p@db:5432/k8s', host: 'db', port: 5432 },
      controlPlane: {
        extraPortMappings: [{ containerPort: 53, hostPort: 5353, listenAddress: '0.0.0.0', protocol: 'UDP' }],
      },
      loadBalancer: { range: { first: 200, last: 201 }, hostPorts: 'always' },
    });
  });

  it('leaves out what the file leaves out or sets to null', () => {
    const empty = {
      name: undefined,
      kubernetesVersion: undefined,
      image: undefined,
      workers: undefined,
      podSubnet: undefined,
      serviceSubnet: undefined,
      apiServerPort: undefined,
      cni: undefined,
      storage: undefined,
      datastore: undefined,
      controlPlane: { extraPortMappings: [] },
      podSecurity: undefined,
      imageCacheLimit: undefined,
      sleepAfterMs: undefined,
      loadBalancer: { range: { first: 128, last: 254 }, hostPorts: 'auto' },
    };
    expect(parseConfigFile(HEADER, 'dev.yaml')).toStrictEqual(empty);
    expect(
      parseConfigFile(
        `${HEADER}name: null\nworkers: null\nnetworking: null\ndatastore: { url: null }\ncontrolPlane: null\n`,
        'dev.yaml',
      ),
    ).toStrictEqual(empty);
    expect(parseConfigFile(`${HEADER}controlPlane: {}\n`, 'dev.yaml').controlPlane).toStrictEqual({
      extraPortMappings: [],
    });
  });

  it('names unknown fields and what is allowed', () => {
    expect(fileError('networking:\n  podSubnetz: 10.0.0.0/16\n')).toBe(
      'config file dev.yaml: networking.podSubnetz: unknown field (allowed: podSubnet, serviceSubnet, apiServerPort, cni)',
    );
    expect(fileError('workers:\n  - labels: {}\n    ports: []\n')).toBe(
      'config file dev.yaml: workers[0].ports: unknown field (allowed: labels, extraPortMappings)',
    );
    expect(
      fileError('controlPlane:\n  extraPortMappings:\n    - { containerPort: 1, hostPort: 2, host: x }\n'),
    ).toBe(
      'config file dev.yaml: controlPlane.extraPortMappings[0].host: unknown field (allowed: containerPort, hostPort, listenAddress, protocol)',
    );
  });

  it('insists on apiVersion and kind', () => {
    expect(fileError('', 'kind: Cluster\n')).toBe(
      'config file dev.yaml: apiVersion: missing: use vind.dev/v1alpha1',
    );
    expect(fileError('', 'apiVersion: v1\nkind: Cluster\n')).toBe(
      'config file dev.yaml: apiVersion: "v1" is not supported: use vind.dev/v1alpha1',
    );
    expect(fileError('', 'apiVersion: vind.dev/v1alpha1\nkind: Pod\n')).toBe(
      'config file dev.yaml: kind: "Pod" is not supported: use Cluster',
    );
    expect(fileError('', '- a\n')).toBe(
      'config file dev.yaml: expected a mapping starting with apiVersion: vind.dev/v1alpha1 and kind: Cluster, got a list',
    );
  });

  it('reports YAML syntax errors in one line with the line number', () => {
    expect(fileError('networking:\n  podSubnet: [10.0.0.0/16\nworkers: 1\n')).toBe(
      'config file dev.yaml: invalid YAML at line 5: Flow sequence in block collection must be sufficiently indented and end with a ]',
    );
    expect(fileError('workers: 1\nworkers: 2\n')).toBe(
      'config file dev.yaml: invalid YAML at line 4: Map keys must be unique',
    );
  });

  it('checks worker settings deep inside the list', () => {
    expect(fileError('workers:\n  - labels: { "bad key!": x }\n')).toBe(
      `config file dev.yaml: workers[0].labels.bad key!: invalid label key "bad key!": use an optional DNS subdomain prefix and '/', then a name of at most 63 characters (letters, digits, '-', '_', '.') starting and ending with a letter or digit`,
    );
    expect(fileError('workers:\n  - labels: { enabled: true }\n')).toBe(
      'config file dev.yaml: workers[0].labels.enabled: expected a string, got boolean true; quote the value, e.g. "true"',
    );
    expect(fileError(`workers:\n  - labels: { tier: ${'v'.repeat(64)} }\n`)).toMatch(
      /^config file dev\.yaml: workers\[0\]\.labels\.tier: invalid label value "v{64}": use at most 63/,
    );
    expect(fileError('workers:\n  - labels: { -x.io/tier: web }\n')).toMatch(
      /invalid label key "-x\.io\/tier"/,
    );
    expect(
      fileError('workers:\n  -\n  - extraPortMappings:\n      - { containerPort: 80, hostPort: 0 }\n'),
    ).toBe('config file dev.yaml: workers[1].extraPortMappings[0].hostPort: use a host port 1-65535');
    expect(fileError('workers:\n  - extraPortMappings:\n      - { hostPort: 8080 }\n')).toBe(
      'config file dev.yaml: workers[0].extraPortMappings[0].containerPort: missing: use a container port 1-65535',
    );
    expect(
      fileError(
        'workers:\n  - extraPortMappings:\n      - { containerPort: 80, hostPort: 80, listenAddress: localhost }\n',
      ),
    ).toBe(
      'config file dev.yaml: workers[0].extraPortMappings[0].listenAddress: invalid listenAddress "localhost": use an IPv4 address, e.g. 127.0.0.1',
    );
    expect(
      fileError(
        'workers:\n  - extraPortMappings:\n      - { containerPort: 80, hostPort: 80, protocol: SCTP }\n',
      ),
    ).toBe('config file dev.yaml: workers[0].extraPortMappings[0].protocol: use TCP or UDP');
  });

  it('takes workers as a count from 0 to 20', () => {
    expect(parseConfigFile(`${HEADER}workers: 0\n`, 'f').workers).toBe(0);
    expect(fileError('workers: two\n')).toBe(
      'config file dev.yaml: workers: use a whole number 0-20 or a list of worker settings, got the string "two"',
    );
    expect(fileError('workers: -1\n')).toBe(
      'config file dev.yaml: workers: use a whole number 0-20 or a list of worker settings',
    );
    expect(fileError('workers: 21\n')).toBe(
      'config file dev.yaml: workers: at most 20 workers are supported',
    );
    expect(fileError(`workers:\n${'  - {}\n'.repeat(21)}`)).toBe(
      'config file dev.yaml: workers: at most 20 workers are supported',
    );
  });

  it('checks subnets, the API server port and single values', () => {
    expect(fileError('networking:\n  podSubnet: 10.244.1.0/16\n')).toBe(
      'config file dev.yaml: networking.podSubnet: invalid CIDR "10.244.1.0/16": 10.244.1.0 is not the network address of a /16; use 10.244.0.0/16',
    );
    expect(fileError('networking:\n  serviceSubnet: 10.0.0.0/8\n')).toBe(
      'config file dev.yaml: networking.serviceSubnet: prefix length /8 of 10.0.0.0/8 is not allowed: use /12 to /24',
    );
    expect(fileError('networking:\n  podSubnet: 10.244.0.0/25\n')).toMatch(/use \/8 to \/24$/);
    expect(fileError('networking:\n  apiServerPort: 70000\n')).toBe(
      'config file dev.yaml: networking.apiServerPort: use a whole number 1-65535, or 0 to pick a free port',
    );
    expect(fileError('name: My_Cluster\n')).toMatch(
      /^config file dev\.yaml: name: invalid cluster name "My_Cluster": /,
    );
    expect(fileError('kubernetesVersion: "1.36"\n')).toBe(
      'config file dev.yaml: kubernetesVersion: invalid Kubernetes version "1.36": use v1.MINOR.PATCH, e.g. v1.36.3, optionally followed by -alpha.N, -beta.N or -rc.N',
    );
    expect(fileError('datastore:\n  url: ftp://u:hunter2@h/db\n')).toBe(
      `config file dev.yaml: datastore.url: invalid datastore URL "ftp://u:***@h/db": ${DATASTORE_FORMS}`,
    );
    expect(fileError('networking: 5\n')).toBe(
      'config file dev.yaml: networking: expected a mapping, got number 5',
    );
  });
});

describe('resolveClusterConfig', () => {
  it('fills in defaults without a file', () => {
    expect(resolve({})).toEqual({
      name: 'vind',
      kubernetesVersion: 'v1.36.3',
      image: 'vind/node:v1.36.3',
      workers: [{ labels: {}, extraPortMappings: [] }],
      podSubnet: DEFAULT_POD_SUBNET,
      serviceSubnet: DEFAULT_SERVICE_SUBNET,
      apiServerPort: 0,
      datastore: { kind: 'sqlite' },
      controlPlane: { extraPortMappings: [] },
      podSecurity: 'privileged',
      reuseDatastore: false,
      loadBalancer: { range: { first: 128, last: 254 }, hostPorts: 'auto' },
      sleepAfterMs: 0,
      cni: 'default',
      storage: 'default',
    });
  });

  it('lets flags win over the file', () => {
    const config = resolve(
      {
        name: 'cli',
        workers: '3',
        kubernetesVersion: '1.34.2',
        datastore: 'mysql://u:p@tcp(db:3306)/k',
      },
      'name: file\nworkers: 1\nkubernetesVersion: v1.36.3\ndatastore:\n  url: sqlite\n',
    );
    expect(config.name).toBe('cli');
    expect(config.workers).toHaveLength(3);
    expect(config.kubernetesVersion).toBe('v1.34.2');
    expect(config.image).toBe('vind/node:v1.34.2');
    expect(config.datastore).toEqual({
      kind: 'mysql',
      url: 'mysql://u:p@tcp(db:3306)/k',
      host: 'db',
      port: 3306,
    });
  });

  it('uses the file where no flag is given', () => {
    const config = resolve(
      {},
      'name: file\nimage: my/node:dev\nworkers: 0\nnetworking:\n  apiServerPort: 6443\n',
    );
    expect(config).toMatchObject({ name: 'file', image: 'my/node:dev', workers: [], apiServerPort: 6443 });
  });

  it('keeps the first worker specs for a --workers count and pads with plain workers', () => {
    const body = 'workers:\n  - labels: { n: "1" }\n  - labels: { n: "2" }\n  - labels: { n: "3" }\n';
    expect(resolve({ workers: '2' }, body).workers.map((w) => w.labels)).toEqual([{ n: '1' }, { n: '2' }]);
    expect(resolve({ workers: '4' }, body).workers.map((w) => w.labels)).toEqual([
      { n: '1' },
      { n: '2' },
      { n: '3' },
      {},
    ]);
    expect(resolve({}, body).workers).toHaveLength(3);
  });

  it('rejects bad flag values with one line each', () => {
    for (const bad of ['-1', '1.5', 'two', '', ' 2']) {
      expect(() => resolve({ workers: bad })).toThrow(
        new ConfigError(`invalid --workers "${bad}": use a whole number 0 or more`),
      );
    }
    expect(() => resolve({ workers: '21' })).toThrow(
      new ConfigError('invalid --workers "21": at most 20 workers are supported'),
    );
    expect(() => resolve({ name: 'My_Cluster' })).toThrow(/^invalid cluster name "My_Cluster"/);
    expect(() => resolve({ kubernetesVersion: 'latest' })).toThrow(/^invalid Kubernetes version "latest"/);
    expect(() => resolve({ image: '' })).toThrow('invalid image "": use a Docker image reference');
    expect(() => resolve({ datastore: 'mongodb://h' })).toThrow(/^invalid datastore URL "mongodb:\/\/h"/);
    expect(() => resolve({ datastore: 'postgres://u:hunter2@db:0/x' })).toThrow(
      new ConfigError(
        `invalid datastore URL "postgres://u:***@db:0/x": port 0 is not 1-65535; ${DATASTORE_FORMS}`,
      ),
    );
    expect(() => resolve({ datastore: 'postgres://u:hunter2@db:0/x' })).toThrow(ConfigError);
  });

  it('rejects pod and service subnets that overlap, also with a default', () => {
    expect(() =>
      resolve({}, 'networking:\n  podSubnet: 10.0.0.0/8\n  serviceSubnet: 10.96.0.0/12\n'),
    ).toThrow(
      new ConfigError(
        'config file dev.yaml: networking.serviceSubnet 10.96.0.0/12 overlaps networking.podSubnet 10.0.0.0/8: use subnets that do not overlap',
      ),
    );
    expect(() => resolve({}, 'networking:\n  podSubnet: 10.96.0.0/12\n')).toThrow(
      'networking.serviceSubnet 10.96.0.0/16 (default) overlaps networking.podSubnet 10.96.0.0/12',
    );
  });

  it('rejects host ports used twice on the same address and protocol', () => {
    const body = (worker: string) =>
      `controlPlane:\n  extraPortMappings:\n    - { containerPort: 80, hostPort: 8080 }\nworkers:\n  - extraPortMappings:\n      - ${worker}\n`;
    expect(() => resolve({}, body('{ containerPort: 81, hostPort: 8080 }'))).toThrow(
      new ConfigError(
        'config file dev.yaml: workers[0].extraPortMappings[0].hostPort: 127.0.0.1:8080/TCP is already used by controlPlane.extraPortMappings[0]; use a different hostPort',
      ),
    );
    expect(() => resolve({}, body('{ containerPort: 81, hostPort: 8080, listenAddress: 0.0.0.0 }'))).toThrow(
      'is already used by controlPlane.extraPortMappings[0]',
    );
    expect(resolve({}, body('{ containerPort: 81, hostPort: 8080, protocol: UDP }')).workers).toHaveLength(1);
    expect(
      resolve({}, body('{ containerPort: 81, hostPort: 8080, listenAddress: 127.0.0.2 }')).workers,
    ).toHaveLength(1);
    // Cut off by the flag, the second worker's clash no longer exists.
    expect(resolve({ workers: '0' }, body('{ containerPort: 81, hostPort: 8080 }')).workers).toEqual([]);
    expect(() =>
      resolve({}, 'networking:\n  apiServerPort: 8080\n' + body('{ containerPort: 1, hostPort: 9 }')),
    ).toThrow(
      'controlPlane.extraPortMappings[0].hostPort: 127.0.0.1:8080/TCP is already used by networking.apiServerPort',
    );
  });
});

describe('what the nodes would refuse, caught before anything is made', () => {
  it('refuses a Kubernetes version older than the node image supports', () => {
    expect(() => resolve({ kubernetesVersion: 'v1.30.9' })).toThrow(
      new ConfigError(
        "Kubernetes v1.30.9 is older than vind supports: use v1.31.0 or later (the node image's containerd and kubelet settings need it)",
      ),
    );
    expect(resolve({ kubernetesVersion: 'v1.31.0' }).kubernetesVersion).toBe('v1.31.0');
  });

  it('refuses node labels in kubernetes.io and k8s.io that the kubelet will not set, naming the allowed ones', () => {
    const error = fileError('workers:\n  - labels: { kubernetes.io/role: db }\n');
    expect(error).toMatch(
      /^config file dev\.yaml: workers\[0\]\.labels\.kubernetes\.io\/role: node label "kubernetes\.io\/role" is in the kubernetes\.io\/k8s\.io namespace, which the kubelet refuses: use a key under node\.kubernetes\.io\/ or kubelet\.kubernetes\.io\//,
    );
    expect(fileError('workers:\n  - labels: { example.k8s.io/tier: db }\n')).toMatch(
      /which the kubelet refuses/,
    );
    expect(fileError('workers:\n  - labels: { node-restriction.kubernetes.io/pool: a }\n')).toMatch(
      /cannot be set by a node itself \(NodeRestriction\): set it after create with `kubectl label node`/,
    );
  });

  it('keeps the node labels the kubelet allows, and labels of other prefixes', () => {
    const body =
      'workers:\n  - labels:\n      topology.kubernetes.io/zone: a\n      node.kubernetes.io/pool: web\n' +
      '      x.kubelet.kubernetes.io/y: z\n      example.com/tier: db\n      plain: yes-string\n';
    expect(resolve({}, body).workers[0]!.labels).toEqual({
      'topology.kubernetes.io/zone': 'a',
      'node.kubernetes.io/pool': 'web',
      'x.kubelet.kubernetes.io/y': 'z',
      'example.com/tier': 'db',
      plain: 'yes-string',
    });
  });
});

describe('podSecurity', () => {
  it('defaults to privileged, as upstream, and takes the file or the flag, the flag winning', () => {
    expect(resolve({}).podSecurity).toBe('privileged');
    expect(resolve({}, 'podSecurity: baseline\n').podSecurity).toBe('baseline');
    expect(resolve({ podSecurity: 'restricted' }, 'podSecurity: baseline\n').podSecurity).toBe('restricted');
  });

  it('names the allowed levels', () => {
    expect(() => resolve({ podSecurity: 'strict' })).toThrow(
      new ConfigError('invalid Pod Security level "strict": use privileged, baseline, restricted'),
    );
    expect(fileError('podSecurity: open\n')).toBe(
      'config file dev.yaml: podSecurity: invalid Pod Security level "open": use privileged, baseline, restricted',
    );
  });
});

describe('networking.cni and storage', () => {
  it("default to vind's own, and take none from the file", () => {
    expect(resolve({})).toMatchObject({ cni: 'default', storage: 'default' });
    expect(resolve({}, 'networking:\n  cni: none\nstorage: none\n')).toMatchObject({
      cni: 'none',
      storage: 'none',
    });
  });

  it('name the allowed words', () => {
    expect(fileError('networking:\n  cni: flannel\n')).toBe(
      'config file dev.yaml: networking.cni: use default or none',
    );
    expect(fileError('storage: local\n')).toBe('config file dev.yaml: storage: use default or none');
  });
});

describe('loadBalancer settings', () => {
  it('takes a range of host numbers inside 128-254', () => {
    expect(parseLoadBalancerRange('200-210')).toEqual({ first: 200, last: 210 });
    expect(parseLoadBalancerRange('128-128')).toEqual({ first: 128, last: 128 });
  });

  it('refuses ranges outside the kept half, reversed or malformed, in one line', () => {
    for (const bad of ['100-200', '200-255', '210-200', '10.0.0.1-10.0.0.2', 'x']) {
      expect(() => parseLoadBalancerRange(bad)).toThrow(
        `"${bad}" is not a LoadBalancer range: use FIRST-LAST, the last part of the addresses in the cluster's /24, within 128-254 (e.g. 200-210)`,
      );
    }
    expect(fileError('loadBalancer:\n  range: 1-2\n')).toMatch(
      /^config file dev.yaml: loadBalancer.range: "1-2" is not/,
    );
    expect(fileError('loadBalancer:\n  hostPorts: sometimes\n')).toBe(
      'config file dev.yaml: loadBalancer.hostPorts: use auto, always, never',
    );
  });
});
