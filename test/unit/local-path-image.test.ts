import { describe, expect, it } from 'vitest';
import { helperImageFiles, parseAptShow } from '../../images/local-path.js';

const SHA = 'a'.repeat(64);

describe('the helper image from busybox-static', () => {
  it('reads the candidate version and SHA256 from the first stanza of apt-cache show', () => {
    const text = [
      'Package: busybox-static',
      'Version: 1:1.35.0-4+deb12u1+b1',
      'Filename: pool/main/b/busybox/busybox-static_1.35.0-4+deb12u1+b1_amd64.deb',
      `SHA256: ${SHA}`,
      '',
      'Package: busybox-static',
      'Version: 1:1.30.1-6',
      `SHA256: ${'b'.repeat(64)}`,
      '',
    ].join('\n');
    expect(parseAptShow('busybox-static', text)).toEqual({
      name: 'busybox-static',
      version: '1:1.35.0-4+deb12u1+b1',
      sha256: SHA,
    });
  });

  it('refuses what is not that package, or lacks a version or a well-formed SHA256', () => {
    expect(parseAptShow('busybox-static', '')).toBeUndefined();
    expect(parseAptShow('busybox-static', `Package: busybox\nVersion: 1\nSHA256: ${SHA}\n`)).toBeUndefined();
    expect(parseAptShow('busybox-static', `Package: busybox-static\nSHA256: ${SHA}\n`)).toBeUndefined();
    expect(
      parseAptShow('busybox-static', 'Package: busybox-static\nVersion: 1\nSHA256: xyz\n'),
    ).toBeUndefined();
  });

  it('links every applet to /bin/busybox, except busybox itself, and keeps the copyright', () => {
    const files = helperImageFiles(
      Buffer.from('ELF'),
      ['bin/sh', '/usr/bin/env', 'bin/busybox', ''],
      Buffer.from('GPL'),
    );
    expect(files.map((f) => [f.path, f.linkTarget])).toEqual([
      ['bin/busybox', undefined],
      ['bin/sh', '/bin/busybox'],
      ['usr/bin/env', '/bin/busybox'],
      ['usr/share/doc/busybox-static/copyright', undefined],
    ]);
    expect(files[0]!.mode).toBe(0o755);
  });
});
