// What --store and --metadata name: where blobs and metadata live past the embedded default under --data.
export interface S3Location {
  bucket: string;
  /** Key prefix without leading or trailing slash; "" for the bucket's root. */
  prefix: string;
}

export type BlobStoreChoice = { kind: 'disk' } | { kind: 's3'; location: S3Location; endpoint?: string };
export type MetadataChoice = { kind: 'sqlite' } | { kind: 'postgres'; url: string };

export class StoreUrlError extends Error {
  override name = 'StoreUrlError';
}

/** `--store`: absent = the directory under --data; `s3://BUCKET[/PREFIX]` = an S3-compatible bucket. */
export function parseStore(text: string | undefined, endpoint: string | undefined): BlobStoreChoice {
  if (text === undefined) {
    if (endpoint !== undefined) throw new StoreUrlError('--s3-endpoint is for --store s3://BUCKET/PREFIX; give --store too');
    return { kind: 'disk' };
  }
  const m = /^s3:\/\/([^/]+)(?:\/(.*))?$/.exec(text);
  // Bucket names as S3 allows them (3-63 of lowercase letters, digits, dots, hyphens).
  if (m === null || !/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(m[1] as string)) {
    throw new StoreUrlError(`--store ${JSON.stringify(text)}: expected s3://BUCKET/PREFIX (a bucket name of 3-63 lowercase letters, digits, . and -)`);
  }
  if (endpoint !== undefined && !/^https?:\/\/[^/]+/.test(endpoint)) {
    throw new StoreUrlError(`--s3-endpoint ${JSON.stringify(endpoint)}: expected an http:// or https:// URL, e.g. http://127.0.0.1:9000`);
  }
  const prefix = (m[2] ?? '').replace(/^\/+|\/+$/g, '');
  return { kind: 's3', location: { bucket: m[1] as string, prefix }, ...(endpoint === undefined ? {} : { endpoint }) };
}

/** `--metadata`: absent = SQLite under --data; `postgres://...` (or postgresql://) = a PostgreSQL database. */
export function parseMetadata(text: string | undefined): MetadataChoice {
  if (text === undefined) return { kind: 'sqlite' };
  if (!/^postgres(ql)?:\/\/./.test(text)) {
    throw new StoreUrlError(`--metadata ${JSON.stringify(redact(text))}: expected postgres://USER:PASSWORD@HOST:PORT/DATABASE`);
  }
  return { kind: 'postgres', url: text };
}

/** A connection URL fit for logs and errors: without its password. */
export function redact(url: string): string {
  return url.replace(/^([a-z]+:\/\/[^:/@]*):[^@/]*@/, '$1:***@');
}
