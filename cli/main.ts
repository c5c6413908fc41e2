#!/usr/bin/env node
// vind: real Kubernetes clusters as Docker containers.

import { buildProgram } from './program.js';
import { describeError, errorChain, VindError } from '../shared/errors.js';
import { StepError } from './progress.js';

const program = buildProgram();

function fail(error: unknown): never {
  // Read from argv as well: a failure can come before commander has parsed the options.
  const verbose =
    program.opts<{ verbose?: boolean }>().verbose === true ||
    process.argv.slice(2).some((a) => a === '-v' || a === '--verbose');
  let exitCode = error instanceof VindError ? error.exitCode : 1;
  if (error instanceof StepError) {
    const cause = error.cause;
    const message = cause instanceof VindError ? cause.message : describeError(cause);
    process.stderr.write(`error: ${error.step} failed: ${message}\n`);
    exitCode = cause instanceof VindError ? cause.exitCode : 1;
  } else {
    process.stderr.write(`error: ${describeError(error)}\n`);
  }
  if (verbose) process.stderr.write(errorChain(error));
  process.exit(exitCode);
}

program.parseAsync(process.argv).catch(fail);
