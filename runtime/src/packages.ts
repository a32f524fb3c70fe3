// Package overlays (docs/ARCHITECTURE.md, "Packages"): for the environment a hop's kernel records, the packages this
// runtime's workers lack, installed once per requirement set into the cache and shared by every session with it.
// Built here, on the runtime's side, by `python -m kernelhop_worker.overlay` (wheels only, so no package code runs),
// then bound read-only into each worker's sandbox.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import { LRUCache } from 'lru-cache';

/** What a hop's worker is told: the overlay to put on sys.path (a host path), and what could not be matched. */
export interface Prepared {
  overlay: string | null;
  notes: Record<string, string>;
}

export interface OverlayOptions {
  python: string;
  /** Where overlays live (<cache>/packages): read by workers, written only by the runtime. */
  root: string;
  /** --index-url / --find-links as pip options; empty: pip's own configuration. */
  pipOptions: string[];
  log: (line: string) => void;
}

/** Environments already prepared by this runtime: a second session with the same one spawns nothing. */
const REMEMBERED = 256;

export class PackageOverlays {
  private readonly prepared = new LRUCache<string, Promise<Prepared>>({ max: REMEMBERED });

  constructor(private readonly opts: OverlayOptions) {
    // Enterable, not listable: a worker reaches the overlay it is given, but cannot list which sets other
    // sessions use (as root, where workers run as uids of their own).
    fs.mkdirSync(opts.root, { recursive: true, mode: 0o711 });
    fs.chmodSync(opts.root, 0o711);
  }

  get root(): string {
    return this.opts.root;
  }

  /** The overlay for a manifest's meta.environment ({python, packages}); never rejects (a failure is a note). */
  prepare(environment: unknown, recheck = true): Promise<Prepared> {
    const key = JSON.stringify(environment);
    const known = this.prepared.get(key);
    // An overlay built earlier whose directory is gone (the cache wiped) is built again, once.
    if (known !== undefined && recheck) {
      return known.then((p) => {
        if (p.overlay === null || fs.existsSync(p.overlay)) return p;
        if (this.prepared.get(key) === known) this.prepared.delete(key);
        return this.prepare(environment, false);
      });
    }
    let entry = this.prepared.get(key);
    if (entry === undefined) {
      entry = this.build(key).catch((err: Error) => {
        this.prepared.delete(key);
        return { overlay: null, notes: { packages: `the runtime could not prepare the kernel's packages: ${err.message}` } };
      });
      this.prepared.set(key, entry);
    }
    return entry;
  }

  private build(environment: string): Promise<Prepared> {
    const { python, root, pipOptions, log } = this.opts;
    const args = ['-m', 'kernelhop_worker.overlay', '--root', root, ...pipOptions];
    return new Promise((resolve, reject) => {
      // The runtime's own token stays here; pip keeps whatever else the host gives it (a private index's login).
      const env = { ...process.env, KERNELHOP_TOKEN: '' };
      const child = spawn(python, args, { stdio: ['pipe', 'pipe', 'pipe'], env });
      let out = '';
      let err = '';
      child.stdout.setEncoding('utf8').on('data', (t: string) => (out += t));
      child.stderr.setEncoding('utf8').on('data', (t: string) => (err += t));
      child.on('error', reject);
      child.on('exit', (code) => {
        if (code !== 0) return reject(new Error(`${python} ${args.join(' ')} exited with code ${code}: ${err.trim().slice(-2000)}`));
        let result: Prepared & { built: boolean };
        try {
          result = JSON.parse(out) as Prepared & { built: boolean };
        } catch {
          return reject(new Error(`${python} -m kernelhop_worker.overlay printed no result: ${out.slice(0, 200)}`));
        }
        const names = Object.keys(result.notes);
        if (result.built) log(`built package overlay ${result.overlay}${names.length ? ` (not matched: ${names.join(', ')})` : ''}`);
        resolve({ overlay: result.overlay, notes: result.notes });
      });
      child.stdin.end(environment);
    });
  }
}
