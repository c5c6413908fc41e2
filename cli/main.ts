#!/usr/bin/env node
// vind: real Kubernetes clusters as Docker containers.

import { Command } from 'commander';
import { registerCacheCommands, registerClusterCommands } from './commands/cluster.js';
import { registerImageCommands } from './commands/image.js';
import { registerNodeCommands } from './commands/node.js';
import { describeError, VindError } from '../shared/errors.js';
import { StepError } from './progress.js';
import { VIND_VERSION } from '../shared/contract.js';

const program = new Command();
program
  .name('vind')
  .description('Kubernetes clusters made of Docker containers')
  .version(VIND_VERSION)
  .showHelpAfterError(false);

registerClusterCommands(program);
registerCacheCommands(program);
registerImageCommands(program);
registerNodeCommands(program);

function fail(error: unknown): never {
  if (error instanceof StepError) {
    const cause = error.cause;
    const message = cause instanceof VindError ? cause.message : describeError(cause);
    process.stderr.write(`error: ${error.step} failed: ${message}\n`);
    process.exit(cause instanceof VindError ? cause.exitCode : 1);
  }
  process.stderr.write(`error: ${describeError(error)}\n`);
  process.exit(error instanceof VindError ? error.exitCode : 1);
}

program.parseAsync(process.argv).catch(fail);
