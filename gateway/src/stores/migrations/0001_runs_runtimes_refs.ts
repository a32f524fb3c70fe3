// The metadata tables as the gateway first made them, one text for both databases. IF NOT EXISTS: a SQLite database
// from before migrations takes this as applied, unchanged. Times are milliseconds since the epoch, BIGINT (past int4
// in Postgres; in SQLite any type naming INT has integer affinity, so BIGINT and INTEGER store alike).
export default (): string => `
CREATE TABLE IF NOT EXISTS runtimes (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  classes_json TEXT NOT NULL,
  capacity INTEGER NOT NULL,
  version TEXT NOT NULL,
  registered_at BIGINT NOT NULL,
  last_seen_at BIGINT NOT NULL,
  gone_at BIGINT,
  gone_reason TEXT
);
CREATE TABLE IF NOT EXISTS runs (
  id TEXT PRIMARY KEY,
  session TEXT NOT NULL,
  gpu_class TEXT NOT NULL,
  snapshot TEXT NOT NULL,
  status TEXT NOT NULL,
  runtime_id TEXT,
  outcome TEXT,
  result_snapshot TEXT,
  error_code TEXT,
  error_message TEXT,
  timings_json TEXT,
  created_at BIGINT NOT NULL,
  started_at BIGINT,
  finished_at BIGINT
);
CREATE INDEX IF NOT EXISTS runs_by_session ON runs (session, created_at);
CREATE TABLE IF NOT EXISTS refs (
  name TEXT PRIMARY KEY,
  manifest TEXT NOT NULL,
  owner TEXT NOT NULL,
  updated_at BIGINT NOT NULL
);
`;
