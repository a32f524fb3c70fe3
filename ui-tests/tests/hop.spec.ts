import { execFile } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

import { IJupyterLabPageFixture } from '@jupyterlab/galata';
import WebSocket from 'ws';

import { expect, IStack, test } from './stack';

const STATUS = '#kernelhop-status';

/** One request to the gateway as the admin (the token the Jupyter server uses). */
async function adminRequest(stack: IStack, body: Record<string, unknown>): Promise<Record<string, unknown>> {
  const socket = new WebSocket(stack.wsUrl, { headers: { Authorization: `Bearer ${stack.token}` } });
  await new Promise((resolve, reject) => socket.once('open', resolve).once('error', reject));
  try {
    socket.send(JSON.stringify({ id: '1', ...body }));
    const reply = await new Promise<Record<string, unknown>>(resolve =>
      socket.on('message', raw => {
        const message = JSON.parse(String(raw)) as Record<string, unknown>;
        if (message['re'] === '1' && 'ok' in message) {
          resolve(message);
        }
      })
    );
    expect(reply['ok']).toBe(true);
    return reply;
  } finally {
    socket.close();
  }
}

/** The text output of a cell of the active notebook (other notebooks' cells stay in the DOM, hidden). */
async function output(page: IJupyterLabPageFixture, cell: number): Promise<string> {
  return ((await page.notebook.getCellTextOutput(cell)) ?? []).join('');
}

/**
 * Against a real gateway and runtime (tests/stack.ts): the runtime poses as h100 on this CPU, so a `%%gpu h100` cell
 * really captures, uploads, runs in a worker and comes home.
 */
test('a %%gpu cell shows its progress, the status bar follows the hop, and the cost is counted', async ({ page }) => {
  const status = page.locator(STATUS);
  await expect(status).toHaveText('kernelhop: local · h100 ×1 free (simulated)');

  await page.notebook.createNew();
  // 48 MiB of state: the upload and the runtime's fetch take long enough to be seen.
  await page.notebook.setCell(0, 'code', '%load_ext kernelhop\nimport numpy as np\nx = np.random.rand(6_000_000)');
  await page.notebook.runCell(0, true);
  await page.notebook.addCell('code', "%%gpu h100\ny = float(x.sum())\nprint('ran remotely')");
  await page.notebook.runCell(1, { inplace: true, wait: false });

  // While the hop moves: the status bar names the class and the step, the cell shows a progress bar.
  await expect(status).toHaveAttribute('data-hop', /^(capture|upload|queued|fetch|run|return|home)$/);
  await expect(status).toHaveText(/^kernelhop: h100.*: (capturing|uploading|waiting|restoring|running|sending|bringing)/);
  const display = page.locator('.kernelhop-Hop');
  await expect(display.getByRole('progressbar')).toBeVisible();

  // Done: the time split in the cell and in the status bar, and the notebook's GPU time.
  await expect(display).toHaveAttribute('data-phase', 'done', { timeout: 60000 });
  await expect(status).toHaveAttribute('data-hop', 'none');
  await expect(status).toHaveAttribute('title', /Last hop: h100 on runtime \S+ \(simulated\), [\d.]+ s: capture/);
  await expect(status).toHaveText(
    /^kernelhop: local · last hop [\d.]+ s: capture [\d.]+ · upload [\d.]+ · queue [\d.]+ · restore [\d.]+ · run [\d.]+ · return [\d.]+ · notebook [\d.]+ GPU-s · h100 ×1 free \(simulated\)$/
  );
  await expect(display.getByRole('img', { name: /^time split in seconds: capture/ })).toBeVisible();
  await expect(display.getByRole('progressbar')).toHaveCount(0);
  await expect.poll(() => output(page, 1)).toContain('ran remotely');

  // The cost meter: in the notebook's metadata, per cell and in total.
  const ledger = await page.evaluate(() => {
    const app = (window as unknown as { jupyterapp: { shell: { currentWidget: { model: { getMetadata(k: string): unknown } } } } }).jupyterapp;
    return app.shell.currentWidget.model.getMetadata('kernelhop') as { total: number; cells: Record<string, number> };
  });
  expect(ledger.total).toBeGreaterThan(0);
  expect(Object.values(ledger.cells)).toEqual([ledger.total]);

  // And the value came home.
  await page.notebook.addCell('code', 'print(y > 0)');
  await page.notebook.runCell(2, true);
  await expect.poll(() => output(page, 2)).toContain('True');
});

test('the snapshot panel lists the history, diffs two, restores one and forks one into a new notebook', async ({ page }) => {
  const first = await page.notebook.createNew();
  await page.notebook.setCell(0, 'code', "%load_ext kernelhop\na = 1\n%snapshot save -m one");
  await page.notebook.runCell(0, true);
  await page.notebook.addCell('code', "a = 2\nb = 'new'\n%snapshot save -m two");
  await page.notebook.runCell(1, true);
  await expect.poll(() => output(page, 1)).toContain('saved snapshot');

  await page.sidebar.openTab('kernelhop-snapshots');
  const panel = page.getByRole('region', { name: 'kernelhop snapshots' });
  const history = panel.getByRole('region', { name: /^History of / });
  await expect(history.getByRole('listitem')).toHaveCount(2);
  const one = history.getByRole('listitem').filter({ hasText: 'one' });
  const two = history.getByRole('listitem').filter({ hasText: 'two' });
  await expect(panel.getByRole('region', { name: 'Shared with me' })).toContainText('Nothing shared with you.');

  // Diff: select both (keyboard: a checkbox toggles with Space), then compare older → newer.
  await one.getByRole('checkbox').focus();
  await page.keyboard.press('Space');
  await two.getByRole('checkbox').check();
  await panel.getByRole('button', { name: 'Diff the two selected' }).click();
  const diff = panel.getByLabel('Diff of the selected snapshots');
  await expect(diff).toContainText('1 added, 1 changed, 0 removed');
  await expect(diff).toContainText('+ b');
  await expect(diff).toContainText('~ a');
  await page.mouse.move(0, 0); // no hover highlight in the picture
  await expect(panel).toHaveScreenshot('snapshot-panel.png', {
    mask: [panel.locator('.kernelhop-Snapshots-label'), diff],
    maskColor: '#888'
  });

  // Restore the first: the kernel's state is the snapshot's again (b did not exist then).
  await one.getByRole('button', { name: /^Restore / }).click();
  await expect(panel.getByRole('status')).toContainText('restored snapshot');
  await page.notebook.addCell('code', "print(a, 'b' in globals())");
  await page.notebook.runCell(2, true);
  await expect.poll(() => output(page, 2)).toContain('1 False');

  // Copy a share link.
  await two.getByRole('button', { name: /^Copy link / }).click();
  await expect(panel.getByRole('status')).toContainText(/Link copied: khl_/);

  // Fork the second into a new notebook: its kernel holds the fork.
  const tabs = page.locator('#jp-main-dock-panel .lm-TabBar-tab');
  const before = await tabs.count();
  await two.getByRole('button', { name: /^Fork / }).click();
  await expect(panel.getByRole('status')).toContainText('restored it here', { timeout: 60000 });
  await expect(tabs).toHaveCount(before + 1);
  await page.notebook.setCell(0, 'code', 'print(a, b)');
  await page.notebook.runCell(0, true);
  await expect.poll(() => output(page, 0)).toContain('2 new');

  // Back in the first notebook, the fork is in its history (a fork keeps its source's notebook); delete it.
  await page.notebook.activate(first!);
  const fork = history.getByRole('listitem').filter({ hasText: 'fork of' });
  await panel.getByRole('button', { name: 'Refresh' }).click();
  await expect(history.getByRole('listitem')).toHaveCount(3);
  await fork.getByRole('button', { name: /^Delete / }).click();
  await page.getByRole('dialog').getByRole('button', { name: 'Delete' }).click();
  await expect(history.getByRole('listitem')).toHaveCount(2);
});

test('the hop display as other states render it: progress with time left, a failure, the split', async ({ page }) => {
  // Fixed payloads, published as the kernel's hop does, so the pictures do not change with the machine's speed.
  await page.notebook.createNew();
  await page.notebook.setCell(
    0,
    'code',
    [
      'from IPython.display import display',
      'from kernelhop.magics.hop_display import MIME_TYPE',
      "base = {'version': 1, 'gpu_class': 'h100', 'runtime': 'rt-1', 'simulated': True, 'elapsed_s': 4.2}",
      "display({MIME_TYPE: {**base, 'id': 'a', 'phase': 'upload', 'bytes_done': 12 << 20, 'bytes_total': 48 << 20, 'eta_s': 6.4}}, raw=True)",
      "display({MIME_TYPE: {**base, 'id': 'b', 'phase': 'failed', 'error': 'the gateway at ws://127.0.0.1:8731/ws/v1 closed'}}, raw=True)",
      "split = {'capture': 0.05, 'upload': 0.4, 'queue': 0.1, 'restore': 0.6, 'run': 1.2, 'return': 0.3}",
      "display({MIME_TYPE: {**base, 'id': 'c', 'phase': 'done', 'status': 'ok', 'split': split, 'total_s': 2.65, 'gpu_s': 2.1}}, raw=True)"
    ].join('\n')
  );
  await page.notebook.runCell(0, true);
  const displays = page.locator('.kernelhop-Hop');
  await expect(displays).toHaveCount(3);
  const progress = displays.nth(0).getByRole('progressbar', { name: 'kernelhop: h100 hop' });
  await expect(progress).toHaveAttribute('aria-valuenow', '25');
  await expect(progress).toHaveAttribute('aria-valuetext', 'uploading 12.0 MiB of 48.0 MiB, about 6 s left');
  await expect(displays.nth(1)).toContainText('failed: the gateway at ws://127.0.0.1:8731/ws/v1 closed');
  await expect(displays.nth(2)).toContainText('h100 on runtime rt-1 (simulated) · 2.65 s · 2.1 GPU-s');
  await expect(page.locator('.jp-Cell-outputArea').first()).toHaveScreenshot('hop-displays.png');
});

test("someone else's snapshot is shared with me: the panel says whose it is and restores it only once trusted", async ({
  page,
  stack
}) => {
  // bob, another user of the gateway, saves a state in his own kernel and shares it with the admin (us).
  const bob = String((await adminRequest(stack, { op: 'user_add', name: 'bob' }))['token']);
  const python = process.env.KERNELHOP_PYTHON ?? path.join(__dirname, '..', '..', '.venv', 'bin', 'python');
  const script = [
    'from IPython.core.interactiveshell import InteractiveShell',
    'ip = InteractiveShell.instance()',
    "ip.run_line_magic('load_ext', 'kernelhop')",
    "ip.user_ns['from_bob'] = 42",
    "ip.run_line_magic('snapshot', 'save mine -m bobs-state')",
    "ip.run_line_magic('snapshot', 'share mine --with admin')"
  ].join('\n');
  await promisify(execFile)(python, ['-c', script], {
    env: {
      ...process.env,
      KERNELHOP_GATEWAY: stack.wsUrl,
      KERNELHOP_TOKEN: bob,
      KERNELHOP_HOME: mkdtempSync(path.join(tmpdir(), 'kernelhop-bob-'))
    }
  });

  await page.notebook.createNew();
  await page.notebook.setCell(0, 'code', 'mine = 1');
  await page.notebook.runCell(0, true);
  await page.sidebar.openTab('kernelhop-snapshots');
  const panel = page.getByRole('region', { name: 'kernelhop snapshots' });
  const shared = panel.getByRole('region', { name: 'Shared with me' }).getByRole('listitem');
  await expect(shared).toHaveCount(1);
  await expect(shared).toContainText('by bob · bobs-state');
  // A grantee may read and fork, not share or delete.
  await expect(shared.getByRole('button')).toHaveText(['Restore', 'Fork']);

  // Restoring runs bob's code: the kernel refuses until his key is trusted, and the dialog says whose it is.
  await shared.getByRole('button', { name: /^Restore / }).click();
  const dialog = page.getByRole('dialog');
  await expect(dialog).toContainText('bob');
  await dialog.getByRole('button', { name: 'Cancel' }).click();
  await expect(panel.getByRole('status')).toContainText('not trusted');
  await shared.getByRole('button', { name: /^Restore / }).click();
  await dialog.getByRole('button', { name: 'Trust and restore' }).click();
  await expect(panel.getByRole('status')).toContainText('restored snapshot');
  await page.notebook.addCell('code', "print(from_bob, 'mine' in globals())");
  await page.notebook.runCell(1, true);
  await expect.poll(() => output(page, 1)).toContain('42 False');
});
