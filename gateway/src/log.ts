// The gateway's log: one JSON object per line on stderr (pino), with the run, runtime and user it is about as
// fields, so a run's life can be followed with `jq 'select(.run == "...")'`.
import { pino } from 'pino';

/** Fields that say what a line is about; `run` is on every line about one run. */
export interface LogFields {
  run?: string;
  runtime?: string;
  user?: string;
  [field: string]: unknown;
}

export type Log = (line: string, fields?: LogFields) => void;

export function jsonLog(name: string): Log {
  const logger = pino({ name, base: { pid: process.pid } }, pino.destination({ fd: 2, sync: true }));
  return (line, fields) => logger.info(fields ?? {}, line);
}
