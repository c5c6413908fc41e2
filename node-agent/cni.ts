// Who owns a worker's pod network. By default vind: a bridge for the node's podCIDR, a route to every
// other node's podCIDR via its address, one masquerade rule. With `networking.cni: none` the user's
// CNI, installed as on any kubeadm node: its DaemonSet writes its plugins into /opt/cni/bin and its
// configuration into /etc/cni/net.d, and the kubelet reports NotReady until a configuration appears.

import type { CniChoice } from '../shared/contract.js';

export const CNI_CONF_DIR = '/etc/cni/net.d';
/** Debian's containernetworking-plugins in the node image: bridge, host-local, loopback, portmap. */
export const IMAGE_CNI_BIN_DIR = '/usr/lib/cni';
/** Where CNI installers put their plugins. */
export const USER_CNI_BIN_DIR = '/opt/cni/bin';

/**
 * Where containerd looks for plugins, first match wins. vind's own network uses the image's plugins
 * only. A user's CNI finds its own plugins first and Debian's as delegates (a flannel configuration
 * delegates to bridge and portmap without shipping them).
 */
export function cniBinDirs(cni: CniChoice): string[] {
  return cni === 'none' ? [USER_CNI_BIN_DIR, IMAGE_CNI_BIN_DIR] : [IMAGE_CNI_BIN_DIR];
}

/** vind writes the CNI configuration and keeps pod routes between workers only for its own network. */
export function vindOwnsPodNetwork(cni: CniChoice): boolean {
  return cni === 'default';
}
