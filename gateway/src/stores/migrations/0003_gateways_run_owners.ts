// Gateway liveness (ARCHITECTURE.md, "Several gateways"): each gateway's last beat and its interval (a gateway is
// lapsed by its own --liveness, not by its judge's), and on each run the gateway that relayed it and what its usage
// row needs, so a surviving gateway can end a lapsed one's runs and count their GPU-seconds. The run's class, runtime
// (runtime_id, named in runtimes) and start are on runs already. The columns are nullable: rows written before this
// migration name no gateway, and are never claimed.
export default (): string => `
CREATE TABLE IF NOT EXISTS gateways (
  id TEXT PRIMARY KEY,
  addr TEXT NOT NULL,
  started_at BIGINT NOT NULL,
  beat_at BIGINT NOT NULL,
  beat_ms BIGINT NOT NULL
);
ALTER TABLE runs ADD COLUMN gateway_id TEXT;
ALTER TABLE runs ADD COLUMN "user" TEXT;
ALTER TABLE runs ADD COLUMN notebook TEXT;
ALTER TABLE runs ADD COLUMN cell TEXT;
-- What claims and slot counts look up: a gateway's runs by status.
CREATE INDEX IF NOT EXISTS runs_by_gateway ON runs (gateway_id, status);
`;
