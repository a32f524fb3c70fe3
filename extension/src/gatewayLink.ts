import { ISignal, Signal } from '@lumino/signaling';

import { ConnectionState, IGatewayLink, IGatewayReply, IGatewayStatus, IGpuClass } from './tokens';

/**
 * The browser's WebSocket link to the gateway.
 *
 * JSON text frames only: the browser asks for state (`classes`); moving blobs is the kernel's job. It reconnects
 * with exponential backoff for as long as it lives, so starting the gateway after JupyterLab needs no reload.
 */
export class GatewayLink implements IGatewayLink {
  constructor(options: GatewayLink.IOptions) {
    this._url = options.url;
    this._WebSocket = options.WebSocket ?? WebSocket;
    this._pollMs = options.pollIntervalMs ?? 5000;
    this._initialBackoffMs = options.initialBackoffMs ?? 500;
    this._maxBackoffMs = options.maxBackoffMs ?? 30000;
    this._requestTimeoutMs = options.requestTimeoutMs ?? 10000;
    void this._connect();
  }

  get status(): IGatewayStatus {
    return this._status;
  }

  get statusChanged(): ISignal<IGatewayLink, IGatewayStatus> {
    return this._statusChanged;
  }

  get isDisposed(): boolean {
    return this._isDisposed;
  }

  dispose(): void {
    if (this._isDisposed) {
      return;
    }
    this._isDisposed = true;
    this._clearTimers();
    const socket = this._socket;
    this._socket = null;
    socket?.close(1000, 'client disposed');
    this._rejectPending('the gateway client was disposed');
    Signal.clearData(this);
  }

  async refresh(): Promise<void> {
    const reply = await this.request('classes');
    this._setStatus({ state: 'connected', classes: Private.parseClasses(reply['classes']), detail: '' });
  }

  request(op: string, body: Record<string, unknown> = {}): Promise<IGatewayReply> {
    const socket = this._socket;
    if (!socket || socket.readyState !== OPEN) {
      return Promise.reject(new GatewayError('not_connected', this._status.detail || 'not connected to the gateway'));
    }
    const id = String(++this._nextId);
    return new Promise<IGatewayReply>((resolve, reject) => {
      const timer = setTimeout(() => {
        this._pending.delete(id);
        reject(new GatewayError('timeout', `the gateway did not answer ${op} within ${this._requestTimeoutMs} ms`));
      }, this._requestTimeoutMs);
      this._pending.set(id, { resolve, reject, timer });
      socket.send(JSON.stringify({ ...body, id, op }));
    });
  }

  private async _connect(): Promise<void> {
    let url: string;
    try {
      url = await this._url();
    } catch (reason) {
      this._onLost('down', `cannot find the gateway: ${Private.message(reason)}`);
      return;
    }
    if (this._isDisposed) {
      return;
    }
    let socket: WebSocket;
    try {
      socket = new this._WebSocket(url);
    } catch (reason) {
      this._onLost('down', `cannot open ${url}: ${Private.message(reason)}`);
      return;
    }
    this._socket = socket;
    socket.onopen = () => {
      this._attempt = 0;
      void this._poll();
    };
    socket.onmessage = event => {
      // Binary frames carry blobs, which the browser never asks for.
      if (typeof event.data === 'string') {
        this._onText(event.data);
      }
    };
    // Every error is followed by a close, which says why; an unhandled error would throw in Node's `ws`.
    socket.onerror = () => undefined;
    socket.onclose = event => {
      // A socket replaced or closed by dispose() must not touch the state.
      if (this._socket !== socket) {
        return;
      }
      this._socket = null;
      if (event.code === GatewayLink.CLOSE_TOKEN_REFUSED) {
        this._onLost('refused', event.reason || 'the gateway refused the token');
      } else {
        this._onLost('down', event.reason || 'no connection to the gateway');
      }
    };
  }

  private async _poll(): Promise<void> {
    try {
      await this.refresh();
    } catch {
      // A failed poll is followed by the socket's close, which sets the state; one slow reply alone changes nothing.
    }
    if (this._socket && !this._isDisposed) {
      this._pollTimer = setTimeout(() => void this._poll(), this._pollMs);
    }
  }

  private _onText(text: string): void {
    let message: unknown;
    try {
      message = JSON.parse(text);
    } catch {
      return;
    }
    if (!Private.isFinalReply(message)) {
      // Events of a run (queued, stream, ...) are for the kernel that asked, and pings need no answer here.
      return;
    }
    const pending = this._pending.get(message.re);
    if (!pending) {
      return;
    }
    this._pending.delete(message.re);
    clearTimeout(pending.timer);
    if (message.ok) {
      pending.resolve(message);
    } else {
      pending.reject(new GatewayError(message.error?.code ?? 'error', message.error?.message ?? 'request failed'));
    }
  }

  private _onLost(state: ConnectionState, detail: string): void {
    this._clearTimers();
    this._rejectPending(detail);
    this._setStatus({ state, classes: [], detail });
    if (this._isDisposed) {
      return;
    }
    const delay = Math.min(this._maxBackoffMs, this._initialBackoffMs * 2 ** this._attempt);
    this._attempt++;
    this._retryTimer = setTimeout(() => void this._connect(), delay);
  }

  private _setStatus(status: IGatewayStatus): void {
    if (Private.sameStatus(this._status, status)) {
      return;
    }
    this._status = status;
    this._statusChanged.emit(status);
  }

  private _rejectPending(reason: string): void {
    for (const pending of this._pending.values()) {
      clearTimeout(pending.timer);
      pending.reject(new GatewayError('disconnected', reason));
    }
    this._pending.clear();
  }

  private _clearTimers(): void {
    clearTimeout(this._pollTimer);
    clearTimeout(this._retryTimer);
  }

  private readonly _url: () => string | Promise<string>;
  private readonly _WebSocket: GatewayLink.WebSocketConstructor;
  private readonly _pollMs: number;
  private readonly _initialBackoffMs: number;
  private readonly _maxBackoffMs: number;
  private readonly _requestTimeoutMs: number;
  private readonly _pending = new Map<string, Private.IPending>();
  private readonly _statusChanged = new Signal<IGatewayLink, IGatewayStatus>(this);
  private _status: IGatewayStatus = { state: 'connecting', classes: [], detail: 'connecting to the gateway' };
  private _socket: WebSocket | null = null;
  private _attempt = 0;
  private _nextId = 0;
  private _pollTimer: ReturnType<typeof setTimeout> | undefined;
  private _retryTimer: ReturnType<typeof setTimeout> | undefined;
  private _isDisposed = false;
}

export namespace GatewayLink {
  /** What a WebSocket needs to be for the client: the browser's, or `ws` in Node tests. */
  export type WebSocketConstructor = new (url: string) => WebSocket;

  export interface IOptions {
    /** Asked at every connect, so a changed server address or token is picked up without a reload. */
    url: () => string | Promise<string>;
    WebSocket?: WebSocketConstructor;
    /** How often to ask for the classes while connected. */
    pollIntervalMs?: number;
    initialBackoffMs?: number;
    maxBackoffMs?: number;
    requestTimeoutMs?: number;
  }

  /**
   * Close codes the Jupyter server's proxy (kernelhop/lab/server.py) sends, because a browser cannot see the HTTP
   * status of a refused upgrade.
   */
  export const CLOSE_TOKEN_REFUSED = 4401;
  export const CLOSE_GATEWAY_DOWN = 4502;
}

/** A request the gateway refused or could not answer; `code` is the gateway's error code or the client's own. */
export class GatewayError extends Error {
  constructor(
    readonly code: string,
    message: string
  ) {
    super(message);
    this.name = 'GatewayError';
  }
}

// WebSocket.OPEN, without relying on a global WebSocket (Node 20 has none).
const OPEN = 1;

namespace Private {
  export interface IPending {
    resolve: (reply: IGatewayReply) => void;
    reject: (error: GatewayError) => void;
    timer: ReturnType<typeof setTimeout>;
  }

  export function isFinalReply(message: unknown): message is IGatewayReply {
    if (typeof message !== 'object' || message === null) {
      return false;
    }
    const m = message as Record<string, unknown>;
    return typeof m['re'] === 'string' && typeof m['ok'] === 'boolean';
  }

  /** The gateway's `{name: {...}}` as a sorted list; malformed entries are dropped, not trusted. */
  export function parseClasses(raw: unknown): IGpuClass[] {
    if (typeof raw !== 'object' || raw === null) {
      return [];
    }
    const out: IGpuClass[] = [];
    for (const [name, value] of Object.entries(raw as Record<string, unknown>)) {
      if (typeof value !== 'object' || value === null) {
        continue;
      }
      const v = value as Record<string, unknown>;
      out.push({
        name,
        runtimes: count(v['runtimes']),
        capacity: count(v['capacity']),
        busy: count(v['busy']),
        queued: count(v['queued']),
        simulated: v['simulated'] === true
      });
    }
    return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  function count(value: unknown): number {
    return typeof value === 'number' && Number.isFinite(value) && value >= 0 ? Math.floor(value) : 0;
  }

  export function sameStatus(a: IGatewayStatus, b: IGatewayStatus): boolean {
    return a.state === b.state && a.detail === b.detail && JSON.stringify(a.classes) === JSON.stringify(b.classes);
  }

  export function message(reason: unknown): string {
    return reason instanceof Error ? reason.message : String(reason);
  }
}
