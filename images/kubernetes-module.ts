// Kubernetes is not installable with `go install`: its go.mod replaces every k8s.io/* staging module
// with a local folder that the published module zip does not hold. A small wrapper module requires
// k8s.io/kubernetes and points each staging module at its published v0.Y.Z instead.

import { MIN_KUBERNETES_MINOR } from './recipe.js';

export interface KubernetesVersion {
  /** Canonical form with the leading v, e.g. v1.36.3 or v1.37.0-rc.1. */
  tag: string;
  major: number;
  minor: number;
  patch: number;
  prerelease?: string;
}

const VERSION_PATTERN = /^v?(\d+)\.(\d+)\.(\d+)(?:-((?:alpha|beta|rc)\.\d+))?$/;

export class VersionError extends Error {}

export function parseKubernetesVersion(input: string): KubernetesVersion {
  const match = VERSION_PATTERN.exec(input.trim());
  if (!match) {
    throw new VersionError(
      `"${input}" is not a Kubernetes version: use the form v1.36.3 (optionally -alpha.N, -beta.N or -rc.N)`,
    );
  }
  const [, major, minor, patch, prerelease] = match;
  const version: KubernetesVersion = {
    tag: `v${major}.${minor}.${patch}${prerelease ? `-${prerelease}` : ''}`,
    major: Number(major),
    minor: Number(minor),
    patch: Number(patch),
    prerelease,
  };
  if (version.major !== 1 || version.minor < MIN_KUBERNETES_MINOR) {
    throw new VersionError(
      `Kubernetes ${version.tag} is not supported: vind builds v1.${MIN_KUBERNETES_MINOR}.0 and later`,
    );
  }
  return version;
}

/** The published version of the staging modules that belong to a Kubernetes release: v1.Y.Z -> v0.Y.Z. */
export function stagingVersion(version: KubernetesVersion): string {
  return `v0.${version.minor}.${version.patch}${version.prerelease ? `-${version.prerelease}` : ''}`;
}

/** Reads the staging module paths out of k8s.io/kubernetes's own go.mod (`k8s.io/x => ./staging/src/k8s.io/x`). */
export function stagingModules(kubernetesGoMod: string): string[] {
  const modules = new Set<string>();
  for (const line of kubernetesGoMod.split('\n')) {
    const match = /^\s*(?:replace\s+)?(k8s\.io\/[\w.-]+)\s+=>\s+\.\/staging\/src\/\1\s*$/.exec(line);
    if (match) modules.add(match[1]!);
  }
  return [...modules].sort();
}

/** The `go` directive of a go.mod, e.g. "1.26.0". */
export function goDirective(goMod: string): string | undefined {
  return /^go\s+(\d+\.\d+(?:\.\d+)?)\s*$/m.exec(goMod)?.[1];
}

/** `patched` maps a module to the folder of a patched copy that replaces it (kubernetes-patches.ts). */
export function wrapperGoMod(
  version: KubernetesVersion,
  kubernetesGoMod: string,
  patched: Record<string, string> = {},
): string {
  const staging = stagingModules(kubernetesGoMod);
  if (staging.length === 0) {
    throw new Error(`the go.mod of k8s.io/kubernetes ${version.tag} names no staging modules`);
  }
  const goVersion = goDirective(kubernetesGoMod) ?? '1.24';
  const replaceLines = [
    ...staging.map((m) => `\t${m} => ${patched[m] ?? `${m} ${stagingVersion(version)}`}`),
    ...Object.entries(patched)
      .filter(([m]) => !staging.includes(m))
      .map(([m, dir]) => `\t${m} => ${dir}`),
  ];
  return [
    'module vind.dev/build/kubernetes',
    '',
    `go ${goVersion}`,
    '',
    `require k8s.io/kubernetes ${version.tag}`,
    '',
    'replace (',
    ...replaceLines,
    ')',
    '',
  ].join('\n');
}

/** A file that imports every command we build, so `go mod tidy` records all their dependencies. */
export function wrapperToolsGo(components: readonly string[]): string {
  return [
    '//go:build tools',
    '',
    'package tools',
    '',
    'import (',
    ...components.map((c) => `\t_ "k8s.io/kubernetes/cmd/${c}"`),
    ')',
    '',
  ].join('\n');
}

/** The -X flags that make every component report its real version instead of v0.0.0-master. */
export function versionLdflags(version: KubernetesVersion, gitCommit: string, buildDate: string): string[] {
  const gitMinor = `${version.minor}${version.prerelease ? '+' : ''}`;
  const flags: string[] = [];
  for (const pkg of ['k8s.io/component-base/version', 'k8s.io/client-go/pkg/version']) {
    flags.push(
      `-X ${pkg}.gitVersion=${version.tag}`,
      `-X ${pkg}.gitMajor=${version.major}`,
      `-X ${pkg}.gitMinor=${gitMinor}`,
      `-X ${pkg}.gitCommit=${gitCommit}`,
      `-X ${pkg}.gitTreeState=clean`,
      `-X ${pkg}.buildDate=${buildDate}`,
    );
  }
  return flags;
}
