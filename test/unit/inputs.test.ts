import { describe, expect, it } from 'vitest';
import { inputsHash, shortHash } from '../../images/inputs.js';
import { nodeCommandLines, nodeDockerfile } from '../../images/node-dockerfile.js';

describe('inputsHash', () => {
  it('does not depend on the order the parts are given in', () => {
    expect(inputsHash({ a: '1', b: '2' })).toBe(inputsHash({ b: '2', a: '1' }));
  });

  it('changes when any part changes', () => {
    const base = inputsHash({ kubernetes: 'v1.36.3', agent: 'code' });
    expect(inputsHash({ kubernetes: 'v1.36.2', agent: 'code' })).not.toBe(base);
    expect(inputsHash({ kubernetes: 'v1.36.3', agent: 'code!' })).not.toBe(base);
  });

  it('tells apart text moved from one part to another', () => {
    expect(inputsHash({ a: 'xy', b: '' })).not.toBe(inputsHash({ a: 'x', b: 'y' }));
  });

  it('hashes buffers like the same text', () => {
    expect(inputsHash({ a: Buffer.from('text') })).toBe(inputsHash({ a: 'text' }));
  });

  it('gives a short form of 12 hex digits', () => {
    expect(shortHash(inputsHash({ a: '1' }))).toMatch(/^[0-9a-f]{12}$/);
  });
});

describe('nodeDockerfile', () => {
  it('builds on the given base and starts node-agent under tini', () => {
    const text = nodeDockerfile('vind/base:bookworm-abc');
    expect(text.split('\n')[0]).toBe('FROM vind/base:bookworm-abc');
    expect(text).toMatch(/ENTRYPOINT \["\/usr\/bin\/tini", "--", "\/usr\/bin\/node"/);
  });

  it('leaves the preloaded archives out, and names the command the seed commit restores', () => {
    const lines = nodeDockerfile('vind/base:bookworm-abc').split('\n');
    expect(lines.filter((line) => line.includes('/opt/vind/images'))).toEqual([]);
    expect(lines).toEqual(expect.arrayContaining(nodeCommandLines()));
    expect(nodeCommandLines()).toEqual([
      'ENTRYPOINT ["/usr/bin/tini", "--", "/usr/bin/node", "/opt/vind/node-agent.mjs"]',
      'CMD ["worker"]',
    ]);
  });
});
