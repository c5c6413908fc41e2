// What the image build needs from a container engine and from the caller's progress display. The
// CLI passes its own runtime and reporter in: images/ builds images without knowing the CLI.

import type { Readable } from 'node:stream';

export interface ImageEngine {
  ping(): Promise<void>;
  inspectImage(reference: string): Promise<{ id: string; labels: Record<string, string> } | undefined>;
  removeImage(reference: string): Promise<void>;
  /** `docker import` of a root file system tarball, with Dockerfile-style changes. */
  importRootfs(rootfsTar: Readable, reference: string, changes: string[]): Promise<void>;
  /** Builds from a context tarball; tags only when the whole build succeeded. */
  buildImage(
    context: Readable,
    options: { tag: string; labels: Record<string, string>; logFile: string },
  ): Promise<string>;
}

export interface BuildReporter {
  step<T>(name: string, work: (note: (text: string) => void) => Promise<T>): Promise<T>;
  info(message: string): void;
}
