// Users, blob holds, snapshots, refs, shares, runtime tokens, the usage ledger and user limits: the tables each SQLite
// store used to make on open, now versioned so Postgres has them too. IF NOT EXISTS: a kernelhop.db made before this
// migration has them already and takes it as applied. "user" is quoted: a reserved word in Postgres, the same column
// name in SQLite. WITHOUT ROWID (SQLite only) keeps the two-column keys in one b-tree, as before.
import type { Dialect } from './index.js';

export default (dialect: Dialect): string => {
  const withoutRowid = dialect === 'sqlite' ? ' WITHOUT ROWID' : '';
  return `
CREATE TABLE IF NOT EXISTS users (
  name TEXT PRIMARY KEY,
  token_hash TEXT NOT NULL UNIQUE,
  admin INTEGER NOT NULL,
  public_key TEXT,
  quota_bytes BIGINT NOT NULL,
  created_at BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS blob_holds (
  "user" TEXT NOT NULL,
  digest TEXT NOT NULL,
  size BIGINT NOT NULL,
  at BIGINT NOT NULL,
  PRIMARY KEY ("user", digest)
)${withoutRowid};
CREATE INDEX IF NOT EXISTS blob_holds_by_digest ON blob_holds (digest);
CREATE TABLE IF NOT EXISTS manifest_blobs (
  manifest TEXT NOT NULL,
  digest TEXT NOT NULL,
  size BIGINT NOT NULL,
  PRIMARY KEY (manifest, digest)
)${withoutRowid};
CREATE INDEX IF NOT EXISTS manifest_blobs_by_digest ON manifest_blobs (digest);
CREATE TABLE IF NOT EXISTS snapshots (
  owner TEXT NOT NULL,
  id TEXT NOT NULL,
  author TEXT NOT NULL,
  manifest TEXT NOT NULL,
  record TEXT NOT NULL,
  signature TEXT NOT NULL,
  imported INTEGER NOT NULL,
  created_at BIGINT NOT NULL,
  size_bytes BIGINT NOT NULL,
  PRIMARY KEY (owner, id)
);
CREATE INDEX IF NOT EXISTS snapshots_by_manifest ON snapshots (manifest);
CREATE INDEX IF NOT EXISTS snapshots_by_id ON snapshots (id);
CREATE TABLE IF NOT EXISTS snapshot_refs (
  owner TEXT NOT NULL,
  name TEXT NOT NULL,
  snapshot TEXT NOT NULL,
  updated_at BIGINT NOT NULL,
  PRIMARY KEY (owner, name)
);
CREATE TABLE IF NOT EXISTS shares (
  id TEXT PRIMARY KEY,
  snapshot TEXT NOT NULL,
  owner TEXT NOT NULL,
  grantee TEXT,
  link_hash TEXT UNIQUE,
  created_at BIGINT NOT NULL,
  expires_at BIGINT,
  revoked_at BIGINT
);
CREATE INDEX IF NOT EXISTS shares_by_grantee ON shares (grantee);
CREATE TABLE IF NOT EXISTS link_redemptions (
  share TEXT NOT NULL,
  "user" TEXT NOT NULL,
  PRIMARY KEY (share, "user")
);
CREATE TABLE IF NOT EXISTS runtime_tokens (
  id TEXT PRIMARY KEY,
  token_hash TEXT NOT NULL UNIQUE,
  gpu_class TEXT,
  created_at BIGINT NOT NULL,
  revoked_at BIGINT
);
CREATE TABLE IF NOT EXISTS usage (
  run_id TEXT PRIMARY KEY,
  "user" TEXT NOT NULL,
  notebook TEXT NOT NULL,
  cell TEXT NOT NULL,
  gpu_class TEXT NOT NULL,
  runtime TEXT NOT NULL,
  started_at BIGINT NOT NULL,
  ended_at BIGINT NOT NULL,
  gpu_ms BIGINT NOT NULL,
  outcome TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS usage_by_user ON usage ("user", ended_at);
CREATE INDEX IF NOT EXISTS usage_by_end ON usage (ended_at);
CREATE TABLE IF NOT EXISTS user_limits (
  "user" TEXT PRIMARY KEY,
  slots INTEGER NOT NULL
);
`;
};
