import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { connectionTokens, isHopByHop } from '../../shared/index.js';

describe('hop-by-hop headers', () => {
  test('the RFC 9110 set, Proxy-* and whatever Connection names', () => {
    const listed = connectionTokens(['close, X-Secret', ' keep-alive ,,']);
    assert.deepEqual([...listed], ['close', 'x-secret', 'keep-alive']);
    for (const h of ['connection', 'keep-alive', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'proxy-authorization', 'proxy-connection', 'x-secret']) assert.equal(isHopByHop(h, listed), true, h);
    for (const h of ['content-type', 'content-length', 'authorization', 'host', 'x-forwarded-for']) assert.equal(isHopByHop(h, listed), false, h);
    assert.equal(connectionTokens(undefined).size, 0);
  });
});
