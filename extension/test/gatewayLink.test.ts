import assert from 'node:assert/strict';
import { AddressInfo } from 'node:net';
import { after, describe, it } from 'node:test';

import WebSocket, { WebSocketServer } from 'ws';

import { GatewayLink, GatewayError } from '../src/gatewayLink';
import { IGatewayLink, IGatewayStatus } from '../src/tokens';
import { startFakeGateway } from './fakeGateway';

const CLASSES = {
  h100: { runtimes: 1, capacity: 1, busy: 0, queued: 0, simulated: true },
  cpu: { runtimes: 1, capacity: 2, busy: 1, queued: 0, simulated: false }
};

type Handler = (socket: WebSocket, request: Record<string, unknown>) => void;

/** A scripted peer, for what no gateway does on purpose (close codes, silence): answers `classes` unless a test gives its own handler. */
async function scriptedPeer(port = 0, handler?: Handler): Promise<{ server: WebSocketServer; url: string }> {
  const server = new WebSocketServer({ host: '127.0.0.1', port });
  await new Promise<void>(resolve => server.once('listening', () => resolve()));
  server.on('connection', socket => {
    socket.on('message', raw => {
      const request = JSON.parse(String(raw)) as Record<string, unknown>;
      if (handler) {
        handler(socket, request);
      } else if (request['op'] === 'classes') {
        socket.send(JSON.stringify({ re: request['id'], ok: true, classes: CLASSES }));
      }
    });
  });
  const address = server.address() as AddressInfo;
  return { server, url: `ws://127.0.0.1:${address.port}` };
}

function close(server: WebSocketServer): Promise<void> {
  for (const client of server.clients) {
    client.terminate();
  }
  return new Promise(resolve => server.close(() => resolve()));
}

function until(client: IGatewayLink, predicate: (s: IGatewayStatus) => boolean, ms = 5000): Promise<IGatewayStatus> {
  if (predicate(client.status)) {
    return Promise.resolve(client.status);
  }
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`status stayed ${JSON.stringify(client.status)}`)), ms);
    const listener = (_: IGatewayLink, status: IGatewayStatus): void => {
      if (predicate(status)) {
        clearTimeout(timer);
        client.statusChanged.disconnect(listener);
        resolve(status);
      }
    };
    client.statusChanged.connect(listener);
  });
}

const clients: GatewayLink[] = [];
function connect(url: string, options: Partial<GatewayLink.IOptions> = {}): GatewayLink {
  const client = new GatewayLink({
    url: () => url,
    WebSocket: WebSocket as unknown as GatewayLink.WebSocketConstructor,
    initialBackoffMs: 20,
    maxBackoffMs: 100,
    ...options
  });
  clients.push(client);
  return client;
}
after(() => clients.forEach(c => c.dispose()));

describe('GatewayLink', () => {
  it('connects, asks for the classes and lists them sorted', async () => {
    const { server, url } = await scriptedPeer();
    const client = connect(url);
    assert.equal(client.status.state, 'connecting');
    const status = await until(client, s => s.state === 'connected');
    assert.deepEqual(
      status.classes.map(c => [c.name, c.capacity, c.busy, c.simulated]),
      [
        ['cpu', 2, 1, false],
        ['h100', 1, 0, true]
      ]
    );
    assert.equal(status.detail, '');
    client.dispose();
    await close(server);
  });

  it('speaks the protocol of the fake the contract suite holds to the real gateway', async () => {
    const fake = await startFakeGateway();
    try {
      const client = connect(fake.url);
      const status = await until(client, s => s.state === 'connected');
      assert.deepEqual(
        status.classes.map(c => [c.name, c.runtimes, c.capacity, c.simulated]),
        [['h100', 1, 2, true]]
      );
      await assert.rejects(client.request('run', { session: 's', gpu_class: 'a100', code: 'pass', snapshot: 'x' }), (e: unknown) => {
        assert.ok(e instanceof GatewayError);
        assert.equal(e.code, 'unknown_class');
        assert.match(e.message, /available now: h100/);
        return true;
      });
      client.dispose();
    } finally {
      await fake.stop();
    }
  });

  it('says the token was refused when the relay closes with 4401', async () => {
    const { server, url } = await scriptedPeer();
    server.on('connection', socket => socket.close(GatewayLink.CLOSE_TOKEN_REFUSED, 'the gateway refused the token'));
    const client = connect(url);
    const status = await until(client, s => s.state === 'refused');
    assert.equal(status.detail, 'the gateway refused the token');
    assert.deepEqual(status.classes, []);
    client.dispose();
    await close(server);
  });

  it('goes down when the gateway goes away and comes back by itself', async () => {
    const first = await scriptedPeer();
    const port = Number(new URL(first.url).port);
    const client = connect(first.url);
    await until(client, s => s.state === 'connected');
    await close(first.server);
    const down = await until(client, s => s.state === 'down');
    assert.deepEqual(down.classes, []);
    const second = await scriptedPeer(port);
    await until(client, s => s.state === 'connected');
    client.dispose();
    await close(second.server);
  });

  it('is down when nothing listens, and keeps retrying', async () => {
    const { server, url } = await scriptedPeer();
    await close(server);
    let attempts = 0;
    const client = connect(url, {
      url: () => {
        attempts++;
        return url;
      }
    });
    await until(client, s => s.state === 'down');
    await new Promise(resolve => setTimeout(resolve, 300));
    assert.ok(attempts >= 3, `only ${attempts} attempts`);
    client.dispose();
  });

  it("rejects a request with the gateway's error code", async () => {
    const { server, url } = await scriptedPeer(0, (socket, request) => {
      const error = { code: 'unknown_class', message: 'no class a100; available now: h100' };
      socket.send(JSON.stringify({ re: request['id'], event: 'queued', position: 0 }));
      socket.send(JSON.stringify({ re: request['id'], ok: request['op'] === 'classes', classes: CLASSES, error }));
    });
    const client = connect(url);
    await until(client, s => s.state === 'connected');
    await assert.rejects(client.request('run', { gpu_class: 'a100' }), (e: unknown) => {
      assert.ok(e instanceof GatewayError);
      assert.equal(e.code, 'unknown_class');
      assert.match(e.message, /available now: h100/);
      return true;
    });
    client.dispose();
    await close(server);
  });

  it('times out a request the gateway never answers, and rejects at once when not connected', async () => {
    let answer = true;
    const { server, url } = await scriptedPeer(0, (socket, request) => {
      if (answer) {
        socket.send(JSON.stringify({ re: request['id'], ok: true, classes: {} }));
      }
    });
    const client = connect(url, { requestTimeoutMs: 100 });
    await until(client, s => s.state === 'connected');
    answer = false;
    await assert.rejects(client.refresh(), (e: unknown) => e instanceof GatewayError && e.code === 'timeout');
    client.dispose();
    await assert.rejects(client.request('classes'), (e: unknown) => e instanceof GatewayError && e.code === 'not_connected');
    await close(server);
  });

  it('emits only when the state or the classes change', async () => {
    const { server, url } = await scriptedPeer();
    const client = connect(url, { pollIntervalMs: 20 });
    await until(client, s => s.state === 'connected');
    let emitted = 0;
    client.statusChanged.connect(() => emitted++);
    await new Promise(resolve => setTimeout(resolve, 200));
    assert.equal(emitted, 0);
    client.dispose();
    await close(server);
  });
});
