// The one reader of image references, following the distribution reference grammar:
// [registry[:port]/]path[:tag][@digest]. The first path part is a registry when it has a dot or a
// colon or is "localhost"; without one the registry is docker.io, whose one-part names live under
// library/. A colon after the last slash starts a tag; everything after @ is a digest.

export interface ImageReference {
  /** docker.io, localhost:5000, registry.k8s.io ... */
  registry: string;
  /** The repository path inside the registry, e.g. library/busybox. */
  repository: string;
  tag?: string;
  digest?: string;
}

const DIGEST = /^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}$/;
const TAG = /^[\w][\w.-]{0,127}$/;
const PATH_COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const DOMAIN_COMPONENT = '[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?';
/** host[:port], the host a domain name, an IPv4 address or a bracketed IPv6 address. */
const DOMAIN = new RegExp(
  `^(?:${DOMAIN_COMPONENT}(?:\\.${DOMAIN_COMPONENT})*|\\[[a-fA-F0-9:.]+\\])(?::[0-9]+)?$`,
);

export class ImageReferenceError extends Error {
  constructor(reference: string, reason: string) {
    super(`invalid image reference "${reference}": ${reason}`);
    this.name = 'ImageReferenceError';
  }
}

export function parseImageReference(reference: string): ImageReference {
  let rest = reference.trim();
  if (!rest) throw new ImageReferenceError(reference, 'it is empty');
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!DIGEST.test(digest)) throw new ImageReferenceError(reference, `"${digest}" is not a digest`);
  }
  let tag: string | undefined;
  const colon = rest.lastIndexOf(':');
  if (colon > rest.lastIndexOf('/')) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG.test(tag)) throw new ImageReferenceError(reference, `"${tag}" is not a tag`);
  }
  const parts = rest.split('/');
  let registry = 'docker.io';
  const first = parts[0] ?? '';
  if (parts.length > 1 && (first.includes('.') || first.includes(':') || first === 'localhost')) {
    registry = first;
    parts.shift();
    if (!DOMAIN.test(registry)) {
      throw new ImageReferenceError(reference, `"${registry}" is not a registry host`);
    }
  }
  if (registry === 'index.docker.io') registry = 'docker.io';
  if (registry === 'docker.io' && parts.length === 1) parts.unshift('library');
  for (const part of parts) {
    if (!PATH_COMPONENT.test(part)) {
      throw new ImageReferenceError(reference, `"${part}" is not a valid repository name part`);
    }
  }
  return { registry, repository: parts.join('/'), tag, digest };
}

/** Repository as Docker names it locally: docker.io and library/ left out. */
export function familiarRepository(ref: ImageReference): string {
  if (ref.registry !== 'docker.io') return `${ref.registry}/${ref.repository}`;
  return ref.repository.startsWith('library/') ? ref.repository.slice('library/'.length) : ref.repository;
}

/** Repository and tag for APIs that take them apart (an image import): a missing tag is "latest". */
export function repositoryAndTag(reference: string): [string, string] {
  const ref = parseImageReference(reference);
  return [familiarRepository(ref), ref.tag ?? 'latest'];
}

/** The fully qualified form containerd stores: docker.io/library/x:latest for "x". */
export function qualifiedReference(reference: string): string {
  const ref = parseImageReference(reference);
  const name = `${ref.registry}/${ref.repository}`;
  if (ref.digest) return ref.tag ? `${name}:${ref.tag}@${ref.digest}` : `${name}@${ref.digest}`;
  return `${name}:${ref.tag ?? 'latest'}`;
}
