import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';

import { expect, test } from './fixtures';

const TOKEN = 'right-token';
const REPO = path.resolve(__dirname, '..', '..');

/**
 * The one fake of the WebSocket protocol (tests/support/kernelhop_fake_gateway.py, held to the real gateway by
 * tests/contract), as a process. The real gateway and runtime are exercised by the end-to-end browser test; this one
 * pins the extension's side.
 */
const withGateway = test.extend<object, { fakeGateway: { url: string } }>({
  fakeGateway: [
    async ({}, use) => {
      const venv = path.join(REPO, '.venv', 'bin', 'python');
      const python = process.env.KERNELHOP_PYTHON ?? (existsSync(venv) ? venv : 'python3');
      const script = path.join(REPO, 'tests', 'support', 'kernelhop_fake_gateway.py');
      const fake = spawn(python, [script, '--token', TOKEN, '--capacity', '1'], { stdio: ['pipe', 'pipe', 'inherit'] });
      const url = await new Promise<string>((resolve, reject) => {
        fake.once('exit', code => reject(new Error(`the fake gateway exited with ${code}`)));
        createInterface({ input: fake.stdout! }).once('line', resolve);
      });
      await use({ url });
      fake.stdin!.end();
      await new Promise<void>(resolve => (fake.exitCode !== null ? resolve() : fake.once('exit', () => resolve())));
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
