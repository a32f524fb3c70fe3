import { JupyterFrontEndPlugin } from '@jupyterlab/application';

import { gatewayPlugin } from './connection';
import { hopRendererPlugin } from './hopRenderer';
import { hopTrackerPlugin } from './hopTracker';
import { magicHighlightPlugin } from './magicHighlight';
import { runOnPlugin } from './runOn';
import { snapshotPanelPlugin } from './snapshotPanel';
import { statusBarPlugin } from './statusBar';

export { GatewayLink, GatewayError } from './gatewayLink';
export * from './tokens';
export { IHopTracker } from './hopTracker';

const plugins: JupyterFrontEndPlugin<any>[] = [
  gatewayPlugin,
  hopTrackerPlugin,
  hopRendererPlugin,
  statusBarPlugin,
  runOnPlugin,
  magicHighlightPlugin,
  snapshotPanelPlugin
];

export default plugins;
