

// Galata's defaults (reporters, timeouts, viewport); its typings declare none of them.
const baseConfig = require('@jupyterlab/galata/lib/playwright-config') as { use: Record<string, unknown> } & Record<string, unknown>;
import { defineConfig } from '@playwright/test';
// Debian's Chromium, never a downloaded one: CI and developers install it with apt (scripts/test.sh).
const CHROMIUM = process.env.KERNELHOP_CHROMIUM ?? '/usr/bin/chromium';

export default defineConfig({
  ...baseConfig,
  // JupyterLab is started by the `labServer` fixture (tests/fixtures.ts), so that each test file can give it its
  // own environment (which gateway, which token): Playwright's webServer would start one server for every test.
  testDir: './tests',
  workers: 1,
  retries: process.env.CI ? 1 : 0,
  use: {
    ...baseConfig.use,
    // Video needs Playwright's own ffmpeg, which would be a download; traces and screenshots need nothing.
    video: 'off',
    screenshot: 'only-on-failure',
    launchOptions: {
      executablePath: CHROMIUM,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--no-first-run'
      ]
    }
  },
  expect: {
    // Anti-aliasing moves a few pixels between Chromium builds; a changed text or layout moves far more.
    toHaveScreenshot: { maxDiffPixelRatio: 0.02 }
  }
});
