"""Wheel build step: bundle the gateway and the runtime into kernelhop/bundle (`npm run bundle`, esbuild), so the
wheel runs them with no checkout, npm or compiler. An sdist carries the bundle already, so a wheel built from it
needs no npm either."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

ENTRIES = ("kernelhop/bundle/gateway/dist/src/main.js", "kernelhop/bundle/runtime/dist/src/main.js")


class BundleHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict) -> None:
        if self.target_name not in ("wheel", "sdist") or version == "editable":
            return  # an editable install runs the checkout's own build (see kernelhop/cli/installation.py)
        root = Path(self.root)
        if not (root / "node_modules").is_dir():
            if all((root / entry).exists() for entry in ENTRIES):
                return
            raise RuntimeError("the wheel bundles the gateway and the runtime: run `npm ci` in the checkout first")
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError("the wheel bundles the gateway and the runtime with npm, which is not on PATH")
        subprocess.run([npm, "run", "bundle"], cwd=root, check=True)
