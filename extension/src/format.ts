import { gpuSecondsText, ICostLedger, IHopState, isActive, phaseText, summaryText, whereText } from './hop';
import { IGatewayStatus, IGpuClass } from './tokens';

/** What the current notebook's hops say: the one moving now, the last one finished, and its GPU time. */
export interface INotebookHops {
  readonly active: IHopState | null;
  readonly last: IHopState | null;
  readonly ledger: ICostLedger;
}

/** How many more cells the class can start now. */
export function freeSlots(gpuClass: IGpuClass): number {
  return Math.max(0, gpuClass.capacity - gpuClass.busy);
}

/** "h100 ×1 free", "h100 ×0 free, 2 queued", with "(simulated)" so nobody mistakes a CPU for a GPU. */
export function classLabel(gpuClass: IGpuClass): string {
  let label = `${gpuClass.name} ×${freeSlots(gpuClass)} free`;
  if (gpuClass.queued > 0) {
    label += `, ${gpuClass.queued} queued`;
  }
  if (gpuClass.simulated) {
    label += ' (simulated)';
  }
  return label;
}

/**
 * The status bar's text.
 *
 * @param runningOn - the class the current notebook's cell runs on now, or null when it runs locally.
 * @param hops - the current notebook's hops, as its kernel published them; null without a notebook.
 */
export function statusText(status: IGatewayStatus, runningOn: string | null, hops: INotebookHops | null = null): string {
  switch (status.state) {
    case 'connecting':
      return 'kernelhop: connecting…';
    case 'down':
      return 'kernelhop: gateway down';
    case 'refused':
      return 'kernelhop: token refused';
    case 'connected': {
      const parts: string[] = [];
      const active = hops?.active ?? null;
      if (active && isActive(active)) {
        // The kernel's own account beats the guess from the cell's first line: it names the runtime and the step.
        parts.push(`${whereText(active)}: ${phaseText(active)}`);
      } else {
        parts.push(runningOn === null ? 'local' : `on ${runningOn}`);
        if (hops?.last) {
          // Where it ran is in the tooltip: the status bar has room for the numbers only.
          parts.push(`last hop ${summaryText(hops.last)}`);
        }
      }
      if (hops && hops.ledger.total > 0) {
        parts.push(`notebook ${gpuSecondsText(hops.ledger.total)}`);
      }
      parts.push(status.classes.length ? status.classes.map(classLabel).join(' · ') : 'no GPU classes');
      return `kernelhop: ${parts.join(' · ')}`;
    }
  }
}

/** The tooltip: what to do about the state. */
export function statusTitle(status: IGatewayStatus): string {
  switch (status.state) {
    case 'connecting':
      return 'Connecting to the kernelhop gateway';
    case 'down':
      return `The kernelhop gateway cannot be reached (${status.detail}). Start it with \`kernelhop gateway\` or \`kernelhop up\`.`;
    case 'refused':
      return `The kernelhop gateway refused the token (${status.detail}). Set KERNELHOP_TOKEN to the gateway's token, or restart the gateway so it writes gateway.json.`;
    case 'connected':
      return status.classes.length
        ? status.classes
            .map(c => `${c.name}: ${c.runtimes} runtime(s), ${c.busy}/${c.capacity} busy, ${c.queued} queued${c.simulated ? ', simulated on a CPU' : ''}`)
            .join('\n')
        : 'Connected to the kernelhop gateway; no runtime has registered a GPU class yet.';
  }
}
