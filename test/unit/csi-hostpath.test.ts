import { describe, expect, it } from 'vitest';
import { CSI_DRIVER, csiHostpathManifests, csiStorageClass } from '../support/csi-hostpath.js';

interface Mount {
  name: string;
  mountPath: string;
  mountPropagation?: string;
}
interface Container {
  name: string;
  args: string[];
  securityContext?: { privileged?: boolean };
  volumeMounts: Mount[];
}
interface DaemonSetSpec {
  containers: Container[];
  volumes: { name: string; hostPath: { path: string } }[];
}

function daemonSet(): DaemonSetSpec {
  const list = csiHostpathManifests('vind-test/csi-hostpath:x');
  const found = list.items.find((i) => i.kind === 'DaemonSet') as unknown as {
    spec: { template: { spec: DaemonSetSpec } };
  };
  return found.spec.template.spec;
}

const arg = (container: Container, flag: string) =>
  container.args.find((a) => a.startsWith(`--${flag}=`))?.split('=')[1];

describe('the CSI test driver manifests', () => {
  it('announce to the kubelet the socket the plugin serves, at the path the kubelet sees', () => {
    const spec = daemonSet();
    const plugin = spec.containers.find((c) => c.name === 'plugin')!;
    const registrar = spec.containers.find((c) => c.name === 'registrar')!;
    const hostDir = (name: string) => spec.volumes.find((v) => v.name === name)!.hostPath.path;
    const mountedAt = (c: Container, name: string) => c.volumeMounts.find((m) => m.name === name)!.mountPath;

    const served = arg(plugin, 'endpoint')!.replace('unix://', '');
    const socketDir = mountedAt(plugin, 'socket-dir');
    expect(served.startsWith(`${socketDir}/`)).toBe(true);
    expect(arg(registrar, 'kubelet-registration-path')).toBe(
      `${hostDir('socket-dir')}${served.slice(socketDir.length)}`,
    );
    expect(arg(registrar, 'csi-address')).toBe(served);
    expect(
      hostDir(registrar.volumeMounts.find((m) => m.mountPath === arg(registrar, 'registration-dir'))!.name),
    ).toBe('/var/lib/kubelet/plugins_registry');
  });

  it("let the plugin's mounts reach the kubelet: privileged, pods folder Bidirectional at its own path", () => {
    const spec = daemonSet();
    const plugin = spec.containers.find((c) => c.name === 'plugin')!;
    expect(plugin.securityContext?.privileged).toBe(true);
    const pods = plugin.volumeMounts.find((m) => m.mountPath === '/var/lib/kubelet/pods')!;
    expect(pods.mountPropagation).toBe('Bidirectional');
    expect(spec.volumes.find((v) => v.name === pods.name)!.hostPath.path).toBe('/var/lib/kubelet/pods');
  });

  it('install a driver without attaching and a class that waits for the first consumer', () => {
    const driver = csiHostpathManifests('x').items.find((i) => i.kind === 'CSIDriver') as unknown as {
      metadata: { name: string };
      spec: { attachRequired: boolean; volumeLifecycleModes: string[] };
    };
    expect(driver.metadata.name).toBe(CSI_DRIVER);
    expect(driver.spec.attachRequired).toBe(false);
    expect(driver.spec.volumeLifecycleModes).toEqual(['Persistent']);
    expect(csiStorageClass()).toMatchObject({
      provisioner: CSI_DRIVER,
      volumeBindingMode: 'WaitForFirstConsumer',
    });
  });
});
