// What the steps of `vind create` share: the inputs, the two outside worlds (a container runtime
// and the new cluster's API) and what earlier steps found out for later ones.

import type { JoinInfo } from '../../shared/contract.js';
import type { ClusterCredentials } from '../../shared/kubeconfig.js';
import {
  apiReady,
  deploymentAvailable,
  isNodeReady,
  type KubeTarget,
  listNodes,
} from '../../shared/kubernetes.js';
import { PollTimeoutError, poll } from '../../shared/poll.js';
import type { ClusterAddressPlan } from '../../shared/subnets.js';
import { VindError } from '../../shared/errors.js';
import type { ClusterConfig } from '../cluster-config.js';
import type { ContainerRuntime, SecurityMode } from '../runtime/runtime.js';
import type { StepContext } from './pipeline.js';

/** The questions `create` asks the new cluster's API while it waits for readiness. */
export interface ClusterReadiness {
  apiReady(target: KubeTarget): Promise<boolean>;
  readyNodes(target: KubeTarget): Promise<number>;
  /** Nodes whose kubelet has posted a Ready condition, whatever it says. */
  reportingNodes(target: KubeTarget): Promise<number>;
  coreDnsAvailable(target: KubeTarget): Promise<boolean>;
}

export const kubernetesReadiness: ClusterReadiness = {
  apiReady,
  readyNodes: async (target) => (await listNodes(target)).filter(isNodeReady).length,
  reportingNodes: async (target) =>
    (await listNodes(target)).filter((n) => n.status?.conditions?.some((c) => c.type === 'Ready')).length,
  coreDnsAvailable: (target) => deploymentAvailable(target, 'kube-system', 'coredns'),
};

export interface CreateState {
  config: ClusterConfig;
  runtime: ContainerRuntime;
  readiness: ClusterReadiness;
  kubeconfigPath: string;
  /** False with `--wait 0`: return once the API answers. */
  waitForReady: boolean;

  // Found out along the way.
  securityMode?: SecurityMode;
  apiPort?: number;
  /** LoadBalancer ports are also published on the Docker host's 127.0.0.1. */
  publishHostPorts?: boolean;
  plan?: ClusterAddressPlan;
  join?: JoinInfo;
  /** This cluster's token for the image cache. */
  cacheToken?: string;
  /** The front door and the image cache, started while the control plane boots. */
  sideContainers?: Promise<void>;
  /** Writing the join information into the workers, started as soon as it exists. */
  joinHandedOver?: Promise<void>;
  adminKubeconfig?: string;
  credentials?: ClusterCredentials;
}

/** A value an earlier step must have set; its absence is a bug in the order of the steps. */
export function need<T>(value: T | undefined, what: string): T {
  if (value === undefined) throw new Error(`create: ${what} is not known yet (a step ran out of order)`);
  return value;
}

/** Running out of time, and how to get more of it. */
export function timedOut(what: string, lastError: string | undefined): VindError {
  const reason = lastError ? ` (last: ${lastError})` : '';
  return new VindError(
    `timed out waiting for ${what}${reason}: raise --wait, or keep the containers with --retain to look`,
  );
}

/** Polls within the run's deadline; running out of time says how to get more of it. */
export async function waitWithin<T>(
  what: string,
  probe: () => Promise<T | undefined>,
  context: StepContext,
  intervalMs = 200,
): Promise<T> {
  try {
    return await poll(what, probe, { deadline: context.deadline, signal: context.signal, intervalMs });
  } catch (error) {
    if (error instanceof PollTimeoutError) throw timedOut(what, error.lastError);
    throw error;
  }
}
