import { describe, expect, it } from 'vitest';
import { generateKeyPair } from '../../vpn/keys.js';
import {
  WIREGUARD_OVERHEAD,
  checkCidr,
  checkEndpoint,
  checkInterfaceName,
  parseWgDump,
  peerArgs,
  wgSetArgs,
  wireGuardMtu,
} from '../../vpn/wireguard.js';

// `wg show wg0 dump` from wireguard-go v0.0.20220316 and wireguard-tools v1.0.20210914 in two node
// image containers (throwaway keys): the first side dialled the second with a preshared key and a
// keepalive, after a ping across; three more peers were added without a handshake, one with an IPv6
// endpoint, and an fwmark was set.
const DUMP_DIALLER = [
  'gNd0RC3vEQynjgvQG/LBlJEvWK3BR2n+T6RYC06ibmk=\tUKkxoml1dKp4Je+9NypYC1/Hxsd1EjmcfFoC1vOtFiY=\t51820\t0x1234',
  '+J4amSxmmBGXGH0h+Bfbjbx2/f5uk7t39wuk8I3ZWWQ=\tj+VVTX5GXZL5glr97i8AetoS9YKp2pvSj3bUeVcwPhc=\t172.22.0.3:51820\t10.123.0.2/32,fd12:3456::2/128\t1795372590\t476\t712\t25',
  'D1RZ/0ozrpBYDpsmdQ3AfNMhLYh2Ije1Mu+JKgoU0ls=\t(none)\t(none)\t10.123.9.0/24,10.123.10.0/24\t0\t0\t0\toff',
  '+vYqBTI3C9SFDiutLxwKsnXYmgNDX0O875qQxKzFtSQ=\t(none)\t(none)\t(none)\t0\t0\t0\toff',
  '60Xvvsqz+Xyq77trF8YFyOHGP7t4SZ7a/osiRPxP+Gg=\t(none)\t[fd00::99]:51820\t::/0\t0\t0\t0\t15',
  '',
].join('\n');

// The other side: it learnt the dialler's endpoint from its packets.
const DUMP_LISTENER = [
  'gFI1J1hnCQA6iI9u9RonZ9kEDWgcLjgo1Pr0pi+QCno=\t+J4amSxmmBGXGH0h+Bfbjbx2/f5uk7t39wuk8I3ZWWQ=\t51820\toff',
  'UKkxoml1dKp4Je+9NypYC1/Hxsd1EjmcfFoC1vOtFiY=\tj+VVTX5GXZL5glr97i8AetoS9YKp2pvSj3bUeVcwPhc=\t172.22.0.2:51820\t10.123.0.1/32\t1795372590\t564\t476\toff',
  '',
].join('\n');

// A wireguard-go interface right after it started: no key, a random port, no peers.
const DUMP_FRESH = '(none)\t(none)\t37250\toff\n';

describe('parseWgDump', () => {
  it('reads the interface and every kind of peer line', () => {
    const state = parseWgDump(DUMP_DIALLER);
    expect(state).toMatchObject({
      publicKey: 'UKkxoml1dKp4Je+9NypYC1/Hxsd1EjmcfFoC1vOtFiY=',
      listenPort: 51820,
      fwmark: 0x1234,
    });
    expect(state.peers).toEqual([
      {
        publicKey: '+J4amSxmmBGXGH0h+Bfbjbx2/f5uk7t39wuk8I3ZWWQ=',
        hasPresharedKey: true,
        endpoint: '172.22.0.3:51820',
        allowedIps: ['10.123.0.2/32', 'fd12:3456::2/128'],
        latestHandshake: new Date(1795372590 * 1000),
        rxBytes: 476,
        txBytes: 712,
        persistentKeepalive: 25,
      },
      {
        publicKey: 'D1RZ/0ozrpBYDpsmdQ3AfNMhLYh2Ije1Mu+JKgoU0ls=',
        hasPresharedKey: false,
        endpoint: undefined,
        allowedIps: ['10.123.9.0/24', '10.123.10.0/24'],
        latestHandshake: undefined,
        rxBytes: 0,
        txBytes: 0,
        persistentKeepalive: undefined,
      },
      {
        publicKey: '+vYqBTI3C9SFDiutLxwKsnXYmgNDX0O875qQxKzFtSQ=',
        hasPresharedKey: false,
        endpoint: undefined,
        allowedIps: [],
        latestHandshake: undefined,
        rxBytes: 0,
        txBytes: 0,
        persistentKeepalive: undefined,
      },
      {
        publicKey: '60Xvvsqz+Xyq77trF8YFyOHGP7t4SZ7a/osiRPxP+Gg=',
        hasPresharedKey: false,
        endpoint: '[fd00::99]:51820',
        allowedIps: ['::/0'],
        latestHandshake: undefined,
        rxBytes: 0,
        txBytes: 0,
        persistentKeepalive: 15,
      },
    ]);
  });

  it('reads the other side of the same tunnel', () => {
    const state = parseWgDump(DUMP_LISTENER);
    expect(state.fwmark).toBeUndefined();
    expect(state.peers).toHaveLength(1);
    expect(state.peers[0]).toMatchObject({
      publicKey: 'UKkxoml1dKp4Je+9NypYC1/Hxsd1EjmcfFoC1vOtFiY=',
      endpoint: '172.22.0.2:51820',
      rxBytes: 564,
      txBytes: 476,
      persistentKeepalive: undefined,
    });
  });

  it('reads an interface without a key or peers', () => {
    expect(parseWgDump(DUMP_FRESH)).toEqual({
      publicKey: undefined,
      listenPort: 37250,
      fwmark: undefined,
      peers: [],
    });
  });

  it('keeps neither the private key nor a preshared key', () => {
    const text = JSON.stringify(parseWgDump(DUMP_DIALLER));
    expect(text).not.toContain('gNd0RC3vEQynjgvQG');
    expect(text).not.toContain('j+VVTX5GXZL5glr97i8');
    expect(JSON.stringify(parseWgDump(DUMP_LISTENER))).not.toContain('gFI1J1hnCQA6iI9u9');
  });

  it('refuses what is not a one-interface dump, naming the line', () => {
    const all = DUMP_LISTENER.split('\n')
      .map((line) => (line ? `wg0\t${line}` : line))
      .join('\n');
    expect(() => parseWgDump(all)).toThrow(
      /line 1: expected 4 tab-separated fields, found 5.*wg show NAME dump/,
    );
    expect(() => parseWgDump('')).toThrow(/empty/);
    expect(() => parseWgDump(DUMP_LISTENER.replace('\t564\t', '\tmany\t'))).toThrow(
      /line 2: bytes received "many" is not a number/,
    );
  });
});

describe('wg set arguments', () => {
  const peer = generateKeyPair().publicKey;
  const other = generateKeyPair().publicKey;

  it('describes a peer completely, clearing what is not given', () => {
    expect(peerArgs({ publicKey: peer, allowedIps: ['10.99.0.2/32'] })).toEqual([
      'peer',
      peer,
      'preshared-key',
      '/dev/null',
      'persistent-keepalive',
      'off',
      'allowed-ips',
      '10.99.0.2/32',
    ]);
  });

  it('sets every field given, keys by file only', () => {
    expect(
      peerArgs({
        publicKey: peer,
        presharedKeyFile: '/run/wg/psk',
        allowedIps: ['10.99.0.2/32', 'fd00:99::2/128'],
        endpoint: '[fd00::7]:51820',
        persistentKeepalive: 25,
      }),
    ).toEqual([
      'peer',
      peer,
      'preshared-key',
      '/run/wg/psk',
      'endpoint',
      '[fd00::7]:51820',
      'persistent-keepalive',
      '25',
      'allowed-ips',
      '10.99.0.2/32,fd00:99::2/128',
    ]);
  });

  it('gives an empty allowed-ips to remove them all', () => {
    expect(peerArgs({ publicKey: peer, allowedIps: [] }).slice(-2)).toEqual(['allowed-ips', '']);
  });

  it('puts the interface, removals and peers in one command', () => {
    expect(
      wgSetArgs('wg0', {
        listenPort: 51820,
        privateKeyFile: '/var/lib/vind/wg/private.key',
        removePeers: [other],
        peers: [{ publicKey: peer, allowedIps: ['10.99.0.2/32'], endpoint: '192.0.2.7:51820' }],
      }),
    ).toEqual([
      'set',
      'wg0',
      'listen-port',
      '51820',
      'private-key',
      '/var/lib/vind/wg/private.key',
      'peer',
      other,
      'remove',
      'peer',
      peer,
      'preshared-key',
      '/dev/null',
      'endpoint',
      '192.0.2.7:51820',
      'persistent-keepalive',
      'off',
      'allowed-ips',
      '10.99.0.2/32',
    ]);
  });

  it('refuses a bad key, address, endpoint, port or name before anything runs', () => {
    expect(() => peerArgs({ publicKey: 'nope', allowedIps: [] })).toThrow(/not a WireGuard public key/);
    expect(() => peerArgs({ publicKey: peer, allowedIps: ['10.99.0.2'] })).toThrow(/allowed IP "10.99.0.2"/);
    expect(() => peerArgs({ publicKey: peer, allowedIps: [], endpoint: '10.0.0.1' })).toThrow(/host:port/);
    expect(() => peerArgs({ publicKey: peer, allowedIps: [], persistentKeepalive: 70000 })).toThrow(
      /persistent keepalive 70000/,
    );
    expect(() => wgSetArgs('wg0', { listenPort: -1 })).toThrow(/listen port -1/);
    // wireguard-go takes its first argument as the name: `--help` once became an interface.
    expect(() => wgSetArgs('--help', {})).toThrow(/not an interface name/);
  });
});

describe('checks', () => {
  it('interface names as Linux takes them', () => {
    for (const name of ['wg0', 'vind-wg', 'a.b_c=d+e', 'x'.repeat(15)])
      expect(() => checkInterfaceName(name)).not.toThrow();
    for (const name of ['', '-f', 'x'.repeat(16), 'wg 0', 'wg/0', '..']) {
      expect(() => checkInterfaceName(name)).toThrow(/not an interface name/);
    }
  });

  it('CIDRs of both families', () => {
    for (const cidr of ['10.99.0.1/32', '0.0.0.0/0', 'fd00:99::1/64', '::/0'])
      expect(() => checkCidr(cidr, 'x')).not.toThrow();
    for (const cidr of ['10.99.0.1', '10.99.0.1/33', 'fd00::/129', '10.99.0/24', 'x/8', '10.0.0.1/08']) {
      expect(() => checkCidr(cidr, 'x')).toThrow(/not an address with a prefix length/);
    }
  });

  it('endpoints', () => {
    for (const endpoint of ['192.0.2.7:51820', '[2001:db8::7]:51820', 'remote.example:1']) {
      expect(() => checkEndpoint(endpoint)).not.toThrow();
    }
    for (const endpoint of [
      '192.0.2.7',
      '2001:db8::7:51820',
      '[192.0.2.7]:1',
      '1.2.3:5',
      'h:0',
      'h:65536',
      ':1',
    ]) {
      expect(() => checkEndpoint(endpoint)).toThrow(/not host:port/);
    }
  });
});

describe('wireGuardMtu', () => {
  it('subtracts 80 bytes by default, as wg-quick does, so either outer family fits', () => {
    expect(WIREGUARD_OVERHEAD).toEqual({ ipv4: 60, ipv6: 80 });
    expect(wireGuardMtu(1500)).toBe(1420);
    expect(wireGuardMtu(1500, 'ipv6')).toBe(1420);
  });

  it('subtracts 60 bytes when the endpoints are reached over IPv4 only', () => {
    expect(wireGuardMtu(1500, 'ipv4')).toBe(1440);
    // A VXLAN or PPPoE underlay: the tunnel shrinks with it.
    expect(wireGuardMtu(1450)).toBe(1370);
    expect(wireGuardMtu(9000)).toBe(8920);
  });

  it('refuses an underlay too small to carry a useful tunnel, or not an MTU', () => {
    expect(wireGuardMtu(656)).toBe(576);
    expect(() => wireGuardMtu(655)).toThrow(/tunnel MTU of 575/);
    expect(() => wireGuardMtu(1500.5)).toThrow(/not an MTU/);
  });
});
