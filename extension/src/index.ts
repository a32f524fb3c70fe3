import { JupyterFrontEndPlugin } from '@jupyterlab/application';

import { gatewayPlugin } from './connection';
import { magicHighlightPlugin } from './magicHighlight';
import { runOnPlugin } from './runOn';
import { statusBarPlugin } from './statusBar';

export { GatewayClient, GatewayError } from './gatewayClient';
export * from './tokens';

const plugins: JupyterFrontEndPlugin<any>[] = [gatewayPlugin, statusBarPlugin, runOnPlugin, magicHighlightPlugin];

export default plugins;
