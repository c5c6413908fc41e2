import { describe, expect, it } from 'vitest';
import {
  e2eImageNames,
  summarizeGinkgoReport,
  upstreamTestMain,
  upstreamToolsGo,
} from '../support/upstream-e2e.js';

describe('the upstream e2e test main', () => {
  it('imports the framework, its file sources and every suite asked for', () => {
    const main = upstreamTestMain(['k8s.io/kubernetes/test/e2e/network', 'k8s.io/kubernetes/test/e2e/apps']);
    expect(main).toContain('\t_ "k8s.io/kubernetes/test/e2e/network"\n');
    expect(main).toContain('\t_ "k8s.io/kubernetes/test/e2e/apps"\n');
    expect(main).toContain('e2e.RunE2ETests(t)');
    expect(main).toContain('framework.AfterReadingAllFlags(&framework.TestContext)');
    // The flags are registered before they are parsed, and parsed before the framework reads them.
    expect(main.indexOf('RegisterClusterFlags')).toBeLessThan(main.indexOf('flag.Parse()'));
    expect(main.indexOf('flag.Parse()')).toBeLessThan(main.indexOf('AfterReadingAllFlags'));
  });

  it('keeps the workload programs out of builds but in the module graph, in the same package', () => {
    const tools = upstreamToolsGo();
    expect(tools.startsWith('//go:build tools\n')).toBe(true);
    expect(tools).toContain('\t_ "k8s.io/kubernetes/test/images/agnhost"\n');
    expect(tools).toContain('\t_ "k8s.io/kubernetes/test/images/nonewprivs"\n');
    const packageOf = (go: string) => /^package (\w+)$/m.exec(go)?.[1];
    expect(packageOf(tools)).toBe(packageOf(upstreamTestMain([])));
  });
});

describe('e2eImageNames', () => {
  const manifest = `
func initReposWithEnv() RegistryList {
	registry := RegistryList{
		GcAuthenticatedRegistry:  "gcr.io/authenticated-image-pulling",
		PromoterE2eRegistry:      "registry.k8s.io/e2e-test-images",
		GcRegistry:               "registry.k8s.io",
	}
}

func initImageConfigs(list RegistryList) (map[ImageID]Config, map[ImageID]Config) {
	configs := map[ImageID]Config{}
	configs[Agnhost] = Config{list.PromoterE2eRegistry, "agnhost", "2.63.0"}
	configs[BusyBox] = Config{list.PromoterE2eRegistry, "busybox", "1.37.0-1"}
	configs[Pause] = Config{list.GcRegistry, "pause", "3.10.2"}
	configs[Unknown] = Config{list.NoSuchRegistry, "x", "1"}
}
`;

  it('names each image with its registry, name and tag', () => {
    const names = e2eImageNames(manifest);
    expect(names.get('Agnhost')).toBe('registry.k8s.io/e2e-test-images/agnhost:2.63.0');
    expect(names.get('BusyBox')).toBe('registry.k8s.io/e2e-test-images/busybox:1.37.0-1');
    expect(names.get('Pause')).toBe('registry.k8s.io/pause:3.10.2');
  });

  it('leaves out an image whose registry it cannot resolve', () => {
    expect(e2eImageNames(manifest).has('Unknown')).toBe(false);
  });
});

describe('summarizeGinkgoReport', () => {
  const spec = (text: string, state: string, message?: string, type = 'It') => ({
    ContainerHierarchyTexts:
      type === 'It' ? ['[sig-network] Netpol', 'NetworkPolicy between server and client'] : null,
    LeafNodeText: text,
    LeafNodeType: type,
    State: state,
    RunTime: 12_000_000_000,
    ...(message ? { Failure: { Message: message } } : {}),
  });
  const report = JSON.stringify([
    {
      SuiteSucceeded: false,
      RunTime: 90_000_000_000,
      PreRunStats: { TotalSpecs: 7000, SpecsThatWillRun: 5 },
      SpecReports: [
        spec('should support a default-deny-ingress policy', 'passed'),
        spec('should deny egress', 'failed', '\nHad 8 wrong results in reachability matrix\nmore detail'),
        spec('should time out', 'timedout', 'A suite timeout occurred'),
        spec('needs three nodes', 'skipped', 'Requires at least 3 nodes'),
        spec('left out by the focus', 'skipped'),
        spec('', 'failed', 'kube-system pods not ready', 'SynchronizedBeforeSuite'),
        spec('', 'passed', undefined, 'SynchronizedAfterSuite'),
      ],
    },
  ]);

  it('counts specs by outcome, not suite-level nodes', () => {
    const summary = summarizeGinkgoReport(report);
    expect(summary).toMatchObject({ selected: 5, passed: 1, failed: 2, skipped: 1, seconds: 90 });
  });

  it('names every failure with the first line of its message, suite-level ones too', () => {
    const { failures } = summarizeGinkgoReport(report);
    expect(failures.map((f) => [f.name, f.message])).toEqual([
      [
        '[sig-network] Netpol NetworkPolicy between server and client should deny egress',
        'Had 8 wrong results in reachability matrix',
      ],
      [
        '[sig-network] Netpol NetworkPolicy between server and client should time out',
        'A suite timeout occurred',
      ],
      ['SynchronizedBeforeSuite', 'kube-system pods not ready'],
    ]);
  });

  it('does not count specs the focus left out as skipped', () => {
    const { skips } = summarizeGinkgoReport(report);
    expect(skips.map((s) => s.message)).toEqual(['Requires at least 3 nodes']);
  });
});
