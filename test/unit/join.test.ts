import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signDetachedJws, validateClusterInfo, verifyDetachedJws } from '../../node-agent/join.js';
import { bootstrapTokenSecret, clusterInfo, parseBootstrapToken } from '../../node-agent/manifests.js';
import { caCertHash, ensurePki } from '../../node-agent/pki.js';

const TOKEN = 'abcdef.0123456789abcdef';

describe('detached JWS of cluster-info', () => {
  it('verifies what the signer produced, and nothing else', () => {
    const jws = signDetachedJws('payload', TOKEN);
    expect(jws).toMatch(/^[\w-]+\.\.[\w-]+$/);
    expect(verifyDetachedJws(jws, 'payload', TOKEN)).toBe(true);
    expect(verifyDetachedJws(jws, 'payload!', TOKEN)).toBe(false);
    expect(verifyDetachedJws(jws, 'payload', 'abcdef.0123456789abcdee')).toBe(false);
    expect(verifyDetachedJws('garbage', 'payload', TOKEN)).toBe(false);
  });

  it('matches the signature format of the Kubernetes bootstrap signer', () => {
    // header {"alg":"HS256","kid":"abcdef"}, HMAC-SHA256 keyed with the token secret.
    const [header] = signDetachedJws('x', TOKEN).split('.');
    expect(JSON.parse(Buffer.from(header!, 'base64url').toString())).toEqual({ alg: 'HS256', kid: 'abcdef' });
  });
});

describe('bootstrap token', () => {
  it('parses the id and secret and rejects malformed tokens', () => {
    expect(parseBootstrapToken(TOKEN)).toEqual({ id: 'abcdef', secret: '0123456789abcdef' });
    expect(() => parseBootstrapToken('ABCDEF.0123456789abcdef')).toThrow(/form/);
    expect(() => parseBootstrapToken('abcdef')).toThrow(/form/);
  });

  it('is stored as a bootstrap token secret that authenticates and signs, in the vind group', () => {
    const secret = bootstrapTokenSecret({
      id: 'abcdef',
      secret: '0123456789abcdef',
      expiration: '2030-01-01T00:00:00Z',
    });
    expect(secret).toMatchObject({
      type: 'bootstrap.kubernetes.io/token',
      metadata: { name: 'bootstrap-token-abcdef', namespace: 'kube-system' },
      stringData: {
        'usage-bootstrap-authentication': 'true',
        'usage-bootstrap-signing': 'true',
        expiration: '2030-01-01T00:00:00Z',
        'auth-extra-groups': 'system:bootstrappers:vind:default-node-token',
      },
    });
  });
});

describe('validateClusterInfo', () => {
  let dir: string;
  let caPem: string;
  let data: Record<string, string>;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'vind-join-'));
    const pki = await ensurePki(dir, { apiServerDnsNames: ['localhost'], apiServerIps: ['127.0.0.1'] });
    caPem = await readFile(pki.caCert, 'utf8');
    const info = clusterInfo('https://172.30.0.2:6443', caPem) as { data: { kubeconfig: string } };
    data = {
      kubeconfig: info.data.kubeconfig,
      'jws-kubeconfig-abcdef': signDetachedJws(info.data.kubeconfig, TOKEN),
    };
  });

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const joinConfig = () => ({
    server: 'https://172.30.0.2:6443',
    token: TOKEN,
    caCertHash: caCertHash(caPem),
  });

  it('accepts signed cluster-info whose CA matches the pinned hash', () => {
    expect(validateClusterInfo(data, joinConfig()).caCertPem).toBe(caPem);
  });

  it('refuses a CA whose hash differs from the pin', () => {
    const pinned = { ...joinConfig(), caCertHash: `sha256:${'0'.repeat(64)}` };
    expect(() => validateClusterInfo(data, pinned)).toThrow(/not the pinned sha256:0000/);
  });

  it('refuses cluster-info that is unsigned or signed with another token', () => {
    expect(() => validateClusterInfo({ kubeconfig: data.kubeconfig! }, joinConfig())).toThrow(/not signed/);
    const forged = {
      ...data,
      'jws-kubeconfig-abcdef': signDetachedJws(data.kubeconfig!, 'abcdef.ffffffffffffffff'),
    };
    expect(() => validateClusterInfo(forged, joinConfig())).toThrow(/does not match the bootstrap token/);
  });
});
