import { describe, expect, it } from 'vitest';
import {
  parseKubernetesVersion,
  stagingModules,
  stagingVersion,
  versionLdflags,
  wrapperGoMod,
  wrapperToolsGo,
} from '../../images/kubernetes-module.js';

const KUBERNETES_GO_MOD = `module k8s.io/kubernetes

go 1.26.0

require (
	k8s.io/api v0.0.0
	k8s.io/apimachinery v0.0.0
)

replace (
	k8s.io/api => ./staging/src/k8s.io/api
	k8s.io/apimachinery => ./staging/src/k8s.io/apimachinery
	k8s.io/cri-api => ./staging/src/k8s.io/cri-api
	github.com/onsi/ginkgo/v2 => github.com/onsi/ginkgo/v2 v2.1.0
)
`;

describe('parseKubernetesVersion', () => {
  it('accepts versions with and without the leading v', () => {
    expect(parseKubernetesVersion('v1.36.3').tag).toBe('v1.36.3');
    expect(parseKubernetesVersion('1.35.4')).toMatchObject({ tag: 'v1.35.4', major: 1, minor: 35, patch: 4 });
  });

  it('accepts pre-releases', () => {
    expect(parseKubernetesVersion('v1.37.0-rc.1')).toMatchObject({ tag: 'v1.37.0-rc.1', prerelease: 'rc.1' });
  });

  it.each(['', 'latest', 'v1.36', 'v1.36.3.1', '1.36.x', 'v1.36.3-foo', 'v1.36.3 ; rm -rf /'])(
    'rejects malformed "%s" with the expected form',
    (input) => {
      expect(() => parseKubernetesVersion(input)).toThrow(/use the form v1\.36\.3/);
    },
  );

  it('rejects releases older than the supported range', () => {
    expect(() => parseKubernetesVersion('v1.30.14')).toThrow(/not supported.*v1\.31\.0 and later/);
    expect(() => parseKubernetesVersion('v2.0.0')).toThrow(/not supported/);
  });
});

describe('staging modules', () => {
  it('maps a release to the version of its published staging modules', () => {
    expect(stagingVersion(parseKubernetesVersion('v1.36.3'))).toBe('v0.36.3');
    expect(stagingVersion(parseKubernetesVersion('v1.37.0-rc.1'))).toBe('v0.37.0-rc.1');
  });

  it('reads only the ./staging replacements out of the go.mod', () => {
    expect(stagingModules(KUBERNETES_GO_MOD)).toEqual([
      'k8s.io/api',
      'k8s.io/apimachinery',
      'k8s.io/cri-api',
    ]);
  });

  it('writes a wrapper module that pins every staging module and keeps the go directive', () => {
    const goMod = wrapperGoMod(parseKubernetesVersion('v1.36.3'), KUBERNETES_GO_MOD);
    expect(goMod).toContain('require k8s.io/kubernetes v1.36.3');
    expect(goMod).toContain('go 1.26.0');
    expect(goMod).toContain('\tk8s.io/cri-api => k8s.io/cri-api v0.36.3');
    expect(goMod).not.toContain('ginkgo');
  });

  it('replaces a patched module with its copy, once, staging module or not', () => {
    const goMod = wrapperGoMod(parseKubernetesVersion('v1.36.3'), KUBERNETES_GO_MOD, {
      'k8s.io/api': '/build/patched/k8s.io/api',
      'k8s.io/kubernetes': '/build/patched/k8s.io/kubernetes',
    });
    expect(goMod).toContain('\tk8s.io/api => /build/patched/k8s.io/api\n');
    expect(goMod).not.toContain('k8s.io/api => k8s.io/api');
    expect(goMod).toContain('\tk8s.io/kubernetes => /build/patched/k8s.io/kubernetes\n');
    expect(goMod).toContain('\tk8s.io/apimachinery => k8s.io/apimachinery v0.36.3');
    expect(goMod).toContain('require k8s.io/kubernetes v1.36.3');
  });

  it('refuses a go.mod without staging modules', () => {
    expect(() => wrapperGoMod(parseKubernetesVersion('v1.36.3'), 'module x\n')).toThrow(/no staging modules/);
  });

  it('imports every component in the tools file', () => {
    expect(wrapperToolsGo(['kubelet', 'kubectl'])).toContain('_ "k8s.io/kubernetes/cmd/kubectl"');
  });
});

describe('versionLdflags', () => {
  it('stamps both version packages with the real version', () => {
    const flags = versionLdflags(parseKubernetesVersion('v1.36.3'), 'unknown', '2026-07-22T18:07:38Z');
    expect(flags).toContain('-X k8s.io/component-base/version.gitVersion=v1.36.3');
    expect(flags).toContain('-X k8s.io/client-go/pkg/version.gitVersion=v1.36.3');
    expect(flags).toContain('-X k8s.io/component-base/version.gitMinor=36');
    expect(flags).toContain('-X k8s.io/component-base/version.buildDate=2026-07-22T18:07:38Z');
  });

  it('marks the minor of a pre-release with a plus, as Kubernetes does', () => {
    const flags = versionLdflags(parseKubernetesVersion('v1.37.0-rc.1'), 'unknown', 'x');
    expect(flags).toContain('-X k8s.io/component-base/version.gitMinor=37+');
  });
});
