import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

import { GatewayLink } from './gatewayLink';
import { IGatewayLink } from './tokens';

/**
 * Provides the gateway link.
 *
 * The browser talks to the gateway through the Jupyter server (`/kernelhop/ws`, kernelhop/lab/server.py) rather than
 * at the gateway's own address: that address is the kernel's view (often 127.0.0.1), which a remote browser (Binder,
 * JupyterHub) cannot reach, and the token then never has to leave the server.
 */
export const gatewayPlugin: JupyterFrontEndPlugin<IGatewayLink> = {
  id: 'kernelhop-labextension:gateway',
  description: 'Connects the browser to the kernelhop gateway through the Jupyter server.',
  autoStart: true,
  provides: IGatewayLink,
  activate: (app: JupyterFrontEnd): IGatewayLink => {
    const settings = app.serviceManager.serverSettings;
    return new GatewayLink({ url: () => Private.proxyUrl(settings), WebSocket: settings.WebSocket });
  }
};

namespace Private {
  /** As JupyterLab's kernel sockets do: a token-authenticated server needs `?token=` on the upgrade. */
  export function proxyUrl(settings: ServerConnection.ISettings): string {
    const url = URLExt.join(settings.wsUrl, 'kernelhop', 'ws');
    return settings.appendToken && settings.token ? `${url}?token=${encodeURIComponent(settings.token)}` : url;
  }
}
