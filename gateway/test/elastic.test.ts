// Elastic runtimes: the autoscaler asks a provider for a runtime when a run waits, gives it a one-time runtime token,
// and releases it (revoking the token) once idle, down to zero; the Kubernetes provider against a fake API server.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import { test } from 'node:test';
import { KubernetesProvider } from '../src/elastic/kubernetesProvider.js';
import { ProvidedRuntime, RuntimeProvider, RuntimeRequest } from '../src/elastic/provider.js';
import { FakeRuntime, TestClient, blob, snapshotOf, startTestGateway } from './helpers.js';

/** Starts each runtime in this process: a fake runtime that registers with the token it was given. */
class InProcessProvider implements RuntimeProvider {
  readonly kind = 'test';
  readonly asked: RuntimeRequest[] = [];
  readonly runtimes: FakeRuntime[] = [];
  released = 0;

  async provide(req: RuntimeRequest): Promise<ProvidedRuntime> {
    this.asked.push(req);
    const rt = new FakeRuntime(req.gateway, { name: req.name, classes: [req.gpuClass], capacity: 1, token: req.enrollmentToken });
    this.runtimes.push(rt);
    await rt.start();
    let end = (): void => undefined;
    const ended = new Promise<void>((r) => (end = r));
    return {
      ended,
      release: async () => {
        this.released += 1;
        rt.close();
        end();
      },
    };
  }
}

async function until(what: string, ok: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await ok())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

test('a waiting run brings up a runtime, which is released when idle; then it scales from zero again', async () => {
  const provider = new InProcessProvider();
  const t = await startTestGateway({
    elastic: {
      provider: { kind: 'command', command: 'unused' },
      classes: ['h100'],
      scaleUpAfterMs: 0,
      idleReleaseMs: 400,
      maxPerClass: 2,
      registerTimeoutMs: 10_000,
    },
    tuning: { provider, autoscaleTickMs: 50 },
  });
  const c = await TestClient.connect(t.gw.wsUrl);
  try {
    const classes = (await c.call({ op: 'classes' })).classes as Record<string, { runtimes: number }>;
    assert.equal(classes.h100.runtimes, 0, 'scaled to zero, the class is still served');
    for (let round = 1; round <= 2; round++) {
      const chunk = blob(`round ${round}`);
      const snap = snapshotOf([chunk]);
      await c.putBlobs([chunk, snap]);
      const id = c.id();
      c.send({ id, op: 'run', session: 's', gpu_class: 'h100', code: 'pass', snapshot: snap.digest, timeout_s: 0 });
      await until('a provided runtime', () => provider.runtimes.length === round);
      const rt = provider.runtimes[round - 1];
      const { assign } = await rt.nextMessage('assign');
      const [hash, size] = snap.digest.split('/');
      rt.event(assign.run_id, { done: { status: 'ok', snapshot: { hash, size_bytes: Number(size) }, timings_json: '{}' } });
      assert.equal((await c.untilFinal(id)).final.ok, true);
      assert.equal(provider.asked[round - 1].gpuClass, 'h100');
      assert.equal(provider.asked[round - 1].gateway, t.grpcAddress);
      await until('the idle runtime released', () => provider.released === round);
      const now = (await c.call({ op: 'classes' })).classes as Record<string, { runtimes: number }>;
      assert.equal(now.h100.runtimes, 0);
    }
    // Each provided runtime's token was its own and is revoked with it.
    const tokens = await t.gw.runtimeTokens.list();
    const elastic = tokens.filter((k) => k.gpuClass === 'h100');
    assert.equal(elastic.length, 2);
    assert.ok(elastic.every((k) => k.revokedAt !== null));
  } finally {
    c.close();
    for (const rt of provider.runtimes) rt.close();
    await t.stop();
  }
});

test("a provided runtime's token registers one runtime, once", async () => {
  const provider = new InProcessProvider();
  const t = await startTestGateway({
    elastic: {
      provider: { kind: 'command', command: 'unused' },
      classes: ['a100'],
      scaleUpAfterMs: 0,
      idleReleaseMs: 60_000,
      maxPerClass: 1,
      registerTimeoutMs: 10_000,
    },
    tuning: { provider, autoscaleTickMs: 50 },
  });
  const c = await TestClient.connect(t.gw.wsUrl);
  try {
    const chunk = blob('one');
    const snap = snapshotOf([chunk]);
    await c.putBlobs([chunk, snap]);
    c.send({ id: c.id(), op: 'run', session: 's', gpu_class: 'a100', code: 'pass', snapshot: snap.digest, timeout_s: 0 });
    await until('a provided runtime', () => provider.runtimes.length === 1);
    const copy = new FakeRuntime(t.grpcAddress, { name: 'copy', classes: ['a100'], capacity: 1, token: provider.asked[0].enrollmentToken });
    await assert.rejects(copy.start(), /registered already or was released/);
    copy.close();
  } finally {
    c.close();
    for (const rt of provider.runtimes) rt.close();
    await t.stop();
  }
});

test('the Kubernetes provider makes a Secret and a Pod from the template, and deletes both on release', async () => {
  const seen: Array<{ method: string; url: string; body: unknown }> = [];
  let phase = 'Pending';
  const api = http.createServer((req, res) => {
    let text = '';
    req.on('data', (d: Buffer) => (text += d.toString()));
    req.on('end', () => {
      const body = text === '' ? null : (JSON.parse(text) as unknown);
      seen.push({ method: req.method ?? '', url: req.url ?? '', body });
      res.writeHead(req.method === 'POST' ? 201 : 200, { 'Content-Type': 'application/json' });
      if (req.method === 'GET') res.end(JSON.stringify({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'x' }, status: { phase } }));
      else res.end(JSON.stringify(body ?? { kind: 'Status', status: 'Success' }));
    });
  });
  await new Promise<void>((r) => api.listen(0, '127.0.0.1', () => r()));
  const port = (api.address() as AddressInfo).port;
  const dir = (await import('node:fs')).mkdtempSync(path.join((await import('node:os')).tmpdir(), 'kernelhop-k8s-'));
  const kubeconfig = path.join(dir, 'kubeconfig');
  writeFileSync(
    kubeconfig,
    JSON.stringify({
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [{ name: 'fake', cluster: { server: `http://127.0.0.1:${port}`, 'insecure-skip-tls-verify': true } }],
      users: [{ name: 'u', user: { token: 'fake-token' } }],
      contexts: [{ name: 'c', context: { cluster: 'fake', user: 'u' } }],
      'current-context': 'c',
    }),
  );
  const template = path.join(dir, 'runtime-pod.yaml');
  writeFileSync(
    template,
    [
      'apiVersion: v1',
      'kind: Pod',
      'metadata:',
      '  labels: {team: ml}',
      'spec:',
      '  containers:',
      '    - name: runtime',
      '      image: registry.example/kernelhop:0.1.0',
      '      args: [runtime, --gateway, "$(KERNELHOP_GATEWAY)", --class, "$(KERNELHOP_CLASS)"]',
      '      resources: {limits: {nvidia.com/gpu: 1}}',
      '',
    ].join('\n'),
  );
  const provider = await KubernetesProvider.open({ templateFile: template, namespace: 'gpu', kubeconfig, pollMs: 50 }, () => undefined);
  const provided = await provider.provide({ gpuClass: 'h100', name: 'h100-elastic-1', gateway: 'gw.example:8732', enrollmentToken: 'khr_secret' });
  try {
    const [secret, pod] = seen;
    assert.equal(secret.method, 'POST');
    assert.equal(secret.url, '/api/v1/namespaces/gpu/secrets');
    const secretBody = secret.body as { metadata: { name: string }; stringData: { token: string } };
    assert.equal(secretBody.stringData.token, 'khr_secret');
    assert.equal(pod.url, '/api/v1/namespaces/gpu/pods');
    const podBody = pod.body as {
      metadata: { name: string; labels: Record<string, string> };
      spec: { restartPolicy: string; containers: Array<{ env: Array<{ name: string; value?: string; valueFrom?: unknown }>; resources: unknown; args: string[] }> };
    };
    assert.equal(podBody.metadata.name, secretBody.metadata.name);
    assert.match(podBody.metadata.name, /^h100-elastic-1-[0-9a-f]{6}$/);
    assert.equal(podBody.metadata.labels.team, 'ml', "the template's labels stay");
    assert.equal(podBody.metadata.labels['kernelhop.io/gpu-class'], 'h100');
    assert.equal(podBody.spec.restartPolicy, 'Never');
    const [container] = podBody.spec.containers;
    assert.deepEqual(container.resources, { limits: { 'nvidia.com/gpu': 1 } });
    const env = Object.fromEntries(container.env.map((e) => [e.name, e.value ?? e.valueFrom]));
    assert.equal(env.KERNELHOP_CLASS, 'h100');
    assert.equal(env.KERNELHOP_GATEWAY, 'gw.example:8732');
    assert.deepEqual(env.KERNELHOP_TOKEN, { secretKeyRef: { name: podBody.metadata.name, key: 'token' } }, 'the token is never in the Pod spec');
    assert.ok(!JSON.stringify(podBody).includes('khr_secret'));

    // A Pod that fails by itself ends the provided runtime.
    phase = 'Failed';
    await provided.ended;
    await provided.release();
    const deletes = seen.filter((r) => r.method === 'DELETE').map((r) => r.url);
    assert.deepEqual(deletes, [`/api/v1/namespaces/gpu/pods/${podBody.metadata.name}`, `/api/v1/namespaces/gpu/secrets/${podBody.metadata.name}`]);
  } finally {
    api.close();
  }
});

test('a provider whose runtimes never come up is asked again only after a back-off', async () => {
  let asked = 0;
  const failing: RuntimeProvider = {
    kind: 'test',
    provide: async () => {
      asked += 1;
      return { ended: Promise.resolve(), release: async () => undefined };
    },
  };
  const t = await startTestGateway({
    elastic: {
      provider: { kind: 'command', command: 'unused' },
      classes: ['h100'],
      scaleUpAfterMs: 0,
      idleReleaseMs: 60_000,
      maxPerClass: 4,
      registerTimeoutMs: 10_000,
    },
    tuning: { provider: failing, autoscaleTickMs: 20 },
  });
  const c = await TestClient.connect(t.gw.wsUrl);
  try {
    const chunk = blob('never runs');
    const snap = snapshotOf([chunk]);
    await c.putBlobs([chunk, snap]);
    c.send({ id: c.id(), op: 'run', session: 's', gpu_class: 'h100', code: 'pass', snapshot: snap.digest, timeout_s: 0 });
    await until('the provider asked', () => asked >= 1);
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(asked, 1, 'one runtime that ended at once; no retry within the back-off');
  } finally {
    c.close();
    await t.stop();
  }
});
