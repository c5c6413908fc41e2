// The API server's admission configuration: the Pod Security Standard that applies where a namespace
// sets none (its `pod-security.kubernetes.io/*` labels still win). kube-system is exempt, as in
// kubeadm's and k3s's hardened setups: the cluster's own add-ons run there and need host access.

import { stringify } from 'yaml';
import type { PodSecurityLevel } from '../shared/contract.js';

export function admissionConfiguration(level: PodSecurityLevel): string {
  return stringify({
    apiVersion: 'apiserver.config.k8s.io/v1',
    kind: 'AdmissionConfiguration',
    plugins: [
      {
        name: 'PodSecurity',
        configuration: {
          apiVersion: 'pod-security.admission.config.k8s.io/v1',
          kind: 'PodSecurityConfiguration',
          defaults: {
            enforce: level,
            'enforce-version': 'latest',
            audit: level,
            'audit-version': 'latest',
            warn: level,
            'warn-version': 'latest',
          },
          exemptions: { usernames: [], runtimeClasses: [], namespaces: ['kube-system'] },
        },
      },
    ],
  });
}
