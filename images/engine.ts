// What the image build needs from a container engine and from the caller's progress display. The
// CLI passes its own runtime and reporter in: images/ builds images without knowing the CLI.

import type { Readable } from 'node:stream';

export interface ImageEngine {
  ping(): Promise<void>;
  inspectImage(
    reference: string,
  ): Promise<{ id: string; labels: Record<string, string>; size: number } | undefined>;
  removeImage(reference: string): Promise<void>;
  /** `docker import` of a root file system tarball, with Dockerfile-style changes. */
  importRootfs(rootfsTar: Readable, reference: string, changes: string[]): Promise<void>;
  /** Builds from a context tarball; tags only when the whole build succeeded. */
  buildImage(
    context: Readable,
    options: { tag: string; labels: Record<string, string>; logFile: string },
  ): Promise<string>;
  /**
   * Runs a throw-away container of `image` to its end, with a node's privileges, no network and a
   * tmpfs at each of `tmpfs`; `files` (a tar stream) is unpacked into its root before it starts.
   */
  runToCompletion(options: {
    image: string;
    command: string[];
    tmpfs: string[];
    files?: Readable;
  }): Promise<{ container: string; exitCode: number; output: string }>;
  /** `docker commit` of a container as `tag`, with Dockerfile-style changes; returns the image id. */
  commitContainer(container: string, tag: string, changes: string[]): Promise<string>;
  removeContainer(container: string): Promise<void>;
}

export interface BuildReporter {
  step<T>(name: string, work: (note: (text: string) => void) => Promise<T>): Promise<T>;
  info(message: string): void;
}
