import { Token } from '@lumino/coreutils';
import { IDisposable } from '@lumino/disposable';
import { ISignal } from '@lumino/signaling';

/**
 * Where the browser's link to the gateway stands.
 *
 * `refused` is kept apart from `down` because the fix differs: a refused token needs the gateway's token, a down
 * gateway needs `kernelhop gateway` started.
 */
export type ConnectionState = 'connecting' | 'connected' | 'down' | 'refused';

/** One entry of the gateway's `classes` reply (docs/ARCHITECTURE.md). */
export interface IGpuClass {
  readonly name: string;
  readonly runtimes: number;
  readonly capacity: number;
  readonly busy: number;
  readonly queued: number;
  /** True when a runtime poses as this class on a CPU; the UI must say so. */
  readonly simulated: boolean;
}

export interface IGatewayStatus {
  readonly state: ConnectionState;
  /** Sorted by name; empty unless connected. */
  readonly classes: ReadonlyArray<IGpuClass>;
  /** Why the state is what it is, for tooltips; empty when connected. */
  readonly detail: string;
}

/** A final reply of the gateway: `ok` plus the op's own fields. */
export interface IGatewayReply {
  readonly re: string;
  readonly ok: boolean;
  readonly error?: { readonly code: string; readonly message: string };
  readonly [field: string]: unknown;
}

export interface IGatewayLink extends IDisposable {
  readonly status: IGatewayStatus;
  /** Emitted when the connection state or the classes change, not on every poll. */
  readonly statusChanged: ISignal<IGatewayLink, IGatewayStatus>;
  /** Ask for the classes now instead of at the next poll. */
  refresh(): Promise<void>;
  /** Send one request; resolves with its final reply, rejects when the gateway answers `ok: false` or the link drops. */
  request(op: string, body?: Record<string, unknown>): Promise<IGatewayReply>;
}

export const IGatewayLink = new Token<IGatewayLink>(
  'kernelhop-labextension:IGatewayLink',
  "The browser's connection to the kernelhop gateway: its state and the GPU classes available now."
);
