"""The gateway's client side, without IPython's magics: the WebSocket connection, the hop, snapshots, files, export."""
