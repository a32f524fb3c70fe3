import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { CodeCell } from '@jupyterlab/cells';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { KernelMessage } from '@jupyterlab/services';
import { Token } from '@lumino/coreutils';
import { ISignal, Signal } from '@lumino/signaling';

import { INotebookHops } from './format';
import { addCost, EMPTY_LEDGER, HOP_MIME_TYPE, isActive, parseHop, parseLedger } from './hop';

/** Where the ledger lives in a notebook's metadata: `{total, cells: {cellId: seconds}}`. */
export const METADATA_KEY = 'kernelhop';

/** The hops of each open notebook, as its kernel publishes them (kernelhop/magics/hop_display.py). */
export interface IHopTracker {
  /** Emitted with the notebook whose hops changed: a step, a finished hop, a cost. */
  readonly changed: ISignal<IHopTracker, NotebookPanel>;
  hopsOf(panel: NotebookPanel): INotebookHops;
}

export const IHopTracker = new Token<IHopTracker>(
  'kernelhop-labextension:IHopTracker',
  "Each notebook's hop under way, its last finished hop and its GPU-seconds."
);

export const hopTrackerPlugin: JupyterFrontEndPlugin<IHopTracker> = {
  id: 'kernelhop-labextension:hop-tracker',
  description: "Follows each notebook kernel's hop displays for the status bar and the cost meter.",
  autoStart: true,
  requires: [INotebookTracker],
  provides: IHopTracker,
  activate: (_app: JupyterFrontEnd, tracker: INotebookTracker): IHopTracker => new HopTracker(tracker)
};

/**
 * Reads the kernel's iopub rather than the rendered outputs: it sees every update of a display (an output area
 * keeps only the newest), also for cells scrolled out of view, and a finished hop is counted once by its id.
 */
class HopTracker implements IHopTracker {
  constructor(tracker: INotebookTracker) {
    tracker.widgetAdded.connect((_, panel) => this._watch(panel));
    tracker.forEach(panel => this._watch(panel));
  }

  get changed(): ISignal<IHopTracker, NotebookPanel> {
    return this._changed;
  }

  hopsOf(panel: NotebookPanel): INotebookHops {
    const live = this._live.get(panel);
    return {
      active: live?.active ?? null,
      last: live?.last ?? null,
      ledger: panel.model ? parseLedger(panel.model.getMetadata(METADATA_KEY)) : EMPTY_LEDGER
    };
  }

  private _watch(panel: NotebookPanel): void {
    const live: Private.ILive = { active: null, last: null, counted: new Set() };
    this._live.set(panel, live);
    const onMessage = (_: unknown, msg: KernelMessage.IMessage): void => this._onMessage(panel, live, msg);
    panel.sessionContext.iopubMessage.connect(onMessage);
    // A restarted kernel forgets its hop under way; so does the status bar.
    panel.sessionContext.statusChanged.connect((_, status) => {
      if ((status === 'restarting' || status === 'dead') && live.active) {
        live.active = null;
        this._changed.emit(panel);
      }
    });
    panel.disposed.connect(() => panel.sessionContext.iopubMessage.disconnect(onMessage));
  }

  private _onMessage(panel: NotebookPanel, live: Private.ILive, msg: KernelMessage.IMessage): void {
    const type = msg.header.msg_type;
    if (type !== 'display_data' && type !== 'update_display_data') {
      return;
    }
    const data = (msg.content as KernelMessage.IDisplayDataMsg['content']).data;
    const hop = parseHop(data?.[HOP_MIME_TYPE]);
    if (!hop) {
      return;
    }
    if (isActive(hop)) {
      live.active = hop;
    } else {
      live.active = null;
      // A failed hop has no split to show; its cell says why it failed, and the last split stays the last one.
      if (hop.phase === 'done') {
        live.last = hop;
        if (!live.counted.has(hop.id)) {
          live.counted.add(hop.id);
          this._count(panel, (msg.parent_header as Partial<KernelMessage.IHeader>).msg_id, hop.gpuS);
        }
      }
    }
    this._changed.emit(panel);
  }

  /** Adds a finished hop's GPU-seconds to the notebook's metadata, to its cell (the one whose execution it is). */
  private _count(panel: NotebookPanel, parentId: string | undefined, gpuS: number): void {
    const model = panel.model;
    if (!model) {
      return;
    }
    const cell = panel.content.widgets.find(
      c => c instanceof CodeCell && parentId !== undefined && c.outputArea.future?.msg.header.msg_id === parentId
    );
    const ledger = addCost(parseLedger(model.getMetadata(METADATA_KEY)), cell?.model.id ?? null, gpuS);
    model.setMetadata(METADATA_KEY, { total: ledger.total, cells: { ...ledger.cells } });
  }

  private readonly _changed = new Signal<IHopTracker, NotebookPanel>(this);
  private readonly _live = new WeakMap<NotebookPanel, Private.ILive>();
}

namespace Private {
  export interface ILive {
    active: ReturnType<typeof parseHop>;
    last: ReturnType<typeof parseHop>;
    /** Finished hops already counted: a display can be sent again (a kernel replaying, a second frontend). */
    counted: Set<string>;
  }
}
