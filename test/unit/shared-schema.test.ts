import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { type Problem, validateCreateVmRequest, validateManifest, validateVmConfig, workloadBaseUrl, workloadRelayTarget } from '../../shared/index.js';

const base = {
  name: 'hello',
  version: '0.1.0',
  workload: { type: 'http', entrypoint: ['/usr/bin/node', '/app/server.js'], http: { port: 3000 } },
};

function problemsOf(r: { ok: boolean; problems?: Problem[] }): Problem[] {
  assert.equal(r.ok, false, 'expected validation to fail');
  return r.problems!;
}

describe('validateManifest accepts the seed shapes', () => {
  test('minimal', () => {
    const r = validateManifest(base);
    assert.equal(r.ok, true);
  });
  test('full, with network', () => {
    const m = {
      ...base,
      network: { mode: 'bridged', subnet: '192.168.127.0/24', gateway: '192.168.127.1', auto_assign: true, proxy: { enabled: true, port: 3000, allow_outbound: true, allowed_domains: ['api.example.com', '*.example.net'] } },
      workload: { ...base.workload, env: { NODE_ENV: 'production' }, workdir: '/app', restart: 'on-failure' },
      health_check: { endpoint: '/healthz', timeout_ms: 5000 },
      resources: { cpu_cores: 2, memory_mb: 512 },
    };
    const r = validateManifest(m);
    assert.equal(r.ok, true, JSON.stringify(r));
  });
  test('the networking spelling is accepted and normalised to network', () => {
    const r = validateManifest({ ...base, networking: { mode: 'vsock', proxy: { allow_outbound: false } } });
    assert.equal(r.ok, true);
    if (r.ok) {
      assert.equal(r.value.network?.mode, 'vsock');
      assert.equal('networking' in r.value, false);
    }
  });
  test('workloadBaseUrl prefers base_url, else the port on loopback', () => {
    assert.equal(workloadBaseUrl(base as never), 'http://127.0.0.1:3000');
    assert.equal(workloadBaseUrl({ ...base, workload: { ...base.workload, http: { base_url: 'http://127.0.0.1:9000/' } } } as never), 'http://127.0.0.1:9000');
  });

  test('workloadRelayTarget: the relay serves a workload without a path prefix, never one with', () => {
    const withBase = (base_url: string) => ({ ...base, workload: { ...base.workload, http: { base_url } } }) as never;
    assert.deepEqual(workloadRelayTarget(base as never), { host: '127.0.0.1', port: 3000 });
    assert.deepEqual(workloadRelayTarget(withBase('http://127.0.0.1:9000/')), { host: '127.0.0.1', port: 9000 });
    assert.deepEqual(workloadRelayTarget(withBase('http://localhost')), { host: 'localhost', port: 80 });
    assert.deepEqual(workloadRelayTarget(withBase('http://[::1]:8000')), { host: '::1', port: 8000 });
    assert.equal(workloadRelayTarget(withBase('http://127.0.0.1:9000/app')), undefined, 'a prefix is added per request line: HTTP-aware path only');
    assert.equal(workloadRelayTarget({ ...base, workload: { type: 'exec', entrypoint: ['/bin/true'] } } as never), undefined);
  });
});

describe('validateManifest rejects with every problem and its path, never throwing', () => {
  const cases: [string, unknown, string[]][] = [
    ['not an object', 'hello', ['/']],
    ['null', null, ['/']],
    ['array', [], ['/']],
    ['missing name', { ...base, name: undefined }, ['/name']],
    ['bad name', { ...base, name: '../etc' }, ['/name']],
    ['name wrong type', { ...base, name: 7 }, ['/name']],
    ['unknown mode', { ...base, network: { mode: 'host' } }, ['/network/mode']],
    ['bad CIDR', { ...base, network: { subnet: '10.0.0.0/33' } }, ['/network/subnet']],
    ['CIDR garbage', { ...base, network: { subnet: 'abc' } }, ['/network/subnet']],
    ['gateway outside subnet', { ...base, network: { subnet: '10.0.0.0/24', gateway: '10.0.1.1' } }, ['/network/gateway']],
    ['gateway is the network address', { ...base, network: { subnet: '10.0.0.0/24', gateway: '10.0.0.0' } }, ['/network/gateway']],
    ['negative cpus', { ...base, resources: { cpu_cores: -1 } }, ['/resources/cpu_cores']],
    ['huge memory', { ...base, resources: { memory_mb: 1e12 } }, ['/resources/memory_mb']],
    ['fractional cpus', { ...base, resources: { cpu_cores: 1.5 } }, ['/resources/cpu_cores']],
    ['malformed domain rule', { ...base, network: { proxy: { allowed_domains: ['ok.example', 'api.*.example.com'] } } }, ['/network/proxy/allowed_domains/1']],
    ['domain rule with scheme', { ...base, network: { proxy: { allowed_domains: ['https://x.example'] } } }, ['/network/proxy/allowed_domains/0']],
    ['both spellings', { ...base, network: {}, networking: {} }, ['/networking']],
    ['unknown field', { ...base, netwrok: {} }, ['/netwrok']],
    ['empty entrypoint', { ...base, workload: { ...base.workload, entrypoint: [] } }, ['/workload/entrypoint']],
    ['env name injection', { ...base, workload: { ...base.workload, env: { 'A=B': 'x' } } }, ['/workload/env']],
    ['relative workdir', { ...base, workload: { ...base.workload, workdir: 'app' } }, ['/workload/workdir']],
    ['base_url not http', { ...base, workload: { ...base.workload, http: { base_url: 'file:///etc/passwd' } } }, ['/workload/http/base_url']],
    ['base_url with credentials', { ...base, workload: { ...base.workload, http: { base_url: 'http://u:p@127.0.0.1:3000' } } }, ['/workload/http/base_url']],
    ['http workload without target', { ...base, workload: { type: 'http', entrypoint: ['x'] } }, ['/workload/http']],
    ['restart policy', { ...base, workload: { ...base.workload, restart: 'sometimes' } }, ['/workload/restart']],
    ['proxy port out of range', { ...base, network: { proxy: { port: 70000 } } }, ['/network/proxy/port']],
    ['health endpoint relative', { ...base, health_check: { endpoint: 'healthz' } }, ['/health_check/endpoint']],
  ];
  for (const [what, input, paths] of cases) {
    test(what, () => {
      const problems = problemsOf(validateManifest(input));
      for (const p of paths) assert.ok(problems.some((q) => q.path.startsWith(p)), `expected a problem at ${p}, got ${JSON.stringify(problems)}`);
      for (const q of problems) assert.ok(q.message.length > 0);
    });
  }
  test('several problems are all reported', () => {
    const problems = problemsOf(validateManifest({ name: '', version: '', workload: {} }));
    assert.ok(problems.length >= 3, JSON.stringify(problems));
  });
  test('mode problems list the allowed values', () => {
    const problems = problemsOf(validateManifest({ ...base, network: { mode: 'host' } }));
    assert.match(problems[0]!.message, /vsock.*bridged.*dhcp/);
  });
  test('a deeply nested hostile object does not throw', () => {
    let deep: unknown = {};
    for (let i = 0; i < 5000; i++) deep = { a: deep };
    assert.equal(validateManifest({ ...base, labels: deep }).ok, false);
  });
});

describe('VM config', () => {
  test('accepts a full config', () => {
    const r = validateVmConfig({ plugin: 'hello', network: { mode: 'bridged' }, ip: '192.168.127.100', cpus: 2, memory_mb: 512, env: { A: '1' } });
    assert.equal(r.ok, true);
  });
  test('create request needs a valid name', () => {
    assert.equal(validateCreateVmRequest({ name: 'web', plugin: 'hello' }).ok, true);
    const problems = problemsOf(validateCreateVmRequest({ name: 'a b', plugin: 'hello' }));
    assert.equal(problems[0]!.path, '/name');
  });
  const bad: [string, unknown, string][] = [
    ['unknown mode', { plugin: 'p', network: { mode: 'nat' } }, '/network/mode'],
    ['bad ip', { plugin: 'p', ip: '192.168.127.300' }, '/ip'],
    ['ip with vsock', { plugin: 'p', ip: '192.168.127.100', network: { mode: 'vsock' } }, '/ip'],
    ['cpus zero', { plugin: 'p', cpus: 0 }, '/cpus'],
    ['cpus huge', { plugin: 'p', cpus: 100000 }, '/cpus'],
    ['memory as string', { plugin: 'p', memory_mb: '512' }, '/memory_mb'],
    ['memory too small', { plugin: 'p', memory_mb: 1 }, '/memory_mb'],
    ['plugin traversal', { plugin: '../../etc' }, '/plugin'],
    ['env value not string', { plugin: 'p', env: { A: 1 } }, '/env'],
    ['unknown key', { plugin: 'p', evil: true }, '/evil'],
  ];
  for (const [what, input, path] of bad) {
    test(what, () => {
      const problems = problemsOf(validateVmConfig(input));
      assert.ok(problems.some((p) => p.path.startsWith(path)), JSON.stringify(problems));
    });
  }
});
