/**
 * Runs the OpenFGA CLI's model tests (`fga model test --tests <file>`), which load the model and
 * tuples of a `.fga.yaml` file into an embedded OpenFGA and check every assertion.
 * Format: https://openfga.dev/docs/modeling/testing. The binary is tools/cache/bin/fga (built by
 * `scripts/lib.sh`'s ensure_fga, pinned in tools/fga/go.mod), else `fga` on PATH.
 */
import { spawn } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { accessSync, constants, readdirSync } from 'node:fs';
import { delimiter, dirname, join, resolve } from 'node:path';
import { POLICIES_DIR } from './model.ts';

/** The repository's own build of the CLI. */
export const LOCAL_FGA = resolve(POLICIES_DIR, '..', 'tools', 'cache', 'bin', 'fga');

const isExecutable = (file: string) => {
  try {
    accessSync(file, constants.X_OK);
    return true;
  } catch {
    return false;
  }
};

/**
 * Path of the `fga` binary: `local` (default tools/cache/bin/fga), else the first `fga` on
 * `searchPath` (default $PATH).
 * @throws Error saying how to build it when neither exists.
 */
export function findFgaBinary(local: string = LOCAL_FGA, searchPath: string = process.env.PATH ?? ''): string {
  if (isExecutable(local)) return local;
  for (const dir of searchPath.split(delimiter)) {
    if (dir && isExecutable(join(dir, 'fga'))) return join(dir, 'fga');
  }
  throw new Error(
    `OpenFGA CLI not found at ${local} nor on PATH: build it with \`source scripts/lib.sh && ensure_fga\``,
  );
}

/** The model test files: policies/tests/*.fga.yaml, sorted. */
export function findTestFiles(dir = join(POLICIES_DIR, 'tests')): string[] {
  return readdirSync(dir)
    .filter((f) => f.endsWith('.fga.yaml'))
    .sort()
    .map((f) => join(dir, f));
}

/** Result of one test file: the CLI's exit code (non-zero = a failing assertion or a bad file) and output. */
export type ModelTestResult = { file: string; code: number; output: string };

/**
 * Run `fga model test --tests <file>` for each file in the file's directory (model_file paths are
 * relative to it), up to `os.availableParallelism()` at a time (each run is one CPU-bound process).
 * @returns one result per file, in the order given.
 * @throws Error from {@link findFgaBinary}; a failing test is a non-zero `code`, not an exception.
 */
export async function runModelTests(files: string[], bin = findFgaBinary()): Promise<ModelTestResult[]> {
  const run = async (file: string): Promise<ModelTestResult> => {
    const abs = resolve(file);
    const child = spawn(bin, ['model', 'test', '--tests', abs], { cwd: dirname(abs), stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d) => (output += d));
    child.stderr.on('data', (d) => (output += d));
    const code = await new Promise<number>((res, rej) => {
      child.once('error', rej);
      child.once('close', (c) => res(c ?? 1));
    });
    return { file: abs, code, output };
  };
  const results: ModelTestResult[] = new Array(files.length);
  let next = 0;
  const worker = async () => {
    for (let i = next++; i < files.length; i = next++) results[i] = await run(files[i]!);
  };
  await Promise.all(Array.from({ length: Math.min(files.length, availableParallelism()) }, worker));
  return results;
}
