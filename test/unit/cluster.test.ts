import { describe, expect, it } from 'vitest';
import { earliestExpiry } from '../../cli/clusters.js';
import { inotifyWarning } from '../../cli/create/steps/check-host.js';
import { contextName, controlPlaneName, workerName } from '../../shared/contract.js';
import { credentialsFromKubeconfig } from '../../shared/kubeconfig.js';

describe('cluster naming', () => {
  it('names containers like kind and contexts with a vind- prefix', () => {
    expect(controlPlaneName('dev')).toBe('dev-control-plane');
    expect(workerName('dev', 0)).toBe('dev-worker');
    expect(workerName('dev', 1)).toBe('dev-worker2');
    expect(contextName('dev')).toBe('vind-dev');
  });
});

describe('inotifyWarning', () => {
  it('stays quiet while the limit covers the nodes', () => {
    expect(inotifyWarning(128, 1)).toBeUndefined();
    expect(inotifyWarning(128, 4)).toBeUndefined();
    expect(inotifyWarning(8192, 20)).toBeUndefined();
  });

  it('names the sysctl that fixes a low limit', () => {
    expect(inotifyWarning(128, 5)).toBe(
      'fs.inotify.max_user_instances is 128, low for 5 workers (about 136 needed); nodes may fail with ' +
        '"too many open files": raise it with `sudo sysctl fs.inotify.max_user_instances=1024`',
    );
  });
});

describe('credentialsFromKubeconfig', () => {
  it('keeps the credentials and points them at the given server', () => {
    const admin = [
      'apiVersion: v1',
      'kind: Config',
      'clusters:',
      '- name: vind',
      '  cluster:',
      '    certificate-authority-data: Q0E=',
      '    server: https://172.30.0.2:6443',
      'users:',
      '- name: vind',
      '  user:',
      '    client-certificate-data: Q0VSVA==',
      '    client-key-data: S0VZ',
      '',
    ].join('\n');
    expect(credentialsFromKubeconfig(admin, 'vind-dev', 'https://127.0.0.1:40000')).toEqual({
      contextName: 'vind-dev',
      server: 'https://127.0.0.1:40000',
      caData: 'Q0E=',
      clientCertData: 'Q0VSVA==',
      clientKeyData: 'S0VZ',
    });
  });
});

describe('earliestExpiry', () => {
  it('finds the first certificate to expire among several', async () => {
    const { createCertificateAuthority, issueServingCertificate } = await import('../../node-agent/pki.js');
    const ca = await createCertificateAuthority('test-ca');
    const short = await issueServingCertificate(ca.cert, ca.key, ['a.test'], 20);
    const long = await issueServingCertificate(ca.cert, ca.key, ['b.test'], 200);
    const expiry = earliestExpiry(`${long.cert}${ca.cert}${short.cert}`);
    const days = (Date.parse(expiry!) - Date.now()) / (24 * 3600 * 1000);
    expect(days).toBeGreaterThan(19);
    expect(days).toBeLessThan(21);
    expect(earliestExpiry('no certificates here')).toBeUndefined();
  });
});

describe('lowDiskWarning', () => {
  it('warns below 4 GiB free, naming the folder and the eviction margin', async () => {
    const { lowDiskWarning } = await import('../../cli/create/steps/check-host.js');
    expect(lowDiskWarning('/var/lib/docker', 5 * 1024 ** 3)).toBeUndefined();
    expect(lowDiskWarning('/var/lib/docker', 1.5 * 1024 ** 3)).toBe(
      "the disk holding Docker's data (/var/lib/docker) has 1.5 GiB free: nodes evict pods when less than 2 GiB is left; free some space, e.g. with `docker system prune`",
    );
  });
});
