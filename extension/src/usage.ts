import { gpuSecondsText } from './hop';

/**
 * The gateway's count of the user's GPU-seconds (the `usage` op), as the status bar's cost meter shows it. The
 * notebook's own ledger (hop.ts) counts what this browser saw; this is what the gateway charged, over every
 * notebook and kernel of the user.
 */
export interface IUsageSummary {
  readonly gpuSeconds: number;
  readonly runs: number;
  /** Per notebook path (as the kernel's Jupyter server named its session). */
  readonly notebooks: ReadonlyMap<string, number>;
}

/** Reads a `usage` reply; null when it is not one (an older gateway, a malformed answer). */
export function parseUsage(reply: unknown): IUsageSummary | null {
  const usage = (reply as { usage?: unknown } | null)?.usage as
    | { total?: { gpuSeconds?: unknown; runs?: unknown }; by?: { notebook?: unknown } }
    | undefined;
  const total = usage?.total;
  if (!total || typeof total.gpuSeconds !== 'number' || typeof total.runs !== 'number') {
    return null;
  }
  const notebooks = new Map<string, number>();
  const rows = Array.isArray(usage?.by?.notebook) ? (usage?.by?.notebook as unknown[]) : [];
  for (const row of rows) {
    const { key, gpuSeconds } = row as { key?: unknown; gpuSeconds?: unknown };
    if (typeof key !== 'string' || typeof gpuSeconds !== 'number') {
      continue;
    }
    // Keyed user<TAB>notebook: the user is the caller's own.
    const path = key.slice(key.indexOf('\t') + 1);
    notebooks.set(path, (notebooks.get(path) ?? 0) + gpuSeconds);
  }
  return { gpuSeconds: total.gpuSeconds, runs: total.runs, notebooks };
}

/** The cost meter's line of the status bar's tooltip. */
export function usageText(summary: IUsageSummary, notebookPath: string | null): string {
  let text = `Today you used ${gpuSecondsText(summary.gpuSeconds)} over ${summary.runs} run${summary.runs === 1 ? '' : 's'}`;
  const here = notebookPath === null ? undefined : summary.notebooks.get(notebookPath);
  if (here !== undefined) {
    text += `, ${gpuSecondsText(here)} in this notebook`;
  }
  return `${text} (as the gateway counts it).`;
}

/** Local midnight, in ms since the epoch: "today" for the meter. */
export function startOfToday(now: Date = new Date()): number {
  return new Date(now.getFullYear(), now.getMonth(), now.getDate()).getTime();
}
