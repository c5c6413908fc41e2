// The last stage of the node image: the compiled binaries, the preloaded images and the
// node-agent go on top of the Debian base. One image serves every role; the command picks it.

import { AGENT_PATH, PRELOADED_IMAGES_DIR } from '../shared/contract.js';

export function nodeDockerfile(baseImage: string): string {
  return [
    `FROM ${baseImage}`,
    'COPY bin/ /usr/local/bin/',
    `COPY images/ ${PRELOADED_IMAGES_DIR}/`,
    `COPY node-agent.mjs ${AGENT_PATH}`,
    'ENV container=docker',
    'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    // tini is PID 1 and reaps every orphan (containerd shims and their children end up there);
    // node-agent runs under it and supervises the node's daemons.
    `ENTRYPOINT ["/usr/bin/tini", "--", "/usr/bin/node", "${AGENT_PATH}"]`,
    'CMD ["worker"]',
    '',
  ].join('\n');
}

/** Clean-up applied to the debootstrapped tree before it becomes the base image. */
export const ROOTFS_REMOVALS = [
  'var/cache/apt/archives',
  'var/cache/apt/pkgcache.bin',
  'var/cache/apt/srcpkgcache.bin',
  'var/lib/apt/lists',
  'var/cache/debconf/templates.dat-old',
  'var/log/bootstrap.log',
  'usr/share/doc',
  'usr/share/man',
  'usr/share/info',
  'usr/share/locale',
  'usr/share/lintian',
];
