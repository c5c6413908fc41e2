import { describe, expect, it } from 'vitest';
import {
  clusterAddressPlan,
  contains,
  formatCidr,
  hostAddress,
  hostAddressOnBridge,
  intToIp,
  ipToInt,
  overlaps,
  parseCidr,
  pickClusterSubnet,
} from '../../shared/subnets.js';

describe('ipToInt and intToIp', () => {
  it('keeps addresses from 128.0.0.0 up positive', () => {
    expect(ipToInt('128.0.0.0')).toBe(2147483648);
    expect(ipToInt('255.255.255.255')).toBe(4294967295);
    expect(ipToInt('192.168.1.10')).toBe(3232235786);
    expect(intToIp(4294967295)).toBe('255.255.255.255');
    expect(intToIp(3232235786)).toBe('192.168.1.10');
    expect(intToIp(0)).toBe('0.0.0.0');
  });

  it('rejects what is not a dotted quad', () => {
    for (const bad of ['10.0.0', '10.0.0.256', '10.0.0.-1', '10.0.0.01', 'a.b.c.d', '10.0.0.0.0', '']) {
      expect(() => ipToInt(bad)).toThrow(`invalid IPv4 address "${bad}"`);
    }
    expect(() => intToIp(-1)).toThrow();
    expect(() => intToIp(2 ** 32)).toThrow();
  });
});

describe('parseCidr', () => {
  it('parses and formats back', () => {
    expect(parseCidr('10.244.0.0/16')).toEqual({ network: 0x0af40000, prefix: 16 });
    expect(formatCidr(parseCidr('192.168.128.0/17'))).toBe('192.168.128.0/17');
    expect(parseCidr('0.0.0.0/0')).toEqual({ network: 0, prefix: 0 });
    expect(parseCidr('255.255.255.255/32')).toEqual({ network: 4294967295, prefix: 32 });
  });

  it('names the network address when host bits are set', () => {
    expect(() => parseCidr('10.244.1.0/16')).toThrow(
      'invalid CIDR "10.244.1.0/16": 10.244.1.0 is not the network address of a /16; use 10.244.0.0/16',
    );
    expect(() => parseCidr('200.1.2.3/8')).toThrow('use 200.0.0.0/8');
  });

  it('rejects malformed text', () => {
    expect(() => parseCidr('10.244.0.0')).toThrow(
      'invalid CIDR "10.244.0.0": use an IPv4 network and a prefix length 0-32, e.g. 10.244.0.0/16',
    );
    expect(() => parseCidr('10.244.0.0/33')).toThrow('prefix length 0-32');
    expect(() => parseCidr('10.244.0.0/016')).toThrow('prefix length 0-32');
    expect(() => parseCidr('10.300.0.0/16')).toThrow(
      'invalid CIDR "10.300.0.0/16": "10.300.0.0" is not an IPv4',
    );
    expect(() => parseCidr('fd00::/8')).toThrow('invalid CIDR');
  });
});

describe('overlaps and contains', () => {
  const cidr = parseCidr;

  it('does not count adjacent blocks as overlapping', () => {
    expect(overlaps(cidr('10.0.0.0/24'), cidr('10.0.1.0/24'))).toBe(false);
    expect(overlaps(cidr('10.0.0.0/25'), cidr('10.0.0.128/25'))).toBe(false);
    expect(overlaps(cidr('127.255.255.0/24'), cidr('128.0.0.0/24'))).toBe(false);
  });

  it('counts nested and equal blocks as overlapping, either way round', () => {
    expect(overlaps(cidr('10.0.0.0/8'), cidr('10.210.3.0/24'))).toBe(true);
    expect(overlaps(cidr('10.210.3.0/24'), cidr('10.0.0.0/8'))).toBe(true);
    expect(overlaps(cidr('172.30.0.0/24'), cidr('172.30.0.0/24'))).toBe(true);
    expect(overlaps(cidr('0.0.0.0/0'), cidr('203.0.113.0/24'))).toBe(true);
    expect(overlaps(cidr('192.168.0.0/16'), cidr('192.169.0.0/16'))).toBe(false);
  });

  it('tells whether an address is inside', () => {
    expect(contains(cidr('172.30.5.0/24'), '172.30.5.255')).toBe(true);
    expect(contains(cidr('172.30.5.0/24'), '172.30.6.0')).toBe(false);
    expect(contains(cidr('224.0.0.0/4'), '239.255.255.255')).toBe(true);
    expect(contains(cidr('224.0.0.0/4'), '240.0.0.0')).toBe(false);
  });
});

describe('hostAddress', () => {
  it('counts from the network address', () => {
    expect(hostAddress(parseCidr('172.30.7.0/24'), 1)).toBe('172.30.7.1');
    expect(hostAddress(parseCidr('10.96.0.0/16'), 256 + 10)).toBe('10.96.1.10');
    expect(hostAddress(parseCidr('192.168.255.0/24'), 255)).toBe('192.168.255.255');
  });

  it('throws outside the subnet', () => {
    expect(() => hostAddress(parseCidr('172.30.7.0/24'), 256)).toThrow(
      'address index 256 is outside 172.30.7.0/24 (0 to 255)',
    );
    expect(() => hostAddress(parseCidr('172.30.7.0/24'), -1)).toThrow('outside');
    expect(() => hostAddress(parseCidr('172.30.7.0/24'), 1.5)).toThrow('outside');
  });
});

describe('pickClusterSubnet', () => {
  it('takes the first /24 of the pool when nothing is taken', () => {
    expect(pickClusterSubnet([])).toBe('172.30.0.0/24');
  });

  it('skips taken /24s and ranges that overlap partly', () => {
    expect(pickClusterSubnet(['172.30.0.0/24', '172.30.1.0/24'])).toBe('172.30.2.0/24');
    expect(pickClusterSubnet(['172.30.0.0/23', '172.30.2.128/25'])).toBe('172.30.3.0/24');
  });

  it('skips a taken /16 that covers a whole candidate block', () => {
    expect(pickClusterSubnet(['172.30.0.0/16'])).toBe('172.31.0.0/24');
    expect(pickClusterSubnet(['172.16.0.0/12'])).toBe('10.210.0.0/24');
  });

  it('skips every 10.x block under a taken 10.0.0.0/8', () => {
    const taken = ['172.30.0.0/16', '172.31.0.0/16', '10.0.0.0/8'];
    expect(() => pickClusterSubnet(taken)).toThrow(/^no free \/24 /);
    expect(pickClusterSubnet(['172.16.0.0/12', '10.210.0.0/15'])).toBe('10.212.0.0/24');
  });

  it('reads Docker subnets with host bits and ignores IPv6 ones', () => {
    expect(pickClusterSubnet(['172.30.0.1/24', 'fd00:1::/64', '172.30.1.5'])).toBe('172.30.2.0/24');
  });

  it('avoids the cluster pod and service subnets too', () => {
    expect(pickClusterSubnet(['10.244.0.0/16', '10.96.0.0/12', '172.30.0.0/17'])).toBe('172.30.128.0/24');
  });
});

describe('clusterAddressPlan', () => {
  it('lays out a /24', () => {
    const plan = clusterAddressPlan('172.30.4.0/24');
    expect(plan.gateway).toBe('172.30.4.1');
    expect(plan.controlPlane).toBe('172.30.4.2');
    expect(plan.worker(0)).toBe('172.30.4.3');
    expect(plan.worker(99)).toBe('172.30.4.102');
    expect(plan.dynamicRange).toBe('172.30.4.112/28');
    expect(plan.loadBalancerRange()).toEqual({ first: '172.30.4.128', last: '172.30.4.254' });
    expect(plan.loadBalancerRange(200, 201)).toEqual({ first: '172.30.4.200', last: '172.30.4.201' });
    expect(() => plan.loadBalancerRange(100, 201)).toThrow('outside 128-254');
  });

  it('refuses more than 100 workers and subnets that are not a /24', () => {
    const plan = clusterAddressPlan('10.219.255.0/24');
    expect(() => plan.worker(100)).toThrow('worker index 100 is outside 0 to 99');
    expect(() => plan.worker(-1)).toThrow('outside');
    expect(() => clusterAddressPlan('172.30.0.0/23')).toThrow('cluster subnet 172.30.0.0/23 must be a /24');
    expect(() => clusterAddressPlan('172.30.0.5/24')).toThrow('not the network address');
  });
});

describe('hostAddressOnBridge', () => {
  it('takes the gateway Docker reports', () => {
    expect(hostAddressOnBridge({ subnet: '172.17.0.0/16', gateway: '172.17.0.1', bridgeAddresses: [] })).toBe(
      '172.17.0.1',
    );
  });

  it("reads the bridge interface when a fresh engine reports no gateway (docker0's own address)", () => {
    expect(
      hostAddressOnBridge({ subnet: '172.17.0.0/16', bridgeAddresses: ['172.17.42.1', '10.0.0.9'] }),
    ).toBe('172.17.42.1');
  });

  it('ignores interface addresses outside the subnet, then falls back to its first address', () => {
    expect(hostAddressOnBridge({ subnet: '172.30.5.0/24', bridgeAddresses: ['10.0.0.9'] })).toBe(
      '172.30.5.1',
    );
    expect(hostAddressOnBridge({ subnet: '172.30.5.0/24', bridgeAddresses: [] })).toBe('172.30.5.1');
  });

  it('takes a subnet that Docker lists with host bits as its whole block', () => {
    expect(hostAddressOnBridge({ subnet: '172.17.0.1/16', bridgeAddresses: [] })).toBe('172.17.0.1');
  });

  it('refuses an IPv6-only subnet', () => {
    expect(() => hostAddressOnBridge({ subnet: 'fd00::/64', bridgeAddresses: [] })).toThrow(/not IPv4/);
  });
});
