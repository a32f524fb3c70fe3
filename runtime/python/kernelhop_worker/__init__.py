"""The worker process a kernelhop runtime starts: restores a snapshot, runs one cell with IPython's
semantics, captures the namespace again. Commands arrive as JSON lines on stdin, events leave as
JSON lines on fd 3 (see docs/ARCHITECTURE.md, "Runtime ↔ worker")."""
