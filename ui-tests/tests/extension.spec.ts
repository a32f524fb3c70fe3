import { expect, test } from './fixtures';

const STATUS = '#kernelhop-status';

test.describe('without a gateway', () => {
  test('the extension loads and its status item is in the status bar', async ({ page }) => {
    await expect(page.locator(STATUS)).toBeVisible();
    await expect(page.locator(STATUS)).toHaveAttribute('role', 'status');
  });

  test('the status says the gateway is down, and why', async ({ page }) => {
    const item = page.locator(STATUS);
    await expect(item).toHaveText('kernelhop: gateway down');
    await expect(item).toHaveAttribute('aria-label', 'kernelhop: gateway down');
    await expect(item).toHaveAttribute('data-state', 'down');
    // The tooltip names the URL the server tried, from GET /kernelhop/config.
    await expect(item).toHaveAttribute('title', /ws:\/\/127\.0\.0\.1:9\/ws\/v1/);
    await expect(item).toHaveScreenshot('status-down.png');
  });

  test('the run-on menu says why it has no classes', async ({ page }) => {
    await page.notebook.createNew();
    const button = page.getByRole('button', { name: 'Run on', exact: true });
    await expect(button).toBeVisible();
    await button.click();
    const menu = page.locator('#kernelhop-run-on-menu');
    await expect(menu).toBeVisible();
    await expect(menu.getByRole('menuitem', { name: 'Gateway down' })).toHaveAttribute('aria-disabled', 'true');
  });

  test('the snapshot panel says the gateway is down', async ({ page }) => {
    await page.sidebar.openTab('kernelhop-snapshots');
    const panel = page.getByRole('region', { name: 'kernelhop snapshots' });
    await expect(panel).toContainText('The gateway is down: snapshots cannot be listed.');
    await expect(panel.getByRole('button', { name: 'Refresh' })).toBeEnabled();
  });
});
