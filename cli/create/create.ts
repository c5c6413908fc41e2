// `vind create` as a list of steps. Adding a step means adding a file under steps/ and a line here.

import { consoleReporter, type Reporter } from '../progress.js';
import type { ClusterConfig } from '../cluster-config.js';
import { kubeconfigPath } from '../kubeconfig.js';
import type { ContainerRuntime } from '../runtime/runtime.js';
import { runPipeline, type Step } from './pipeline.js';
import { type ClusterReadiness, type CreateState, kubernetesReadiness, need } from './state.js';
import { checkHost } from './steps/check-host.js';
import { createNetwork } from './steps/create-network.js';
import { joinWorkers } from './steps/join-workers.js';
import { openApiPort, startContainers } from './steps/start-containers.js';
import { startControlPlane } from './steps/start-control-plane.js';
import {
  waitForApiServer,
  waitForCoreDns,
  waitForNodesReady,
  waitForNodesReporting,
} from './steps/wait-ready.js';
import { writeKubeconfig } from './steps/write-kubeconfig.js';

export const CREATE_STEPS: Step<CreateState>[] = [
  checkHost,
  createNetwork,
  startContainers,
  startControlPlane,
  openApiPort,
  // Workers have been joining since the control plane wrote its join information: the API is
  // checked through its published port meanwhile.
  writeKubeconfig,
  waitForApiServer,
  joinWorkers,
  waitForNodesReady,
  waitForNodesReporting,
  waitForCoreDns,
];

/** Without --wait the wait is long but not endless, so a broken start still ends. */
const DEFAULT_WAIT_MS = 15 * 60_000;
/** With --wait 0 the run still ends if the API never answers. */
const API_ONLY_WAIT_MS = 5 * 60_000;

export interface CreateOptions {
  config: ClusterConfig;
  runtime: ContainerRuntime;
  /** Total milliseconds for the whole create; undefined waits long; 0 returns once the API answers. */
  waitMs?: number;
  retain: boolean;
  kubeconfig?: string;
  reporter?: Reporter;
  signal: AbortSignal;
  readiness?: ClusterReadiness;
}

export interface CreatedCluster {
  name: string;
  server: string;
  context: string;
  kubeconfigPath: string;
}

export function initialState(options: CreateOptions): CreateState {
  return {
    config: options.config,
    runtime: options.runtime,
    readiness: options.readiness ?? kubernetesReadiness,
    kubeconfigPath: options.kubeconfig ?? kubeconfigPath(),
    waitForReady: options.waitMs !== 0,
  };
}

export async function createCluster(options: CreateOptions): Promise<CreatedCluster> {
  const { config } = options;
  const state = initialState(options);
  const budget = options.waitMs === 0 ? API_ONLY_WAIT_MS : (options.waitMs ?? DEFAULT_WAIT_MS);
  await runPipeline(CREATE_STEPS, state, {
    reporter: options.reporter ?? consoleReporter(),
    signal: options.signal,
    deadline: Date.now() + budget,
    retain: options.retain,
    retainMessage: `keeping the containers of "${config.name}" (--retain); remove them with \`vind delete ${config.name}\``,
  });
  const credentials = need(state.credentials, 'the credentials');
  return {
    name: config.name,
    server: credentials.server,
    context: credentials.contextName,
    kubeconfigPath: state.kubeconfigPath,
  };
}
