/**
 * The snapshot panel's data: the gateway's `snapshot_list` reply read defensively, one notebook's history, the
 * selection for a diff. Pure logic, tested with node:test.
 */

import { bytesText } from './hop';

export interface ISnapshot {
  readonly id: string;
  readonly owner: string;
  /** Who signed it; restoring someone else's runs their code, so the UI says whose it is. */
  readonly author: string;
  readonly imported: boolean;
  readonly parents: ReadonlyArray<string>;
  readonly created: string;
  readonly message: string;
  /** The notebook the kernel served when it was saved (JPY_SESSION_NAME); null outside Jupyter. */
  readonly notebook: string | null;
  readonly cells: number;
  readonly sizeBytes: number;
  /** The caller's ref names pointing at it. */
  readonly refs: ReadonlyArray<string>;
  /** Set for a snapshot shared with the caller: the share's id and when it ends (ms since the epoch). */
  readonly share: { readonly id: string; readonly expiresAt: number | null } | null;
}

export interface ISnapshotList {
  readonly own: ReadonlyArray<ISnapshot>;
  readonly shared: ReadonlyArray<ISnapshot>;
}

/** The `snapshot_list` reply (docs/ARCHITECTURE.md); entries without an id are dropped, not trusted. */
export function parseSnapshotList(reply: Record<string, unknown>): ISnapshotList {
  const refs = new Map<string, string[]>();
  if (typeof reply['refs'] === 'object' && reply['refs'] !== null) {
    for (const [name, id] of Object.entries(reply['refs'] as Record<string, unknown>)) {
      if (typeof id === 'string') {
        refs.set(id, [...(refs.get(id) ?? []), name]);
      }
    }
  }
  const parse = (raw: unknown, shared: boolean): ISnapshot | null => {
    if (typeof raw !== 'object' || raw === null || typeof (raw as Record<string, unknown>)['id'] !== 'string') {
      return null;
    }
    const r = raw as Record<string, unknown>;
    const id = r['id'] as string;
    return {
      id,
      owner: text(r['owner']),
      author: text(r['author']),
      imported: r['imported'] === true,
      parents: Array.isArray(r['parents']) ? r['parents'].filter((p): p is string => typeof p === 'string') : [],
      created: text(r['created']),
      message: text(r['message']),
      notebook: typeof r['notebook'] === 'string' && r['notebook'] ? r['notebook'] : null,
      cells: count(r['cells']),
      sizeBytes: count(r['size_bytes']),
      refs: shared ? [] : (refs.get(id) ?? []),
      share: shared
        ? { id: text(r['share']), expiresAt: typeof r['expires_at'] === 'number' ? r['expires_at'] : null }
        : null
    };
  };
  const list = (raw: unknown, shared: boolean): ISnapshot[] =>
    (Array.isArray(raw) ? raw : []).map(s => parse(s, shared)).filter((s): s is ISnapshot => s !== null);
  return { own: newestFirst(list(reply['snapshots'], false)), shared: newestFirst(list(reply['shared'], true)) };
}

/** Newest first: a history reads back in time. ISO timestamps of one format sort as strings. */
export function newestFirst(snapshots: ISnapshot[]): ISnapshot[] {
  return [...snapshots].sort((a, b) => (a.created < b.created ? 1 : a.created > b.created ? -1 : 0));
}

/**
 * A notebook's snapshots: those whose record names it. The kernel records the path Jupyter gives it, which is the
 * notebook's path on the server's disk (JPY_SESSION_NAME), while the panel knows the path under the server's root:
 * the record's path must be the panel's or end with it.
 */
export function historyOf(snapshots: ReadonlyArray<ISnapshot>, notebookPath: string | null): ISnapshot[] {
  if (!notebookPath) {
    return [];
  }
  return snapshots.filter(s => s.notebook !== null && (s.notebook === notebookPath || s.notebook.endsWith(`/${notebookPath}`)));
}

export function shortId(id: string): string {
  return id.slice(0, 12);
}

/** "2026-11-27 21:00:05" from the record's ISO time. */
export function createdText(created: string): string {
  return created.slice(0, 19).replace('T', ' ');
}

/** One line about a snapshot: time, size, refs, message; "by alice" when someone else signed it. */
export function describe(snapshot: ISnapshot, me: string | null): string {
  const parts = [createdText(snapshot.created), bytesText(snapshot.sizeBytes)];
  if (snapshot.refs.length) {
    parts.push(`[${snapshot.refs.join(', ')}]`);
  }
  if (me === null || snapshot.author !== me) {
    parts.push(`by ${snapshot.author}${snapshot.imported ? ' (imported)' : ''}`);
  }
  if (snapshot.message) {
    parts.push(snapshot.message);
  }
  return parts.join(' · ');
}

/**
 * The selection for a diff after `id` was toggled: at most two, the oldest choice dropped when a third is picked,
 * so picking always does what the user just asked.
 */
export function toggleSelection(selected: ReadonlyArray<string>, id: string): string[] {
  if (selected.includes(id)) {
    return selected.filter(s => s !== id);
  }
  return [...selected, id].slice(-2);
}

/** The two selected snapshots as (older, newer), so a diff reads forward in time; null unless exactly two. */
export function diffPair(snapshots: ReadonlyArray<ISnapshot>, selected: ReadonlyArray<string>): [ISnapshot, ISnapshot] | null {
  const chosen = snapshots.filter(s => selected.includes(s.id));
  if (chosen.length !== 2) {
    return null;
  }
  const [newer, older] = newestFirst(chosen);
  return [older!, newer!];
}

function text(value: unknown): string {
  return typeof value === 'string' ? value : '';
}

function count(value: unknown): number {
  return typeof value === 'number' && Number.isFinite(value) && value >= 0 ? Math.floor(value) : 0;
}
