// The cluster joins the user's kubeconfig as context vind-<name>, made current, with the API server
// at its published port on 127.0.0.1 and the admin credentials of the control plane.

import { contextName } from '../../../shared/contract.js';
import { credentialsFromKubeconfig } from '../../../shared/kubeconfig.js';
import { mergeIntoKubeconfigFile, removeFromKubeconfigFile } from '../../kubeconfig.js';
import type { Step } from '../pipeline.js';
import { type CreateState, need } from '../state.js';

export const writeKubeconfig: Step<CreateState> = {
  name: 'write kubeconfig',
  async run(state, { undo, note }) {
    const credentials = credentialsFromKubeconfig(
      need(state.adminKubeconfig, 'the admin kubeconfig'),
      contextName(state.config.name),
      `https://127.0.0.1:${need(state.apiPort, 'the API server port')}`,
    );
    await mergeIntoKubeconfigFile(state.kubeconfigPath, credentials);
    undo(async () => {
      await removeFromKubeconfigFile(state.kubeconfigPath, credentials.contextName);
    });
    state.credentials = credentials;
    note(`${state.kubeconfigPath}, context ${credentials.contextName}`);
  },
};
