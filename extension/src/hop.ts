/**
 * The hop display the kernel publishes (kernelhop/magics/hop_display.py), read and worded for the UI.
 *
 * Pure logic, no DOM: the renderer, the status bar and the cost meter share it, and node:test covers it.
 */
import type { HopDisplayJson, HopSplitJson } from '@kernelhop/proto/es/hop_display_pb';

/** The MIME type of the kernel's live hop display. */
export const HOP_MIME_TYPE = 'application/vnd.kernelhop.hop+json';

export type HopPhase = 'capture' | 'upload' | 'queued' | 'fetch' | 'run' | 'return' | 'home' | 'done' | 'failed';

/** The steps of a finished hop, in the order they happen. */
export const SPLIT_STEPS = ['capture', 'upload', 'queue', 'restore', 'run', 'return'] as const;
export type SplitStep = (typeof SPLIT_STEPS)[number];

export interface IHopState {
  /** Unique per hop, so a finished hop is counted once however often its display is re-sent. */
  readonly id: string;
  readonly gpuClass: string;
  readonly phase: HopPhase;
  readonly elapsedS: number;
  readonly runtime: string | null;
  readonly simulated: boolean;
  /** Place in the class's queue, when the gateway said. */
  readonly position: number | null;
  readonly bytesDone: number;
  readonly bytesTotal: number;
  readonly etaS: number | null;
  /** Set once the hop is done. */
  readonly split: Readonly<Record<SplitStep, number>> | null;
  readonly totalS: number;
  /** Seconds the cell held a runtime's slot. */
  readonly gpuS: number;
  /** `error` when the cell itself raised on the runtime (the hop still finished). */
  readonly status: 'ok' | 'error';
  readonly error: string;
}

const PHASES: ReadonlyArray<HopPhase> = ['capture', 'upload', 'queued', 'fetch', 'run', 'return', 'home', 'done', 'failed'];

/** The kernel's payload as an IHopState; null when it is not one (another version, or garbage). */
export function parseHop(raw: unknown): IHopState | null {
  if (typeof raw !== 'object' || raw === null) {
    return null;
  }
  // The schema's JSON shape (proto/kernelhop/v1/hop_display.proto); each field is still checked, as the payload
  // comes from a kernel of any version.
  const r = raw as HopDisplayJson;
  const phase = r.phase as HopPhase;
  if (r.version !== 1 || typeof r.id !== 'string' || !PHASES.includes(phase)) {
    return null;
  }
  let split: Record<SplitStep, number> | null = null;
  if (typeof r.split === 'object' && r.split !== null) {
    const s: HopSplitJson = r.split;
    split = Object.fromEntries(SPLIT_STEPS.map(step => [step, seconds(s[step])])) as Record<SplitStep, number>;
  }
  return {
    id: r.id,
    gpuClass: typeof r.gpu_class === 'string' ? r.gpu_class : '',
    phase,
    elapsedS: seconds(r.elapsed_s),
    runtime: typeof r.runtime === 'string' && r.runtime ? r.runtime : null,
    simulated: r.simulated === true,
    position: typeof r.position === 'number' ? r.position : null,
    bytesDone: seconds(r.bytes_done),
    bytesTotal: seconds(r.bytes_total),
    etaS: typeof r.eta_s === 'number' && Number.isFinite(r.eta_s) ? Math.max(0, r.eta_s) : null,
    split,
    totalS: seconds(r.total_s),
    gpuS: seconds(r.gpu_s),
    status: r.status === 'error' ? 'error' : 'ok',
    error: typeof r.error === 'string' ? r.error : ''
  };
}

/** Whether the hop still moves (its cell is busy on it). */
export function isActive(hop: IHopState): boolean {
  return hop.phase !== 'done' && hop.phase !== 'failed';
}

/** "h100 on runtime rt-1 (simulated)". */
export function whereText(hop: IHopState): string {
  let where = hop.gpuClass;
  if (hop.runtime) {
    where += ` on runtime ${hop.runtime}`;
  }
  if (hop.simulated) {
    where += ' (simulated)';
  }
  return where;
}

/** 1536 → "1.5 KiB"; binary units, as the kernel's messages use. */
export function bytesText(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${Math.round(value)} B` : `${value.toFixed(1)} ${units[unit]}`;
}

/** Time left in words: "about 3 s left", "about 2 min left", "" when unknown. */
export function etaText(etaS: number | null): string {
  if (etaS === null) {
    return '';
  }
  if (etaS < 1) {
    return 'less than a second left';
  }
  if (etaS < 90) {
    return `about ${Math.round(etaS)} s left`;
  }
  return `about ${Math.round(etaS / 60)} min left`;
}

/** How far the current step's bytes are, 0..1; null when the step moves no counted bytes. */
export function progressFraction(hop: IHopState): number | null {
  if (!isActive(hop) || hop.bytesTotal <= 0) {
    return null;
  }
  return Math.min(1, hop.bytesDone / hop.bytesTotal);
}

const PHASE_WORDS: Record<HopPhase, string> = {
  capture: 'capturing the state',
  upload: 'uploading',
  queued: 'waiting for a runtime',
  fetch: 'restoring on the runtime',
  run: 'running',
  return: 'sending the result back',
  home: 'bringing the result home',
  done: 'done',
  failed: 'failed'
};

/** What the hop does now, with bytes and time left when the step moves bytes: "uploading 7.8 MiB of 30.5 MiB, about 2 s left". */
export function phaseText(hop: IHopState): string {
  if (hop.phase === 'failed') {
    return `failed: ${hop.error}`;
  }
  if (hop.phase === 'queued' && hop.position !== null) {
    return `queued, position ${hop.position}`;
  }
  let text = PHASE_WORDS[hop.phase];
  if (isActive(hop) && hop.bytesTotal > 0) {
    text += ` ${bytesText(hop.bytesDone)} of ${bytesText(hop.bytesTotal)}`;
    const eta = etaText(hop.etaS);
    if (eta) {
      text += `, ${eta}`;
    }
  }
  return text;
}

/** "capture 0.01 · upload 0.00 · queue 0.00 · restore 0.02 · run 0.10 · return 0.01". */
export function splitText(split: Readonly<Record<SplitStep, number>>): string {
  return SPLIT_STEPS.map(step => `${step} ${split[step].toFixed(2)}`).join(' · ');
}

/** "0.21 s: capture 0.01 · …" for a finished hop. */
export function summaryText(hop: IHopState): string {
  const split = hop.split ? `: ${splitText(hop.split)}` : '';
  return `${hop.totalS.toFixed(2)} s${split}`;
}

/** GPU-seconds in words: "0.9 GPU-s", "12 GPU-s", "1.5 GPU-h". */
export function gpuSecondsText(s: number): string {
  if (s >= 3600) {
    return `${(s / 3600).toFixed(1)} GPU-h`;
  }
  return s < 10 ? `${s.toFixed(1)} GPU-s` : `${Math.round(s)} GPU-s`;
}

/**
 * GPU-seconds of one notebook, per cell (by cell id) and in total, as kept in the notebook's metadata.
 *
 * The total is kept apart from the cells' sum: a deleted cell's GPU time was still used.
 */
export interface ICostLedger {
  readonly total: number;
  readonly cells: Readonly<Record<string, number>>;
}

export const EMPTY_LEDGER: ICostLedger = { total: 0, cells: {} };

/** The ledger after one more finished hop of `cellId` (null when the cell is unknown: it counts in the total only). */
export function addCost(ledger: ICostLedger, cellId: string | null, gpuS: number): ICostLedger {
  const cells = { ...ledger.cells };
  if (cellId !== null) {
    cells[cellId] = (cells[cellId] ?? 0) + gpuS;
  }
  return { total: ledger.total + gpuS, cells };
}

/** A ledger read back from metadata; anything malformed counts as nothing rather than as a wrong number. */
export function parseLedger(raw: unknown): ICostLedger {
  if (typeof raw !== 'object' || raw === null) {
    return EMPTY_LEDGER;
  }
  const r = raw as Record<string, unknown>;
  const cells: Record<string, number> = {};
  if (typeof r['cells'] === 'object' && r['cells'] !== null) {
    for (const [id, value] of Object.entries(r['cells'] as Record<string, unknown>)) {
      if (typeof value === 'number' && Number.isFinite(value) && value >= 0) {
        cells[id] = value;
      }
    }
  }
  return { total: seconds(r['total']), cells };
}

function seconds(value: unknown): number {
  return typeof value === 'number' && Number.isFinite(value) && value >= 0 ? value : 0;
}
