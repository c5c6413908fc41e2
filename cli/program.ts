// The command tree of `vind`, built without parsing anything: main.ts runs it, the completion
// generator walks it, and unit tests look at it.

import { Command } from 'commander';
import { registerCacheCommands, registerClusterCommands } from './commands/cluster.js';
import { registerImageCommands } from './commands/image.js';
import { registerNodeCommands } from './commands/node.js';
import { registerSupportCommands } from './commands/support.js';
import { VIND_VERSION } from '../shared/contract.js';

export function buildProgram(): Command {
  const program = new Command();
  program
    .name('vind')
    .description('Kubernetes clusters made of Docker containers')
    .version(VIND_VERSION)
    .option('-v, --verbose', 'on failure, print the chain of causes and the stack trace', false)
    .showHelpAfterError(false);

  registerClusterCommands(program);
  registerCacheCommands(program);
  registerImageCommands(program);
  registerNodeCommands(program);
  registerSupportCommands(program);
  return program;
}
