import { IncomingMessage } from 'node:http';
import { AddressInfo } from 'node:net';

import { WebSocketServer } from 'ws';

import { expect, test } from './fixtures';

const TOKEN = 'right-token';
const CLASSES = { h100: { runtimes: 1, capacity: 1, busy: 0, queued: 0, simulated: true } };

/**
 * A stand-in gateway speaking the `classes` op of docs/ARCHITECTURE.md, with its token check on the upgrade.
 * The real gateway and runtime are exercised by the end-to-end browser test; this one pins the extension's side.
 */
const withGateway = test.extend<object, { fakeGateway: { url: string } }>({
  fakeGateway: [
    async ({}, use) => {
      const server = new WebSocketServer({
        host: '127.0.0.1',
        port: 0,
        path: '/ws/v1',
        verifyClient: ({ req }: { req: IncomingMessage }) => req.headers.authorization === `Bearer ${TOKEN}`
      });
      await new Promise<void>(resolve => server.once('listening', () => resolve()));
      server.on('connection', socket => {
        socket.on('message', raw => {
          const request = JSON.parse(String(raw)) as { id: string; op: string };
          if (request.op === 'classes') {
            socket.send(JSON.stringify({ re: request.id, ok: true, classes: CLASSES }));
          }
        });
      });
      const { port } = server.address() as AddressInfo;
      await use({ url: `ws://127.0.0.1:${port}/ws/v1` });
      await new Promise<void>(resolve => server.close(() => resolve()));
    },
    { scope: 'worker' }
  ]
});

const rightToken = withGateway.extend({
  labEnv: [async ({ fakeGateway }, use) => use({ KERNELHOP_GATEWAY: fakeGateway.url, KERNELHOP_TOKEN: TOKEN }), { scope: 'worker' }]
});

const wrongToken = withGateway.extend({
  labEnv: [async ({ fakeGateway }, use) => use({ KERNELHOP_GATEWAY: fakeGateway.url, KERNELHOP_TOKEN: 'wrong' }), { scope: 'worker' }]
});

wrongToken('a wrong token shows as refused, not as down', async ({ page }) => {
  const item = page.locator('#kernelhop-status');
  await expect(item).toHaveText('kernelhop: token refused');
  await expect(item).toHaveAttribute('data-state', 'refused');
  await expect(item).toHaveAttribute('title', /KERNELHOP_TOKEN/);
  await page.sidebar.openTab('kernelhop-snapshots');
  await expect(page.getByRole('region', { name: 'kernelhop snapshots' })).toContainText('The gateway refused the token');
});

rightToken.describe('with the right token', () => {
  rightToken('the status lists the classes free now', async ({ page }) => {
    const item = page.locator('#kernelhop-status');
    await expect(item).toHaveText('kernelhop: local · h100 ×1 free (simulated)');
    await expect(item).toHaveAttribute('data-state', 'connected');
  });

  rightToken('Run on ▸ h100 makes the cell a %%gpu cell and runs it', async ({ page }) => {
    await page.notebook.createNew();
    await page.notebook.setCell(0, 'code', 'x = 1');
    await page.notebook.selectCells(0);
    await page.getByRole('button', { name: 'Run on', exact: true }).click();
    await page.locator('#kernelhop-run-on-menu').getByRole('menuitem', { name: /h100 ×1 free/ }).click();
    await expect.poll(() => page.notebook.getCellTextInput(0)).toBe('%%gpu h100\nx = 1');
    // The kernel ran it: without `%load_ext kernelhop` IPython says the magic is unknown, which proves it was sent.
    await expect(page.locator('.jp-Cell-outputArea').first()).toContainText('gpu');
  });
});
