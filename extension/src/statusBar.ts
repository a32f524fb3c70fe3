import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { Cell } from '@jupyterlab/cells';
import { URLExt } from '@jupyterlab/coreutils';
import { INotebookTracker, Notebook, NotebookActions, NotebookPanel } from '@jupyterlab/notebook';
import { ServerConnection } from '@jupyterlab/services';
import { IStatusBar } from '@jupyterlab/statusbar';
import { Widget } from '@lumino/widgets';

import { statusText, statusTitle } from './format';
import { gpuSecondsText, summaryText, whereText } from './hop';
import { IHopTracker } from './hopTracker';
import { gpuClassOf } from './magic';
import { IGatewayLink, IGatewayStatus } from './tokens';
import { IUsageSummary, parseUsage, startOfToday, usageText } from './usage';

/**
 * The status bar item: where the current notebook's cell runs (local, or the class and runtime with the step the hop
 * is at), the last hop's time split, the notebook's GPU-seconds, and what the pool has free.
 */
export const statusBarPlugin: JupyterFrontEndPlugin<void> = {
  id: 'kernelhop-labextension:status-bar',
  description: 'Shows where the current notebook runs and the GPU classes free now.',
  autoStart: true,
  requires: [IGatewayLink, IStatusBar],
  optional: [INotebookTracker, IHopTracker],
  activate: (
    app: JupyterFrontEnd,
    client: IGatewayLink,
    statusBar: IStatusBar,
    tracker: INotebookTracker | null,
    hops: IHopTracker | null
  ): void => {
    const item = new KernelhopStatus(client, tracker, hops, app.serviceManager.serverSettings);
    statusBar.registerStatusItem(statusBarPlugin.id, { item, align: 'left', rank: 100 });
  }
};

/** The gateway settings as the Jupyter server resolved them (GET /kernelhop/config). */
interface IServerConfig {
  gateway_url: string;
  source: string;
  token_set: boolean;
  error: string | null;
}

class KernelhopStatus extends Widget {
  constructor(
    client: IGatewayLink,
    tracker: INotebookTracker | null,
    hops: IHopTracker | null,
    settings: ServerConnection.ISettings
  ) {
    super();
    this._client = client;
    this._tracker = tracker;
    this._hops = hops;
    this._settings = settings;
    this.id = 'kernelhop-status';
    this.addClass('jp-StatusBar-TextItem');
    this.addClass('kernelhop-StatusItem');
    // A live region, so a screen reader hears the gateway go down or a cell move to a GPU.
    this.node.setAttribute('role', 'status');
    this.node.setAttribute('aria-live', 'polite');
    client.statusChanged.connect(this._onStatus, this);
    tracker?.currentChanged.connect(this._render, this);
    hops?.changed.connect(this._onHops, this);
    NotebookActions.executionScheduled.connect(this._onScheduled, this);
    NotebookActions.executed.connect(this._onExecuted, this);
    this._onStatus(client, client.status);
    void this._fetchUsage();
  }

  override dispose(): void {
    if (this.isDisposed) {
      return;
    }
    NotebookActions.executionScheduled.disconnect(this._onScheduled, this);
    NotebookActions.executed.disconnect(this._onExecuted, this);
    super.dispose();
  }

  private _onStatus(_: IGatewayLink, status: IGatewayStatus): void {
    this._serverConfig = null;
    this._render();
    if (status.state === 'connected') {
      void this._fetchUsage();
    }
    if (status.state === 'down' || status.state === 'refused') {
      // Which URL and token the server used is the first thing a user needs to fix either state.
      void this._fetchConfig();
    }
  }

  private async _fetchConfig(): Promise<void> {
    const url = URLExt.join(this._settings.baseUrl, 'kernelhop', 'config');
    try {
      const response = await ServerConnection.makeRequest(url, {}, this._settings);
      if (response.ok) {
        this._serverConfig = (await response.json()) as IServerConfig;
        this._render();
      }
    } catch {
      // Without the server's view the tooltip still says what is wrong, only not which setting to fix.
    }
  }

  // A notebook's cell is on a GPU from the moment it is scheduled until it has run, as the kernel runs it.
  private _onScheduled(_: unknown, args: { notebook: Notebook; cell: Cell }): void {
    const gpuClass = gpuClassOf(args.cell.model.sharedModel.getSource());
    if (gpuClass) {
      this._running.set(args.notebook, gpuClass);
      this._render();
    }
  }

  private _onExecuted(_: unknown, args: { notebook: Notebook }): void {
    if (this._running.delete(args.notebook)) {
      this._render();
    }
  }

  private _onHops(_: IHopTracker, panel: NotebookPanel): void {
    if (panel === this._tracker?.currentWidget) {
      this._render();
    }
    // A hop that ended was just charged: the meter reads the gateway's count again.
    if (!this._hops?.hopsOf(panel).active) {
      void this._fetchUsage();
    }
  }

  /** The cost meter: the user's GPU-seconds today as the gateway counts them (the `usage` op). */
  private async _fetchUsage(): Promise<void> {
    try {
      this._usage = parseUsage(await this._client.request('usage', { since: startOfToday() }));
    } catch {
      // An older gateway or one that is down: the tooltip goes without the meter until it answers.
      this._usage = null;
    }
    this._render();
  }

  private _render(): void {
    const status = this._client.status;
    const panel = this._tracker?.currentWidget ?? null;
    const notebook = panel?.content;
    const hops = panel && this._hops ? this._hops.hopsOf(panel) : null;
    const text = statusText(status, (notebook && this._running.get(notebook)) ?? null, hops);
    let title = statusTitle(status);
    if (hops?.last?.split) {
      title += `\nLast hop: ${whereText(hops.last)}, ${summaryText(hops.last)} (seconds), ${gpuSecondsText(hops.last.gpuS)}.`;
    }
    if (hops && hops.ledger.total > 0) {
      title += `\nThis notebook has used ${gpuSecondsText(hops.ledger.total)} of GPU time.`;
    }
    if (this._usage) {
      title += `\n${usageText(this._usage, panel?.context.path ?? null)}`;
      this.node.dataset['gpuSeconds'] = this._usage.gpuSeconds.toFixed(3);
    }
    const config = this._serverConfig;
    if (config) {
      title += config.error
        ? `\nThe Jupyter server cannot read the gateway settings: ${config.error}`
        : `\nGateway ${config.gateway_url} (${config.source}).`;
    }
    this.node.textContent = text;
    this.node.dataset['state'] = status.state;
    // For styling and tests: which step the current notebook's hop is at, if one moves.
    this.node.dataset['hop'] = hops?.active?.phase ?? 'none';
    this.node.title = title;
    this.node.setAttribute('aria-label', text);
  }

  private readonly _client: IGatewayLink;
  private readonly _tracker: INotebookTracker | null;
  private readonly _hops: IHopTracker | null;
  private readonly _settings: ServerConnection.ISettings;
  // Weak, so a notebook closed mid-run leaves nothing behind.
  private readonly _running = new WeakMap<Notebook, string>();
  private _serverConfig: IServerConfig | null = null;
  private _usage: IUsageSummary | null = null;
}
