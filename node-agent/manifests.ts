// The objects the control plane creates once the API server answers: the node bootstrap RBAC
// (the `kubeadm join` contract), the bootstrap token, cluster-info, and CoreDNS. Pure functions,
// applied with `kubectl apply --server-side`.

import { LOAD_BALANCER } from '../shared/contract.js';

export const BOOTSTRAP_GROUP = 'system:bootstrappers:vind:default-node-token';
export const COREDNS_NAME = 'coredns';

export interface BootstrapToken {
  id: string;
  secret: string;
  /** RFC 3339 */
  expiration: string;
}

type Manifest = Record<string, unknown>;

const TOKEN_ID = /^[a-z0-9]{6}$/;
const TOKEN_SECRET = /^[a-z0-9]{16}$/;

export function parseBootstrapToken(token: string): { id: string; secret: string } {
  const [id, secret] = token.split('.');
  if (!id || !secret || !TOKEN_ID.test(id) || !TOKEN_SECRET.test(secret)) {
    throw new Error('a bootstrap token has the form [a-z0-9]{6}.[a-z0-9]{16}');
  }
  return { id, secret };
}

function clusterRoleBinding(name: string, role: string, subject: { kind: string; name: string }): Manifest {
  // Users and groups belong to the RBAC API group; service accounts to the core group, with a namespace.
  const subjectEntry =
    subject.kind === 'ServiceAccount'
      ? { ...subject, namespace: 'kube-system' }
      : { apiGroup: 'rbac.authorization.k8s.io', ...subject };
  return {
    apiVersion: 'rbac.authorization.k8s.io/v1',
    kind: 'ClusterRoleBinding',
    metadata: { name },
    roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: role },
    subjects: [subjectEntry],
  };
}

export function bootstrapRbac(): Manifest[] {
  const group = { kind: 'Group', name: BOOTSTRAP_GROUP };
  return [
    // Bootstrap tokens may create CSRs, and those CSRs for node client certificates are approved.
    clusterRoleBinding('vind:node-bootstrapper', 'system:node-bootstrapper', group),
    clusterRoleBinding(
      'vind:node-autoapprove-bootstrap',
      'system:certificates.k8s.io:certificatesigningrequests:nodeclient',
      group,
    ),
    clusterRoleBinding(
      'vind:node-autoapprove-certificate-rotation',
      'system:certificates.k8s.io:certificatesigningrequests:selfnodeclient',
      { kind: 'Group', name: 'system:nodes' },
    ),
    // kube-proxy runs on each worker with the node's own credentials.
    clusterRoleBinding('vind:node-proxier', 'system:node-proxier', { kind: 'Group', name: 'system:nodes' }),
    // Workers read which LoadBalancer addresses they announce, and nothing else of kube-system's maps.
    {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'Role',
      metadata: {
        name: 'vind:load-balancer-announcements',
        namespace: LOAD_BALANCER.announcements.namespace,
      },
      rules: [
        {
          apiGroups: [''],
          resources: ['configmaps'],
          resourceNames: [LOAD_BALANCER.announcements.name],
          verbs: ['get', 'list', 'watch'],
        },
      ],
    },
    {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'RoleBinding',
      metadata: {
        name: 'vind:load-balancer-announcements',
        namespace: LOAD_BALANCER.announcements.namespace,
      },
      roleRef: {
        apiGroup: 'rbac.authorization.k8s.io',
        kind: 'Role',
        name: 'vind:load-balancer-announcements',
      },
      subjects: [{ apiGroup: 'rbac.authorization.k8s.io', kind: 'Group', name: 'system:nodes' }],
    },
    {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'Role',
      metadata: { name: 'vind:bootstrap-signer-clusterinfo', namespace: 'kube-public' },
      rules: [
        { apiGroups: [''], resources: ['configmaps'], resourceNames: ['cluster-info'], verbs: ['get'] },
      ],
    },
    {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'RoleBinding',
      metadata: { name: 'vind:bootstrap-signer-clusterinfo', namespace: 'kube-public' },
      roleRef: {
        apiGroup: 'rbac.authorization.k8s.io',
        kind: 'Role',
        name: 'vind:bootstrap-signer-clusterinfo',
      },
      subjects: [{ apiGroup: 'rbac.authorization.k8s.io', kind: 'User', name: 'system:anonymous' }],
    },
  ];
}

export function bootstrapTokenSecret(token: BootstrapToken): Manifest {
  return {
    apiVersion: 'v1',
    kind: 'Secret',
    type: 'bootstrap.kubernetes.io/token',
    metadata: { name: `bootstrap-token-${token.id}`, namespace: 'kube-system' },
    stringData: {
      description: 'vind worker join token',
      'token-id': token.id,
      'token-secret': token.secret,
      expiration: token.expiration,
      'usage-bootstrap-authentication': 'true',
      'usage-bootstrap-signing': 'true',
      'auth-extra-groups': BOOTSTRAP_GROUP,
    },
  };
}

/** The kubeconfig that discovery hands out: server and CA only, with a detached JWS per token. */
export function clusterInfo(
  server: string,
  caCertPem: string,
  signatures: Record<string, string> = {},
): Manifest {
  const kubeconfig = [
    'apiVersion: v1',
    'kind: Config',
    'clusters:',
    '- name: ""',
    '  cluster:',
    `    certificate-authority-data: ${Buffer.from(caCertPem).toString('base64')}`,
    `    server: ${server}`,
    'contexts: []',
    'users: []',
    '',
  ].join('\n');
  return {
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: { name: 'cluster-info', namespace: 'kube-public' },
    data: { kubeconfig, ...signatures },
  };
}

// No `loop` plugin: the upstream is Docker's resolver, never CoreDNS itself, and its start-up probe
// would send a random name out to the host's resolver at every start.
export const COREFILE = `.:53 {
    errors
    health {
        lameduck 5s
    }
    ready
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }
    prometheus :9153
    forward . /etc/resolv.conf {
        max_concurrent 1000
    }
    cache 30
    reload
    loadbalance
}
`;

export function coreDns(image: string, clusterDnsIp: string, replicas = 1): Manifest[] {
  const labels = { 'k8s-app': 'kube-dns' };
  return [
    { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: COREDNS_NAME, namespace: 'kube-system' } },
    {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'ClusterRole',
      metadata: { name: 'system:coredns' },
      rules: [
        {
          apiGroups: [''],
          resources: ['endpoints', 'services', 'pods', 'namespaces'],
          verbs: ['list', 'watch'],
        },
        { apiGroups: ['discovery.k8s.io'], resources: ['endpointslices'], verbs: ['list', 'watch'] },
      ],
    },
    clusterRoleBinding('system:coredns', 'system:coredns', { kind: 'ServiceAccount', name: COREDNS_NAME }),
    {
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: { name: COREDNS_NAME, namespace: 'kube-system' },
      data: { Corefile: COREFILE },
    },
    {
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: { name: COREDNS_NAME, namespace: 'kube-system', labels },
      spec: {
        replicas,
        selector: { matchLabels: labels },
        strategy: { type: 'RollingUpdate', rollingUpdate: { maxUnavailable: 1 } },
        template: {
          metadata: { labels },
          spec: {
            serviceAccountName: COREDNS_NAME,
            priorityClassName: 'system-cluster-critical',
            dnsPolicy: 'Default',
            containers: [
              {
                name: 'coredns',
                image,
                imagePullPolicy: 'IfNotPresent',
                args: ['-conf', '/etc/coredns/Corefile'],
                resources: { requests: { cpu: '50m', memory: '32Mi' }, limits: { memory: '170Mi' } },
                volumeMounts: [{ name: 'config', mountPath: '/etc/coredns', readOnly: true }],
                ports: [
                  { name: 'dns', containerPort: 53, protocol: 'UDP' },
                  { name: 'dns-tcp', containerPort: 53, protocol: 'TCP' },
                  { name: 'metrics', containerPort: 9153, protocol: 'TCP' },
                ],
                securityContext: {
                  allowPrivilegeEscalation: false,
                  capabilities: { add: ['NET_BIND_SERVICE'], drop: ['ALL'] },
                  readOnlyRootFilesystem: true,
                },
                livenessProbe: {
                  httpGet: { path: '/health', port: 8080 },
                  initialDelaySeconds: 60,
                  timeoutSeconds: 5,
                  failureThreshold: 5,
                },
                readinessProbe: { httpGet: { path: '/ready', port: 8181 }, periodSeconds: 1 },
              },
            ],
            volumes: [{ name: 'config', configMap: { name: COREDNS_NAME } }],
          },
        },
      },
    },
    {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: {
        name: 'kube-dns',
        namespace: 'kube-system',
        labels: { ...labels, 'kubernetes.io/name': 'CoreDNS' },
      },
      spec: {
        selector: labels,
        clusterIP: clusterDnsIp,
        ports: [
          { name: 'dns', port: 53, protocol: 'UDP' },
          { name: 'dns-tcp', port: 53, protocol: 'TCP' },
          { name: 'metrics', port: 9153, protocol: 'TCP' },
        ],
      },
    },
  ];
}
