import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { IRenderMimeRegistry } from '@jupyterlab/rendermime';
import { IRenderMime } from '@jupyterlab/rendermime-interfaces';
import { Widget } from '@lumino/widgets';

import {
  gpuSecondsText,
  HOP_MIME_TYPE,
  IHopState,
  parseHop,
  phaseText,
  progressFraction,
  SPLIT_STEPS,
  SplitStep,
  splitText,
  whereText
} from './hop';

/**
 * Renders the kernel's hop display in the cell's output: what the hop does now, a progress bar while it moves bytes
 * (an indeterminate one otherwise, so a cell never looks frozen), and the time split when it is done.
 */
export const hopRendererPlugin: JupyterFrontEndPlugin<void> = {
  id: 'kernelhop-labextension:hop-renderer',
  description: "Renders a %%gpu cell's live hop display: progress, time left, the time split.",
  autoStart: true,
  requires: [IRenderMimeRegistry],
  activate: (_app: JupyterFrontEnd, registry: IRenderMimeRegistry): void => {
    // Rank 0: ahead of text/plain, which the kernel sends along for other frontends.
    registry.addFactory({ safe: true, mimeTypes: [HOP_MIME_TYPE], createRenderer: () => new RenderedHop() }, 0);
  }
};

export class RenderedHop extends Widget implements IRenderMime.IRenderer {
  constructor() {
    super();
    this.addClass('kernelhop-Hop');
  }

  renderModel(model: IRenderMime.IMimeModel): Promise<void> {
    const hop = parseHop(model.data[HOP_MIME_TYPE]);
    this.node.replaceChildren();
    if (!hop) {
      // A display from a newer kernelhop: its text line still says what happened.
      this.node.textContent = String(model.data['text/plain'] ?? 'kernelhop: a hop display this version cannot read');
      return Promise.resolve();
    }
    this.node.dataset['phase'] = hop.phase;
    this.node.append(Private.line(hop));
    if (hop.phase === 'done' && hop.split) {
      this.node.append(Private.splitBar(hop.split));
    } else if (hop.phase !== 'failed') {
      this.node.append(Private.progressBar(hop));
    }
    return Promise.resolve();
  }
}

namespace Private {
  function span(className: string, text: string): HTMLSpanElement {
    const node = document.createElement('span');
    node.className = className;
    node.textContent = text;
    return node;
  }

  export function line(hop: IHopState): HTMLElement {
    const node = document.createElement('div');
    node.className = 'kernelhop-Hop-line';
    node.append(span('kernelhop-Hop-where', whereText(hop)), ' · ');
    if (hop.phase === 'done') {
      const status = hop.status === 'error' ? ' (the cell raised)' : '';
      node.append(
        span('kernelhop-Hop-total', `${hop.totalS.toFixed(2)} s${status}`),
        ' · ',
        span('kernelhop-Hop-gpu', gpuSecondsText(hop.gpuS))
      );
    } else {
      node.append(span('kernelhop-Hop-phase', phaseText(hop)));
      // The seconds keep moving while the hop waits or runs: the cell is visibly alive.
      if (hop.phase !== 'failed') {
        node.append(' · ', span('kernelhop-Hop-elapsed', `${Math.floor(hop.elapsedS)} s`));
      }
    }
    return node;
  }

  /** Determinate while a step moves counted bytes; else indeterminate (no aria-valuenow, as ARIA says). */
  export function progressBar(hop: IHopState): HTMLElement {
    const bar = document.createElement('div');
    bar.className = 'kernelhop-Hop-progress';
    bar.setAttribute('role', 'progressbar');
    bar.setAttribute('aria-label', `kernelhop: ${hop.gpuClass} hop`);
    bar.setAttribute('aria-valuetext', phaseText(hop));
    const fill = document.createElement('div');
    fill.className = 'kernelhop-Hop-fill';
    const fraction = progressFraction(hop);
    if (fraction === null) {
      bar.classList.add('kernelhop-mod-indeterminate');
    } else {
      const percent = Math.round(fraction * 100);
      bar.setAttribute('aria-valuemin', '0');
      bar.setAttribute('aria-valuemax', '100');
      bar.setAttribute('aria-valuenow', String(percent));
      fill.style.width = `${percent}%`;
    }
    bar.append(fill);
    return bar;
  }

  /** The six steps as one stacked bar, each as wide as its share of the hop, with the numbers as its label. */
  export function splitBar(split: Readonly<Record<SplitStep, number>>): HTMLElement {
    const figure = document.createElement('div');
    figure.className = 'kernelhop-Hop-split';
    const bar = document.createElement('div');
    bar.className = 'kernelhop-Hop-splitBar';
    bar.setAttribute('role', 'img');
    const text = splitText(split);
    bar.setAttribute('aria-label', `time split in seconds: ${text}`);
    const sum = SPLIT_STEPS.reduce((total, step) => total + split[step], 0) || 1;
    for (const step of SPLIT_STEPS) {
      const segment = document.createElement('div');
      segment.className = `kernelhop-Hop-step kernelhop-Hop-step-${step}`;
      segment.style.flexGrow = String(split[step] / sum);
      segment.title = `${step} ${split[step].toFixed(2)} s`;
      bar.append(segment);
    }
    const legend = document.createElement('div');
    legend.className = 'kernelhop-Hop-legend';
    for (const step of SPLIT_STEPS) {
      const item = span('kernelhop-Hop-legendItem', `${step} ${split[step].toFixed(2)}`);
      item.dataset['step'] = step;
      legend.append(item);
    }
    legend.setAttribute('aria-hidden', 'true');
    figure.append(bar, legend);
    return figure;
  }
}
