import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { EditorExtensionRegistry, IEditorExtensionRegistry } from '@jupyterlab/codemirror';
import { RangeSetBuilder } from '@codemirror/state';
import { Decoration, DecorationSet, EditorView, ViewPlugin, ViewUpdate } from '@codemirror/view';

import { isGpuMagicLine } from './magic';

/**
 * Marks a cell's `%%gpu` line.
 *
 * JupyterLab 4's "ipython" language is plain Python (@codemirror/lang-python), which reads `%%gpu h100` as
 * operators and names; the line decides where the cell runs, so it should stand out as a directive.
 */
export const magicHighlightPlugin: JupyterFrontEndPlugin<void> = {
  id: 'kernelhop-labextension:gpu-magic-highlight',
  description: 'Highlights the %%gpu line of a code cell.',
  autoStart: true,
  requires: [IEditorExtensionRegistry],
  activate: (_app: JupyterFrontEnd, registry: IEditorExtensionRegistry): void => {
    registry.addExtension({
      name: 'kernelhop:gpu-magic',
      // Read when the decorations are built, not when the editor is made: a cell's mime type follows the kernel.
      factory: ({ model }) => EditorExtensionRegistry.createImmutableExtension(Private.plugin(() => model.mimeType))
    });
  }
};

namespace Private {
  const line = Decoration.line({ class: 'kernelhop-GpuMagic' });

  /** IPython reads a cell magic only on a code cell's first line. */
  function decorate(view: EditorView, mimeType: string): DecorationSet {
    const builder = new RangeSetBuilder<Decoration>();
    const first = view.state.doc.line(1);
    if (mimeType === 'text/x-ipython' && isGpuMagicLine(first.text)) {
      builder.add(first.from, first.from, line);
    }
    return builder.finish();
  }

  export function plugin(mimeType: () => string) {
    return ViewPlugin.fromClass(
      class {
        decorations: DecorationSet;
        constructor(view: EditorView) {
          this.decorations = decorate(view, mimeType());
        }
        update(update: ViewUpdate): void {
          if (update.docChanged) {
            this.decorations = decorate(update.view, mimeType());
          }
        }
      },
      { decorations: v => v.decorations }
    );
  }
}
