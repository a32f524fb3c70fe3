// The one wording of a refused quota, for uploads and saves alike.
export function quotaMessage(used: number, quota: number, adding: number): string {
  return (
    `quota exceeded: ${used} of ${quota} bytes used, ${adding} more asked; ` +
    'delete snapshots with `kernelhop snapshot rm` or ask an admin for more'
  );
}
