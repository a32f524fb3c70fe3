import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { Clipboard, Dialog, ICommandPalette, showDialog } from '@jupyterlab/apputils';
import { PathExt } from '@jupyterlab/coreutils';
import { INotebookTracker, NotebookActions, NotebookPanel } from '@jupyterlab/notebook';
import { LabIcon } from '@jupyterlab/ui-components';
import { Widget } from '@lumino/widgets';

import { gpuSecondsText } from './hop';
import { IHopTracker } from './hopTracker';
import { forkIntoNewNotebook, ICommandResult, kernelOf, runSnapshotCommand } from './snapshotActions';
import { describe, diffPair, historyOf, ISnapshot, ISnapshotList, parseSnapshotList, shortId, toggleSelection } from './snapshotModel';
import { IGatewayLink, IGatewayStatus } from './tokens';

const snapshotIcon = new LabIcon({
  name: 'kernelhop:snapshot',
  // A stack of states with a clock hand: history of a kernel's state.
  svgstr:
    '<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24"><g class="jp-icon3" fill="#616161">' +
    '<path d="M4 5h12v2H4zM2 9h12v2H2zM2 13h8v2H2z"/><path d="M17 11a5 5 0 1 0 0 10 5 5 0 0 0 0-10zm0 2h1v3.4l2.3 1.3-.5.9-2.8-1.6z"/>' +
    '</g></svg>'
});

export namespace CommandIDs {
  export const show = 'kernelhop:show-snapshots';
}

/** The snapshot panel in the left sidebar, and a command (in the palette) that opens it. */
export const snapshotPanelPlugin: JupyterFrontEndPlugin<void> = {
  id: 'kernelhop-labextension:snapshot-panel',
  description: "This notebook's snapshots: restore, fork, diff, share, delete; and those shared with you.",
  autoStart: true,
  requires: [IGatewayLink, INotebookTracker],
  optional: [IHopTracker, ICommandPalette],
  activate: (
    app: JupyterFrontEnd,
    client: IGatewayLink,
    tracker: INotebookTracker,
    hops: IHopTracker | null,
    palette: ICommandPalette | null
  ): void => {
    const panel = new SnapshotPanel(app, client, tracker, hops);
    app.shell.add(panel, 'left', { rank: 650 });
    app.commands.addCommand(CommandIDs.show, {
      label: 'Show kernelhop snapshots',
      execute: () => app.shell.activateById(panel.id)
    });
    palette?.addItem({ command: CommandIDs.show, category: 'kernelhop' });
  }
};

class SnapshotPanel extends Widget {
  constructor(app: JupyterFrontEnd, client: IGatewayLink, tracker: INotebookTracker, hops: IHopTracker | null) {
    super();
    this._app = app;
    this._client = client;
    this._tracker = tracker;
    this._hops = hops;
    this.id = 'kernelhop-snapshots';
    this.addClass('kernelhop-Snapshots');
    this.title.icon = snapshotIcon;
    this.title.caption = 'kernelhop snapshots';
    this.node.setAttribute('role', 'region');
    this.node.setAttribute('aria-label', 'kernelhop snapshots');

    this._state = client.status.state;
    client.statusChanged.connect(this._onStatus, this);
    tracker.currentChanged.connect(this._onNotebook, this);
    // Only a finished hop changes the cost shown here; its steps come many times a second.
    hops?.changed.connect((_, panel) => {
      const total = hops.hopsOf(panel).ledger.total;
      if (panel === tracker.currentWidget && total !== this._costShown) {
        this._render();
      }
    }, this);
    // A `%snapshot save` (or an auto save) in a cell adds to the history: look again when a cell has run.
    NotebookActions.executed.connect(this._onExecuted, this);
    this._render();
  }

  override dispose(): void {
    NotebookActions.executed.disconnect(this._onExecuted, this);
    super.dispose();
  }

  protected override onAfterShow(): void {
    void this.refresh();
  }

  /** Reads the list (and who the user is) again. */
  async refresh(): Promise<void> {
    if (this._client.status.state !== 'connected') {
      this._list = null;
      this._render();
      return;
    }
    try {
      if (this._me === null) {
        this._me = String((await this._client.request('whoami'))['user'] ?? '') || null;
      }
      this._list = parseSnapshotList(await this._client.request('snapshot_list'));
      const ids = new Set([...this._list.own, ...this._list.shared].map(s => s.id));
      this._selected = this._selected.filter(id => ids.has(id));
    } catch (reason) {
      this._say(`Could not list the snapshots: ${Private.message(reason)}`);
    }
    this._render();
  }

  private _onStatus(_: IGatewayLink, status: IGatewayStatus): void {
    // The status changes with every free slot taken or given back; only a new connection state matters here.
    if (status.state === this._state) {
      return;
    }
    this._state = status.state;
    if (status.state !== 'connected') {
      this._me = null;
    }
    if (this.isVisible) {
      void this.refresh();
    } else {
      this._render();
    }
  }

  private _onNotebook(): void {
    this._selected = [];
    this._diff = '';
    this._render();
  }

  private _onExecuted(_: unknown, args: { notebook: unknown }): void {
    if (this.isVisible && args.notebook === this._tracker.currentWidget?.content) {
      void this.refresh();
    }
  }

  private _say(message: string): void {
    this._message = message;
    this._render();
  }

  // -- actions --------------------------------------------------------------------------------------------------

  /** Runs a `%snapshot` command in the current notebook's kernel; says why when there is none. */
  private async _inKernel(args: string): Promise<ICommandResult | null> {
    const panel = this._tracker.currentWidget;
    const kernel = panel ? await kernelOf(panel) : null;
    if (!kernel) {
      this._say('Open a notebook with a running kernel first: snapshots are restored and compared in its kernel.');
      return null;
    }
    return runSnapshotCommand(kernel, args);
  }

  /**
   * Someone else's snapshot runs their code when restored: the kernel refuses it until its signer is trusted, and
   * says whose it is. The user sees that and decides.
   */
  private async _askTrust(snapshot: ISnapshot, refusal: ICommandResult): Promise<boolean> {
    const result = await showDialog({
      title: `Trust the signer of snapshot ${shortId(snapshot.id)}?`,
      body: `${refusal.evalue}\n\nRestoring runs code from this snapshot. Trust its key and go on?`,
      buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Trust and restore' })]
    });
    return result.button.accept;
  }

  private async _restore(snapshot: ISnapshot): Promise<void> {
    this._say(`Restoring ${shortId(snapshot.id)}…`);
    let result = await this._inKernel(`restore ${snapshot.id}`);
    if (result && !result.ok && result.ename === 'UntrustedSnapshot') {
      if (!(await this._askTrust(snapshot, result))) {
        this._say(`Not restored: ${shortId(snapshot.id)} is signed by a key you have not trusted.`);
        return;
      }
      result = await this._inKernel(`restore ${snapshot.id} --trust`);
    }
    if (result) {
      this._say(result.ok ? result.output : `Restore failed: ${result.evalue}`);
    }
  }

  private async _fork(snapshot: ISnapshot): Promise<void> {
    let trust = false;
    if (this._me !== null && snapshot.author !== this._me) {
      const answer = await showDialog({
        title: `Fork ${shortId(snapshot.id)} by ${snapshot.author}?`,
        body: `The fork is restored in a new kernel, which runs code from this snapshot signed by ${snapshot.author}. Trust its key and fork?`,
        buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Trust and fork' })]
      });
      if (!answer.button.accept) {
        return;
      }
      trust = true;
    }
    this._say(`Forking ${shortId(snapshot.id)} into a new notebook…`);
    const current = this._tracker.currentWidget;
    const cwd = current ? PathExt.dirname(current.context.path) : '';
    try {
      const { result } = await forkIntoNewNotebook(this._app, snapshot.id, trust, cwd);
      this._say(result.ok ? result.output : `The new notebook's kernel could not restore the fork: ${result.evalue}`);
    } catch (reason) {
      this._say(`Fork failed: ${Private.message(reason)}`);
    }
    await this.refresh();
  }

  private async _showDiff(): Promise<void> {
    const pair = diffPair([...(this._list?.own ?? []), ...(this._list?.shared ?? [])], this._selected);
    if (!pair) {
      return;
    }
    this._say(`Comparing ${shortId(pair[0].id)} with ${shortId(pair[1].id)}…`);
    const result = await this._inKernel(`diff ${pair[0].id} ${pair[1].id}`);
    if (result) {
      this._diff = result.ok ? result.output : '';
      this._say(result.ok ? 'Diff ready.' : `Diff failed: ${result.evalue}`);
    }
  }

  private async _share(snapshot: ISnapshot): Promise<void> {
    try {
      const reply = await this._client.request('snapshot_share', { ref: snapshot.id, link: true });
      const link = String(reply['link'] ?? '');
      Clipboard.copyToSystem(link);
      this._say(`Link copied: ${link}. Anyone on this gateway who has it can read and fork ${shortId(snapshot.id)}.`);
    } catch (reason) {
      this._say(`Could not share: ${Private.message(reason)}`);
    }
  }

  private async _delete(snapshot: ISnapshot): Promise<void> {
    const answer = await showDialog({
      title: `Delete snapshot ${shortId(snapshot.id)}?`,
      body: `${describe(snapshot, this._me)}\n\nIts refs and shares go with it. This cannot be undone.`,
      buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Delete' })]
    });
    if (!answer.button.accept) {
      return;
    }
    try {
      await this._client.request('snapshot_rm', { ref: snapshot.id });
      this._say(`Deleted ${shortId(snapshot.id)}.`);
    } catch (reason) {
      this._say(`Could not delete: ${Private.message(reason)}`);
    }
    await this.refresh();
  }

  // -- rendering ------------------------------------------------------------------------------------------------

  private _render(): void {
    // Rebuilt whole (the lists are short); focus goes back to the control that had it, for keyboard users.
    const focused = (document.activeElement as HTMLElement | null)?.dataset?.['focusKey'];
    const node = this.node;
    node.replaceChildren();

    const header = Private.el('div', 'kernelhop-Snapshots-header');
    header.append(Private.el('h2', 'kernelhop-Snapshots-title', 'Snapshots'));
    header.append(Private.button('Refresh', 'Refresh the snapshot list', 'refresh', () => void this.refresh()));
    node.append(header);

    const status = Private.el('div', 'kernelhop-Snapshots-message', this._message);
    // Results of actions are announced, without moving focus.
    status.setAttribute('role', 'status');
    status.setAttribute('aria-live', 'polite');
    node.append(status);

    const state = this._client.status.state;
    if (state !== 'connected') {
      node.append(
        Private.el(
          'p',
          'kernelhop-Snapshots-empty',
          state === 'refused'
            ? 'The gateway refused the token: snapshots cannot be listed.'
            : state === 'down'
              ? 'The gateway is down: snapshots cannot be listed.'
              : 'Connecting to the gateway…'
        )
      );
    } else {
      const panel = this._tracker.currentWidget;
      const path = panel?.context.path ?? null;
      const own = historyOf(this._list?.own ?? [], path);
      node.append(this._section(path ? `History of ${PathExt.basename(path)}` : 'Open a notebook to see its history', own, false));
      const diffButton = Private.button(
        this._selected.length === 2 ? 'Diff the two selected' : `Select two to diff (${this._selected.length}/2)`,
        'Compare the two selected snapshots: names added, changed and removed',
        'diff',
        () => void this._showDiff()
      );
      diffButton.disabled = this._selected.length !== 2;
      node.append(diffButton);
      if (this._diff) {
        const pre = Private.el('pre', 'kernelhop-Snapshots-diff', this._diff);
        pre.setAttribute('aria-label', 'Diff of the selected snapshots');
        pre.tabIndex = 0;
        node.append(pre);
      }
      node.append(this._section('Shared with me', this._list?.shared ?? [], true));
      if (panel) {
        node.append(this._costs(panel));
      }
    }

    if (focused) {
      node.querySelector<HTMLElement>(`[data-focus-key="${CSS.escape(focused)}"]`)?.focus();
    }
  }

  private _section(title: string, snapshots: ReadonlyArray<ISnapshot>, shared: boolean): HTMLElement {
    const section = Private.el('section', 'kernelhop-Snapshots-section');
    const heading = Private.el('h3', '', title);
    heading.id = `kernelhop-snapshots-${shared ? 'shared' : 'history'}`;
    section.setAttribute('aria-labelledby', heading.id);
    section.append(heading);
    if (snapshots.length === 0) {
      section.append(
        Private.el(
          'p',
          'kernelhop-Snapshots-empty',
          shared ? 'Nothing shared with you.' : 'No snapshots yet: run %snapshot save in the notebook.'
        )
      );
      return section;
    }
    const list = Private.el('ul', 'kernelhop-Snapshots-list');
    for (const snapshot of snapshots) {
      list.append(this._item(snapshot, shared));
    }
    section.append(list);
    return section;
  }

  private _item(snapshot: ISnapshot, shared: boolean): HTMLElement {
    const short = shortId(snapshot.id);
    const item = Private.el('li', 'kernelhop-Snapshots-item');
    item.dataset['snapshot'] = snapshot.id;
    const select = document.createElement('input');
    select.type = 'checkbox';
    select.checked = this._selected.includes(snapshot.id);
    select.setAttribute('aria-label', `Select ${short} to diff`);
    select.dataset['focusKey'] = `select-${snapshot.id}`;
    select.addEventListener('change', () => {
      this._selected = toggleSelection(this._selected, snapshot.id);
      this._render();
    });
    const label = Private.el('div', 'kernelhop-Snapshots-label');
    label.append(Private.el('code', 'kernelhop-Snapshots-id', short), Private.el('span', '', describe(snapshot, this._me)));
    label.title = snapshot.id;
    const actions = Private.el('div', 'kernelhop-Snapshots-actions');
    actions.append(
      Private.button('Restore', `Restore ${short} into this notebook's kernel`, `restore-${snapshot.id}`, () => void this._restore(snapshot)),
      Private.button('Fork', `Fork ${short} into a new notebook`, `fork-${snapshot.id}`, () => void this._fork(snapshot))
    );
    // A grantee may read and fork, never share or delete (docs/ARCHITECTURE.md, Shares).
    if (!shared) {
      actions.append(
        Private.button('Copy link', `Copy link to ${short} (a read-only share)`, `share-${snapshot.id}`, () => void this._share(snapshot)),
        Private.button('Delete', `Delete ${short}`, `delete-${snapshot.id}`, () => void this._delete(snapshot))
      );
    }
    item.append(select, label, actions);
    return item;
  }

  /** The cost meter's detail: the notebook's GPU-seconds in all and per cell still in the notebook. */
  private _costs(panel: NotebookPanel): HTMLElement {
    const section = Private.el('section', 'kernelhop-Snapshots-section kernelhop-Costs');
    const heading = Private.el('h3', '', 'GPU time of this notebook');
    heading.id = 'kernelhop-snapshots-costs';
    section.setAttribute('aria-labelledby', heading.id);
    const ledger = this._hops?.hopsOf(panel).ledger;
    this._costShown = ledger?.total ?? 0;
    section.append(heading, Private.el('p', 'kernelhop-Costs-total', `Total: ${gpuSecondsText(ledger?.total ?? 0)}`));
    const cells = panel.content.widgets;
    const list = Private.el('ul', 'kernelhop-Costs-cells');
    cells.forEach((cell, index) => {
      const seconds = ledger?.cells[cell.model.id];
      if (seconds !== undefined) {
        list.append(Private.el('li', '', `Cell ${index + 1}: ${gpuSecondsText(seconds)}`));
      }
    });
    if (list.childElementCount) {
      section.append(list);
    }
    return section;
  }

  private readonly _app: JupyterFrontEnd;
  private readonly _client: IGatewayLink;
  private readonly _tracker: INotebookTracker;
  private readonly _hops: IHopTracker | null;
  private _list: ISnapshotList | null = null;
  private _me: string | null = null;
  private _selected: string[] = [];
  private _diff = '';
  private _message = '';
  private _costShown = 0;
  private _state: IGatewayStatus['state'];
}

namespace Private {
  export function el<K extends keyof HTMLElementTagNameMap>(tag: K, className: string, text?: string): HTMLElementTagNameMap[K] {
    const node = document.createElement(tag);
    if (className) {
      node.className = className;
    }
    if (text !== undefined) {
      node.textContent = text;
    }
    return node;
  }

  /** A real <button>: focusable, Enter and Space work, and its aria-label says which snapshot it acts on. */
  export function button(text: string, label: string, focusKey: string, onClick: () => void): HTMLButtonElement {
    const node = el('button', 'jp-Button jp-mod-minimal kernelhop-Snapshots-button', text);
    node.type = 'button';
    // The accessible name starts with the visible text, so voice control users can say what they see.
    if (label.startsWith(text)) {
      node.setAttribute('aria-label', label);
    }
    node.title = label;
    node.dataset['focusKey'] = focusKey;
    node.addEventListener('click', onClick);
    return node;
  }

  export function message(reason: unknown): string {
    return reason instanceof Error ? reason.message : String(reason);
  }
}
