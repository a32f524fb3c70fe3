// A full disk under the gateway's data directory (blob files: ENOSPC; SQLite: SQLITE_FULL) is the admin's to fix,
// not a gateway bug: the user gets a code of its own and what to do, instead of an `internal` error.

export const DISK_FULL_MESSAGE =
  "the gateway's disk is full (no space left on device where it keeps its data): what this request sent was not " +
  'stored and your local state is unchanged. Ask the gateway\'s admin to free space (`kernelhop snapshot gc`, ' +
  '`kernelhop snapshot rm`) or grow the disk, then run it again';

export function isDiskFull(e: unknown): boolean {
  const code = (e as { code?: unknown } | null)?.code;
  return code === 'ENOSPC' || code === 'SQLITE_FULL' || code === 'EDQUOT';
}
