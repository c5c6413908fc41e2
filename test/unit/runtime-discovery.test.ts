import { describe, expect, it } from 'vitest';
import { VindError } from '../../shared/errors.js';
import { resolveDockerEndpoint, type DiscoveryEnvironment } from '../../cli/runtime/discovery.js';

const HOME = '/home/ada';
// sha256 of the context names, as the Docker CLI names their folders ("desktop-linux" is Docker
// Desktop's own context, whose folder name is well known).
const COLIMA = 'f24fd3749c1368328e2b149bec149cb6795619f244c5b584e844961215dadd16';
const DESKTOP_LINUX = 'fe9c6bd7a66301f49ca9b6a70b217107cd1284598bfc254700c989b916da791e';

/** A machine with only the given environment variables, files and sockets. */
function machine(
  setup: { env?: Record<string, string>; files?: Record<string, string>; sockets?: string[] } = {},
): DiscoveryEnvironment {
  const files = setup.files ?? {};
  return {
    env: setup.env ?? {},
    homeDir: HOME,
    uid: 1000,
    readFile: (path) => files[path],
    isSocket: (path) => (setup.sockets ?? []).includes(path),
  };
}

function contextMeta(name: string, host: string, skipTlsVerify = false): string {
  return JSON.stringify({
    Name: name,
    Metadata: { Description: 'test' },
    Endpoints: { docker: { Host: host, SkipTLSVerify: skipTlsVerify } },
  });
}

function failure(environment: DiscoveryEnvironment): VindError {
  try {
    resolveDockerEndpoint(environment);
  } catch (error) {
    if (error instanceof VindError) return error;
    throw error;
  }
  throw new Error('discovery found an endpoint');
}

describe('DOCKER_HOST', () => {
  it('wins with a unix socket, whatever else exists', () => {
    const found = resolveDockerEndpoint(
      machine({
        env: { DOCKER_HOST: 'unix:///run/user/1000/docker.sock', DOCKER_CONTEXT: 'colima' },
        sockets: ['/var/run/docker.sock'],
      }),
    );
    expect(found).toEqual({
      endpoint: { socketPath: '/run/user/1000/docker.sock' },
      description: 'unix:///run/user/1000/docker.sock (DOCKER_HOST)',
      source: 'DOCKER_HOST',
      tried: [],
    });
  });

  it('takes the unix path as written, and rejects unix:// without one', () => {
    const at = (host: string) => resolveDockerEndpoint(machine({ env: { DOCKER_HOST: host } })).endpoint;
    expect(at('unix:///var/run/docker.sock')).toEqual({ socketPath: '/var/run/docker.sock' });
    expect(at('unix:///tmp/a b/docker.sock')).toEqual({ socketPath: '/tmp/a b/docker.sock' });
    expect(() => at('unix://')).toThrow(
      'DOCKER_HOST "unix://" names no socket: use unix:///path/to/docker.sock',
    );
  });

  it('reaches tcp without TLS over http, port 2375 by default', () => {
    const at = (host: string) => resolveDockerEndpoint(machine({ env: { DOCKER_HOST: host } }));
    expect(at('tcp://10.0.0.5:2375')).toMatchObject({
      endpoint: { protocol: 'http', host: '10.0.0.5', port: 2375 },
      description: 'tcp://10.0.0.5:2375 (DOCKER_HOST)',
    });
    expect(at('tcp://docker.example').endpoint).toEqual({
      protocol: 'http',
      host: 'docker.example',
      port: 2375,
    });
    expect(at('127.0.0.1:2400').endpoint).toEqual({ protocol: 'http', host: '127.0.0.1', port: 2400 });
    expect(at('tcp://[::1]:2375')).toMatchObject({
      endpoint: { host: '::1', port: 2375 },
      description: 'tcp://[::1]:2375 (DOCKER_HOST)',
    });
  });

  it('uses TLS with the files in DOCKER_CERT_PATH when DOCKER_TLS_VERIFY is set, port 2376 by default', () => {
    const found = resolveDockerEndpoint(
      machine({
        env: { DOCKER_HOST: 'tcp://docker.example', DOCKER_TLS_VERIFY: '1', DOCKER_CERT_PATH: '/certs' },
        files: { '/certs/ca.pem': 'CA', '/certs/cert.pem': 'CERT', '/certs/key.pem': 'KEY' },
      }),
    );
    expect(found.endpoint).toEqual({
      protocol: 'https',
      host: 'docker.example',
      port: 2376,
      ca: 'CA',
      cert: 'CERT',
      key: 'KEY',
    });
    expect(found.description).toBe('tcp://docker.example:2376 (DOCKER_HOST, TLS)');
  });

  it('reads the TLS files from ~/.docker (or DOCKER_CONFIG) without DOCKER_CERT_PATH, leaving out missing ones', () => {
    const env = { DOCKER_HOST: 'tcp://10.0.0.5:2376', DOCKER_TLS_VERIFY: '1' };
    const files = { [`${HOME}/.docker/ca.pem`]: 'CA', '/etc/docker-client/cert.pem': 'CERT' };
    expect(resolveDockerEndpoint(machine({ env, files })).endpoint).toEqual({
      protocol: 'https',
      host: '10.0.0.5',
      port: 2376,
      ca: 'CA',
    });
    expect(
      resolveDockerEndpoint(machine({ env: { ...env, DOCKER_CONFIG: '/etc/docker-client' }, files }))
        .endpoint,
    ).toEqual({ protocol: 'https', host: '10.0.0.5', port: 2376, cert: 'CERT' });
  });

  it('refuses npipe:// on Linux and other schemes, naming the value', () => {
    const error = (host: string) => failure(machine({ env: { DOCKER_HOST: host } })).message;
    expect(error('npipe:////./pipe/docker_engine')).toBe(
      'DOCKER_HOST "npipe:////./pipe/docker_engine" is a Windows named pipe (npipe://), which is not ' +
        'supported on Linux: use unix:// or tcp://',
    );
    expect(error('ssh://ada@build-box')).toBe(
      'DOCKER_HOST "ssh://ada@build-box" has the unsupported scheme ssh://: use unix:// or tcp://',
    );
    expect(error('tcp://docker.example:99999')).toBe(
      'DOCKER_HOST "tcp://docker.example:99999" is not a valid address: use tcp://host:port',
    );
  });

  it('counts an empty DOCKER_HOST as not set', () => {
    const found = resolveDockerEndpoint(
      machine({ env: { DOCKER_HOST: '' }, sockets: ['/var/run/docker.sock'] }),
    );
    expect(found.source).toBe('default socket');
    expect(found.tried[0]).toBe('DOCKER_HOST is not set');
  });
});

describe('Docker context', () => {
  it('reads the meta file in the folder named by the sha256 of the context name', () => {
    const found = resolveDockerEndpoint(
      machine({
        env: { DOCKER_CONTEXT: 'colima' },
        files: {
          [`${HOME}/.docker/contexts/meta/${COLIMA}/meta.json`]: contextMeta(
            'colima',
            `unix://${HOME}/.colima/default/docker.sock`,
          ),
        },
        sockets: ['/var/run/docker.sock'],
      }),
    );
    expect(found).toEqual({
      endpoint: { socketPath: `${HOME}/.colima/default/docker.sock` },
      description: `unix://${HOME}/.colima/default/docker.sock (context "colima")`,
      source: 'Docker context',
      tried: ['DOCKER_HOST is not set'],
    });
  });

  it("takes config.json's currentContext, under DOCKER_CONFIG when set", () => {
    const files = {
      '/cfg/config.json': JSON.stringify({ auths: {}, currentContext: 'desktop-linux' }),
      [`/cfg/contexts/meta/${DESKTOP_LINUX}/meta.json`]: contextMeta(
        'desktop-linux',
        `unix://${HOME}/.docker/desktop/docker.sock`,
      ),
    };
    const found = resolveDockerEndpoint(machine({ env: { DOCKER_CONFIG: '/cfg' }, files }));
    expect(found.endpoint).toEqual({ socketPath: `${HOME}/.docker/desktop/docker.sock` });
    expect(found.description).toBe(`unix://${HOME}/.docker/desktop/docker.sock (context "desktop-linux")`);
  });

  it('prefers DOCKER_CONTEXT to currentContext', () => {
    const files = {
      [`${HOME}/.docker/config.json`]: JSON.stringify({ currentContext: 'desktop-linux' }),
      [`${HOME}/.docker/contexts/meta/${COLIMA}/meta.json`]: contextMeta('colima', 'unix:///colima.sock'),
      [`${HOME}/.docker/contexts/meta/${DESKTOP_LINUX}/meta.json`]: contextMeta(
        'desktop-linux',
        'unix:///d.sock',
      ),
    };
    const found = resolveDockerEndpoint(machine({ env: { DOCKER_CONTEXT: 'colima' }, files }));
    expect(found.endpoint).toEqual({ socketPath: '/colima.sock' });
  });

  it('uses TLS over tcp when the context has TLS files', () => {
    const tls = `${HOME}/.docker/contexts/tls/${COLIMA}/docker`;
    const found = resolveDockerEndpoint(
      machine({
        env: { DOCKER_CONTEXT: 'colima' },
        files: {
          [`${HOME}/.docker/contexts/meta/${COLIMA}/meta.json`]: contextMeta('colima', 'tcp://10.0.0.9:2376'),
          [`${tls}/ca.pem`]: 'CA',
          [`${tls}/cert.pem`]: 'CERT',
          [`${tls}/key.pem`]: 'KEY',
        },
      }),
    );
    expect(found.endpoint).toEqual({
      protocol: 'https',
      host: '10.0.0.9',
      port: 2376,
      ca: 'CA',
      cert: 'CERT',
      key: 'KEY',
    });
    expect(found.description).toBe('tcp://10.0.0.9:2376 (context "colima", TLS)');
  });

  it('uses plain http without TLS files, and TLS without verification when SkipTLSVerify is set', () => {
    const meta = `${HOME}/.docker/contexts/meta/${COLIMA}/meta.json`;
    const at = (content: string) =>
      resolveDockerEndpoint(machine({ env: { DOCKER_CONTEXT: 'colima' }, files: { [meta]: content } }));
    expect(at(contextMeta('colima', 'tcp://10.0.0.9')).endpoint).toEqual({
      protocol: 'http',
      host: '10.0.0.9',
      port: 2375,
    });
    const skipping = at(contextMeta('colima', 'tcp://10.0.0.9', true));
    expect(skipping.endpoint).toEqual({
      protocol: 'https',
      host: '10.0.0.9',
      port: 2376,
      skipTlsVerify: true,
    });
    expect(skipping.description).toBe('tcp://10.0.0.9:2376 (context "colima", TLS without verification)');
  });

  it('falls through to the sockets for the context "default", named in either place', () => {
    for (const setup of [
      { env: { DOCKER_CONTEXT: 'default' } },
      { files: { [`${HOME}/.docker/config.json`]: JSON.stringify({ currentContext: 'default' }) } },
    ]) {
      const found = resolveDockerEndpoint(machine({ ...setup, sockets: ['/var/run/docker.sock'] }));
      expect(found).toEqual({
        endpoint: { socketPath: '/var/run/docker.sock' },
        description: 'unix:///var/run/docker.sock (default socket)',
        source: 'default socket',
        tried: ['DOCKER_HOST is not set', 'context "default"'],
      });
    }
  });

  it('falls through when config.json sets no context or is not JSON', () => {
    const tried = (config: string) =>
      resolveDockerEndpoint(
        machine({ files: { [`${HOME}/.docker/config.json`]: config }, sockets: ['/var/run/docker.sock'] }),
      ).tried[1];
    expect(tried('{"auths":{}}')).toBe('no Docker context set');
    expect(tried('{ not json')).toBe(`${HOME}/.docker/config.json is not valid JSON`);
  });

  it('fails, naming the context, when a named context has no meta file', () => {
    const meta = `${HOME}/.docker/contexts/meta/${COLIMA}/meta.json`;
    expect(
      failure(machine({ env: { DOCKER_CONTEXT: 'colima' }, sockets: ['/var/run/docker.sock'] })).message,
    ).toBe(
      `Docker context "colima" (from DOCKER_CONTEXT) does not exist: ${meta} is missing; ` +
        'see `docker context ls`, and pick one with `docker context use`',
    );
    const fromConfig = failure(
      machine({ files: { [`${HOME}/.docker/config.json`]: '{"currentContext":"colima"}' } }),
    );
    expect(fromConfig.message).toContain(
      `Docker context "colima" (from ${HOME}/.docker/config.json) does not exist`,
    );
  });

  it('fails when the meta file is not JSON, has no Docker host, or names an unsupported scheme', () => {
    const meta = `${HOME}/.docker/contexts/meta/${COLIMA}/meta.json`;
    const error = (content: string) =>
      failure(machine({ env: { DOCKER_CONTEXT: 'colima' }, files: { [meta]: content } })).message;
    expect(error('{')).toBe(`Docker context "colima" is unreadable: ${meta} is not valid JSON`);
    expect(error('{"Name":"colima","Endpoints":{}}')).toBe(
      `Docker context "colima" has no Docker endpoint: ${meta} sets no Endpoints.docker.Host`,
    );
    expect(error(contextMeta('colima', 'ssh://ada@build-box'))).toBe(
      'Docker context "colima" endpoint "ssh://ada@build-box" has the unsupported scheme ssh://: use unix:// or tcp://',
    );
  });
});

describe('sockets', () => {
  const allSockets = [
    '/var/run/docker.sock',
    '/run/user/1000/docker.sock',
    `${HOME}/.docker/run/docker.sock`,
    `${HOME}/.docker/desktop/docker.sock`,
  ];

  it('tries rootful, rootless, then Docker Desktop, taking the first that exists', () => {
    const expected = [
      ['/var/run/docker.sock', 'default socket'],
      ['/run/user/1000/docker.sock', 'rootless socket'],
      [`${HOME}/.docker/run/docker.sock`, 'Docker Desktop socket'],
      [`${HOME}/.docker/desktop/docker.sock`, 'Docker Desktop socket'],
    ];
    expected.forEach(([path, source], index) => {
      const found = resolveDockerEndpoint(machine({ sockets: allSockets.slice(index) }));
      expect(found.endpoint).toEqual({ socketPath: path });
      expect(found.source).toBe(source);
      expect(found.description).toBe(`unix://${path} (${source})`);
      expect(found.tried).toEqual([
        'DOCKER_HOST is not set',
        'no Docker context set',
        ...allSockets.slice(0, index).map((skipped) => `${skipped} does not exist`),
      ]);
    });
  });

  it('finds the rootless socket in XDG_RUNTIME_DIR when set', () => {
    const found = resolveDockerEndpoint(
      machine({ env: { XDG_RUNTIME_DIR: '/run/user/4242' }, sockets: ['/run/user/4242/docker.sock'] }),
    );
    expect(found.endpoint).toEqual({ socketPath: '/run/user/4242/docker.sock' });
    expect(found.source).toBe('rootless socket');
  });

  it('prefers a named context to a socket that exists', () => {
    const found = resolveDockerEndpoint(
      machine({
        env: { DOCKER_CONTEXT: 'colima' },
        files: {
          [`${HOME}/.docker/contexts/meta/${COLIMA}/meta.json`]: contextMeta('colima', 'unix:///c.sock'),
        },
        sockets: allSockets,
      }),
    );
    expect(found.source).toBe('Docker context');
  });
});

describe('when nothing applies', () => {
  it('throws one VindError line listing every attempt', () => {
    const error = failure(machine({ env: { DOCKER_CONTEXT: 'default' } }));
    expect(error).toBeInstanceOf(VindError);
    expect(error.message).toBe(
      'Docker is not reachable: DOCKER_HOST is not set; context "default"; ' +
        '/var/run/docker.sock does not exist; /run/user/1000/docker.sock does not exist; ' +
        `${HOME}/.docker/run/docker.sock does not exist; ${HOME}/.docker/desktop/docker.sock does not exist: ` +
        'start Docker (sudo systemctl start docker), or set DOCKER_HOST or a Docker context',
    );
    expect(error.message).not.toContain('\n');
  });
});
