// How a stage of the image build runs commands: output to its own log under the cache folder, and a
// failure as one line that names what failed and the log that holds the whole output.

import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { VindError } from '../shared/errors.js';

/** A stage failure names the stage and the log that holds the whole output. */
export class StageFailure extends VindError {}

export interface RunOptions {
  cwd?: string;
  env?: Record<string, string>;
  /** Return the output of a failed command instead of throwing. */
  allowFailure?: boolean;
}

export interface Runner {
  run(command: string, args: string[], options?: RunOptions): Promise<{ stdout: string; failed: boolean }>;
  fail(reason: string): StageFailure;
  logFile: string;
}

export async function stageRunner(logDir: string, stage: string): Promise<Runner> {
  await mkdir(logDir, { recursive: true });
  const logFile = join(logDir, `image-build-${stage}.log`);
  await writeFile(logFile, '');
  const fail = (reason: string) => {
    const oneLine = reason
      .split('\n')
      .map((l) => l.trim())
      .filter(Boolean)
      .join(' ');
    return new StageFailure(`${oneLine} (full log: ${logFile})`);
  };
  return {
    logFile,
    fail,
    async run(command, args, options = {}) {
      await writeFile(logFile, `$ ${command} ${args.join(' ')}\n`, { flag: 'a' });
      const result = await execa(command, args, {
        cwd: options.cwd,
        env: { ...options.env },
        extendEnv: true,
        reject: false,
        stdout: 'pipe',
        stderr: ['pipe', { file: logFile, append: true }],
        stdin: 'ignore',
      });
      if (result.stdout) await writeFile(logFile, `${result.stdout}\n`, { flag: 'a' });
      const failed = result.exitCode !== 0 || result.failed;
      if (failed && !options.allowFailure) {
        const lines = (await readFile(logFile, 'utf8')).trim().split('\n');
        throw fail(lines.filter((l) => l.trim() !== '').at(-1) ?? result.shortMessage ?? 'failed');
      }
      return { stdout: result.stdout, failed };
    },
  };
}

export async function requireCommand(command: string, hint: string): Promise<void> {
  const result = await execa('sh', ['-c', `command -v ${command}`], { reject: false });
  if (result.exitCode !== 0) throw new VindError(`${command} is not installed: ${hint}`);
}
