// metrics-server: the Metrics API (`kubectl top`, the Horizontal Pod Autoscaler on CPU and memory).
// It reads each kubelet's summary over HTTPS and verifies the kubelet's serving certificate with the
// cluster CA it is given as a service account (kubelet-serving.ts gets those certificates signed),
// never with --kubelet-insecure-tls. Its own serving certificate is issued by the control plane's PKI,
// and the APIService pins the cluster CA rather than skipping verification. Pure functions.

export const METRICS_SERVER_NAME = 'metrics-server';
const NAMESPACE = 'kube-system';
const PORT = 10250;

type Manifest = Record<string, unknown>;

export interface MetricsServerInputs {
  image: string;
  caPem: string;
  certPem: string;
  keyPem: string;
}

const base64 = (text: string) => Buffer.from(text).toString('base64');

export function metricsServer(inputs: MetricsServerInputs): Manifest[] {
  const labels = { 'k8s-app': METRICS_SERVER_NAME };
  const meta = (name: string) => ({ name, namespace: NAMESPACE, labels });
  const rbac = 'rbac.authorization.k8s.io';
  const serviceAccount = { kind: 'ServiceAccount', name: METRICS_SERVER_NAME, namespace: NAMESPACE };
  return [
    { apiVersion: 'v1', kind: 'ServiceAccount', metadata: meta(METRICS_SERVER_NAME) },
    {
      // Whoever may view, edit or administer a namespace may read its metrics (aggregated roles).
      apiVersion: `${rbac}/v1`,
      kind: 'ClusterRole',
      metadata: {
        name: 'system:aggregated-metrics-reader',
        labels: {
          ...labels,
          'rbac.authorization.k8s.io/aggregate-to-view': 'true',
          'rbac.authorization.k8s.io/aggregate-to-edit': 'true',
          'rbac.authorization.k8s.io/aggregate-to-admin': 'true',
        },
      },
      rules: [
        { apiGroups: ['metrics.k8s.io'], resources: ['pods', 'nodes'], verbs: ['get', 'list', 'watch'] },
      ],
    },
    {
      apiVersion: `${rbac}/v1`,
      kind: 'ClusterRole',
      metadata: { name: 'system:metrics-server', labels },
      rules: [
        { apiGroups: [''], resources: ['nodes/metrics'], verbs: ['get'] },
        { apiGroups: [''], resources: ['pods', 'nodes'], verbs: ['get', 'list', 'watch'] },
      ],
    },
    {
      apiVersion: `${rbac}/v1`,
      kind: 'ClusterRoleBinding',
      metadata: { name: 'system:metrics-server', labels },
      roleRef: { apiGroup: rbac, kind: 'ClusterRole', name: 'system:metrics-server' },
      subjects: [serviceAccount],
    },
    {
      // Delegated authentication and authorization of the API server's requests.
      apiVersion: `${rbac}/v1`,
      kind: 'ClusterRoleBinding',
      metadata: { name: 'metrics-server:system:auth-delegator', labels },
      roleRef: { apiGroup: rbac, kind: 'ClusterRole', name: 'system:auth-delegator' },
      subjects: [serviceAccount],
    },
    {
      apiVersion: `${rbac}/v1`,
      kind: 'RoleBinding',
      metadata: meta('metrics-server-auth-reader'),
      roleRef: { apiGroup: rbac, kind: 'Role', name: 'extension-apiserver-authentication-reader' },
      subjects: [serviceAccount],
    },
    {
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: meta('metrics-server-tls'),
      type: 'kubernetes.io/tls',
      data: { 'tls.crt': base64(inputs.certPem), 'tls.key': base64(inputs.keyPem) },
    },
    {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: meta(METRICS_SERVER_NAME),
      spec: { selector: labels, ports: [{ name: 'https', port: 443, protocol: 'TCP', targetPort: 'https' }] },
    },
    {
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: meta(METRICS_SERVER_NAME),
      spec: {
        replicas: 1,
        selector: { matchLabels: labels },
        strategy: { rollingUpdate: { maxUnavailable: 0 } },
        template: {
          metadata: { labels },
          spec: {
            serviceAccountName: METRICS_SERVER_NAME,
            priorityClassName: 'system-cluster-critical',
            containers: [
              {
                name: METRICS_SERVER_NAME,
                image: inputs.image,
                imagePullPolicy: 'IfNotPresent',
                args: [
                  `--secure-port=${PORT}`,
                  '--tls-cert-file=/etc/metrics-server/tls.crt',
                  '--tls-private-key-file=/etc/metrics-server/tls.key',
                  '--kubelet-preferred-address-types=InternalIP',
                  '--kubelet-use-node-status-port',
                  '--metric-resolution=15s',
                ],
                ports: [{ name: 'https', containerPort: PORT, protocol: 'TCP' }],
                readinessProbe: {
                  httpGet: { path: '/readyz', port: 'https', scheme: 'HTTPS' },
                  periodSeconds: 5,
                  failureThreshold: 3,
                },
                livenessProbe: {
                  httpGet: { path: '/livez', port: 'https', scheme: 'HTTPS' },
                  periodSeconds: 10,
                  failureThreshold: 3,
                },
                resources: { requests: { cpu: '20m', memory: '40Mi' }, limits: { memory: '200Mi' } },
                securityContext: {
                  allowPrivilegeEscalation: false,
                  capabilities: { drop: ['ALL'] },
                  readOnlyRootFilesystem: true,
                  runAsNonRoot: true,
                  runAsUser: 1000,
                  seccompProfile: { type: 'RuntimeDefault' },
                },
                volumeMounts: [
                  { name: 'tls', mountPath: '/etc/metrics-server', readOnly: true },
                  { name: 'tmp', mountPath: '/tmp' },
                ],
              },
            ],
            volumes: [
              { name: 'tls', secret: { secretName: 'metrics-server-tls' } },
              { name: 'tmp', emptyDir: {} },
            ],
          },
        },
      },
    },
    {
      apiVersion: 'apiregistration.k8s.io/v1',
      kind: 'APIService',
      metadata: { name: 'v1beta1.metrics.k8s.io', labels },
      spec: {
        service: { name: METRICS_SERVER_NAME, namespace: NAMESPACE, port: 443 },
        group: 'metrics.k8s.io',
        version: 'v1beta1',
        caBundle: base64(inputs.caPem),
        groupPriorityMinimum: 100,
        versionPriority: 100,
      },
    },
  ];
}
