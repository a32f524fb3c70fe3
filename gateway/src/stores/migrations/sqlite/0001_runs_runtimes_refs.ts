// The metadata tables as the gateway first made them (IF NOT EXISTS: a database from before migrations takes this
// as applied, unchanged).
export default `
CREATE TABLE IF NOT EXISTS runtimes (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  classes_json TEXT NOT NULL,
  capacity INTEGER NOT NULL,
  version TEXT NOT NULL,
  registered_at INTEGER NOT NULL,
  last_seen_at INTEGER NOT NULL,
  gone_at INTEGER,
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
  created_at INTEGER NOT NULL,
  started_at INTEGER,
  finished_at INTEGER
);
CREATE INDEX IF NOT EXISTS runs_by_session ON runs (session, created_at);
CREATE TABLE IF NOT EXISTS refs (
  name TEXT PRIMARY KEY,
  manifest TEXT NOT NULL,
  owner TEXT NOT NULL,
  updated_at INTEGER NOT NULL
);
`;
