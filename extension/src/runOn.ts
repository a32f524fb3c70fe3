import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ToolbarButton } from '@jupyterlab/apputils';
import { DocumentRegistry } from '@jupyterlab/docregistry';
import { INotebookModel, INotebookTracker, NotebookActions, NotebookPanel } from '@jupyterlab/notebook';
import { IDisposable } from '@lumino/disposable';
import { Menu } from '@lumino/widgets';

import { classLabel } from './format';
import { withGpuMagic } from './magic';
import { IGatewayLink } from './tokens';

export namespace CommandIDs {
  export const runOn = 'kernelhop:run-on';
  export const noClasses = 'kernelhop:no-classes';
}

/**
 * "Run on ▸": in the cell context menu and on the notebook toolbar, one entry per GPU class the gateway offers now.
 * Choosing one makes the active cell a `%%gpu CLASS` cell and runs it; the kernel's magic does the hop.
 */
export const runOnPlugin: JupyterFrontEndPlugin<void> = {
  id: 'kernelhop-labextension:run-on',
  description: 'Runs the active cell on a GPU class chosen from the classes available now.',
  autoStart: true,
  requires: [IGatewayLink, INotebookTracker],
  activate: (app: JupyterFrontEnd, client: IGatewayLink, tracker: INotebookTracker): void => {
    const { commands } = app;

    commands.addCommand(CommandIDs.runOn, {
      label: args => {
        const name = String(args['gpuClass']);
        const gpuClass = client.status.classes.find(c => c.name === name);
        return gpuClass ? classLabel(gpuClass) : name;
      },
      caption: args => `Run the active cell on ${String(args['gpuClass'])} with the kernel's state`,
      isEnabled: () => tracker.currentWidget?.content.activeCell?.model.type === 'code',
      execute: async args => {
        const panel = tracker.currentWidget;
        const cell = panel?.content.activeCell;
        if (!panel || !cell || cell.model.type !== 'code') {
          return;
        }
        const source = cell.model.sharedModel;
        source.setSource(withGpuMagic(source.getSource(), String(args['gpuClass'])));
        // Only the chosen cell: a multi-cell selection would otherwise all be run, locally.
        panel.content.deselectAll();
        await NotebookActions.run(panel.content, panel.sessionContext);
      }
    });

    // Shown instead of classes, so an empty menu still says why it is empty.
    commands.addCommand(CommandIDs.noClasses, {
      label: () => {
        switch (client.status.state) {
          case 'connected':
            return 'No GPU classes registered';
          case 'connecting':
            return 'Connecting to the gateway…';
          case 'refused':
            return 'Gateway refused the token';
          case 'down':
            return 'Gateway down';
        }
      },
      isEnabled: () => false,
      execute: () => undefined
    });

    const menu = new Menu({ commands });
    menu.id = 'kernelhop-run-on-menu';
    menu.title.label = 'Run on';
    menu.title.caption = 'Run the active cell on a GPU class';
    const populate = (): void => {
      menu.clearItems();
      const { classes } = client.status;
      if (classes.length === 0) {
        menu.addItem({ command: CommandIDs.noClasses });
      }
      for (const gpuClass of classes) {
        menu.addItem({ command: CommandIDs.runOn, args: { gpuClass: gpuClass.name } });
      }
    };
    populate();
    client.statusChanged.connect(populate);

    app.contextMenu.addItem({ type: 'submenu', submenu: menu, selector: '.jp-Notebook .jp-CodeCell', rank: 0 });
    app.docRegistry.addWidgetExtension('Notebook', new RunOnButtonExtension(menu));
  }
};

/** A notebook toolbar button that opens the same menu under itself. */
class RunOnButtonExtension implements DocumentRegistry.IWidgetExtension<NotebookPanel, INotebookModel> {
  constructor(menu: Menu) {
    this._menu = menu;
  }

  createNew(panel: NotebookPanel): IDisposable {
    const button: ToolbarButton = new ToolbarButton({
      className: 'kernelhop-RunOnButton',
      // No "▸" in the label: it is also the accessible name, and aria-haspopup already says a menu opens.
      label: 'Run on',
      tooltip: 'Run the active cell on a GPU class',
      'aria-haspopup': 'menu',
      onClick: () => {
        const rect = button.node.getBoundingClientRect();
        this._menu.open(rect.left, rect.bottom);
      }
    });
    panel.toolbar.insertAfter('run', 'kernelhop-run-on', button);
    return button;
  }

  private readonly _menu: Menu;
}
