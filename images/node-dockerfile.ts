// The last stage of the node image: the compiled binaries and the node-agent go on top of the
// Debian base. One image serves every role; the command picks it. The preloaded images are not
// copied in: the seeding step unpacks them into the image (images/build.ts).

import { AGENT_PATH } from '../shared/contract.js';

// tini is PID 1 and reaps every orphan (containerd shims and their children end up there);
// node-agent runs under it and supervises the node's daemons.
const ENTRYPOINT = ['/usr/bin/tini', '--', '/usr/bin/node', AGENT_PATH];
const CMD = ['worker'];

export function nodeDockerfile(baseImage: string): string {
  return [
    `FROM ${baseImage}`,
    // Docker copies the image's /var into each node's new /var volume when it creates the node: dpkg's
    // 676 per-package file lists made that 0.3 s per node. Nodes never run dpkg.
    'RUN rm -rf /var/lib/dpkg/info && mkdir /var/lib/dpkg/info',
    'COPY bin/ /usr/local/bin/',
    `COPY node-agent.mjs ${AGENT_PATH}`,
    'ENV container=docker',
    'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    ...nodeCommandLines(),
    '',
  ].join('\n');
}

/** The entry point and default command, for the Dockerfile and again for the commit of the seed. */
export function nodeCommandLines(): string[] {
  const exec = (words: string[]) => `[${words.map((w) => JSON.stringify(w)).join(', ')}]`;
  return [`ENTRYPOINT ${exec(ENTRYPOINT)}`, `CMD ${exec(CMD)}`];
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
