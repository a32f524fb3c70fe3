import { JupyterFrontEnd } from '@jupyterlab/application';
import { NotebookPanel } from '@jupyterlab/notebook';
import { Kernel, KernelMessage } from '@jupyterlab/services';

/**
 * The snapshot operations that change or read a kernel's state run in that kernel, through the `%snapshot` magic:
 * the kernel holds the user's signing key and trust list and does every check (signature, trust, digests) before
 * a pickle runs. The browser only asks.
 */

/** What one `%snapshot` command printed, and the error it raised if any. */
export interface ICommandResult {
  readonly ok: boolean;
  readonly output: string;
  /** The exception's class name (`UntrustedSnapshot` asks for trust) and message. */
  readonly ename: string;
  readonly evalue: string;
}

/**
 * Runs `%snapshot ARGS` in `kernel`, loading kernelhop first (a no-op when loaded). Not stored in the history:
 * it is not a cell of the notebook, and `%snapshot save` records the cells run since the last save.
 */
export async function runSnapshotCommand(kernel: Kernel.IKernelConnection, args: string): Promise<ICommandResult> {
  // JSON strings of ASCII are Python string literals; ids and flags are ASCII.
  const code =
    "get_ipython().extension_manager.load_extension('kernelhop')\n" +
    `get_ipython().run_line_magic('snapshot', ${JSON.stringify(args)})`;
  const future = kernel.requestExecute({ code, silent: false, store_history: false, allow_stdin: false });
  let output = '';
  let ename = '';
  let evalue = '';
  future.onIOPub = (msg: KernelMessage.IIOPubMessage): void => {
    if (KernelMessage.isStreamMsg(msg)) {
      output += msg.content.text;
    } else if (KernelMessage.isErrorMsg(msg)) {
      ename = msg.content.ename;
      evalue = msg.content.evalue;
    }
  };
  const reply = await future.done;
  return { ok: reply.content.status === 'ok', output: output.trim(), ename, evalue };
}

/** The notebook's kernel, started if need be; null when the user chose no kernel. */
export async function kernelOf(panel: NotebookPanel): Promise<Kernel.IKernelConnection | null> {
  await panel.sessionContext.ready;
  return panel.sessionContext.session?.kernel ?? null;
}

/**
 * A fork in a new notebook: a new notebook with a new kernel, into which the fork (a new snapshot signed by the
 * user, the source as its parent) is restored. The new notebook says where its state came from.
 */
export async function forkIntoNewNotebook(
  app: JupyterFrontEnd,
  snapshotId: string,
  trust: boolean,
  cwd: string
): Promise<{ panel: NotebookPanel; result: ICommandResult }> {
  const panel = (await app.commands.execute('notebook:create-new', { cwd, kernelName: 'python3' })) as NotebookPanel;
  await panel.context.ready;
  const kernel = await kernelOf(panel);
  if (!kernel) {
    throw new Error('the new notebook has no kernel to hold the fork');
  }
  const result = await runSnapshotCommand(kernel, `fork ${snapshotId} --here${trust ? ' --trust' : ''}`);
  if (result.ok) {
    const cell = panel.content.model?.sharedModel.getCell(0);
    cell?.setSource(`# This kernel holds a fork of snapshot ${snapshotId.slice(0, 12)}: run this cell to list its variables.\n%whos`);
  }
  return { panel, result };
}
