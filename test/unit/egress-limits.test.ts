import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { EgressLimits, TokenBucket, UNIDENTIFIED_PEER } from '../../host/egress/limits.js';

describe('TokenBucket', () => {
  it('allows the burst, then the rate', () => {
    const b = new TokenBucket(10, 3, 0);
    assert.deepEqual([b.take(0), b.take(0), b.take(0), b.take(0)], [true, true, true, false]);
    assert.equal(b.take(50), false, 'half a token after 50 ms');
    assert.equal(b.take(100), true, 'one token after 100 ms');
    assert.equal(b.take(10_000), true);
    assert.deepEqual([b.take(10_000), b.take(10_000), b.take(10_000)], [true, true, false], 'refill caps at the burst');
  });
  it('a clock going backwards adds nothing', () => {
    const b = new TokenBucket(1, 1, 1000);
    assert.equal(b.take(1000), true);
    assert.equal(b.take(0), false);
  });
});

describe('EgressLimits', () => {
  it('tunnels per VM, global concurrency, release', () => {
    const l = new EgressLimits({ maxTunnelsPerVm: 2, maxConcurrentTotal: 3, requestsPerSecondPerVm: 1000 });
    assert.equal(l.acquire('a', true), 'ok');
    assert.equal(l.acquire('a', true), 'ok');
    assert.equal(l.acquire('a', true), 'tunnel-limit');
    assert.equal(l.acquire('a', false), 'ok', 'plain requests do not count as tunnels');
    assert.equal(l.acquire('b', true), 'overloaded');
    l.release('a', false);
    assert.equal(l.acquire('b', true), 'ok');
    l.release('a', true);
    assert.equal(l.activeTunnels('a'), 1);
    assert.equal(l.active, 2);
  });
  it('rate per VM is independent, and unidentified peers share one budget', () => {
    const l = new EgressLimits({ requestsPerSecondPerVm: 1, requestBurstPerVm: 1 });
    assert.equal(l.take('a', 0), true);
    assert.equal(l.take('a', 1), false);
    assert.equal(l.take('b', 1), true);
    assert.equal(l.take('a', 1001), true);
    assert.equal(l.take(UNIDENTIFIED_PEER, 0), true);
    assert.equal(l.take(UNIDENTIFIED_PEER, 1), false);
  });
});
