// A real PostgreSQL for the tests: Debian's postgresql package, a cluster initdb'd into a temporary directory and
// started on a free loopback port; as root (CI), the server runs as the postgres user, which initdb requires.
import { execFileSync } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before } from 'node:test';
import pg from 'pg';

export interface PostgresTestServer {
  /** A URL for a new, empty database of its own. */
  newDatabase(): Promise<string>;
  stop(): Promise<void>;
}

function binDir(): string {
  const root = '/usr/lib/postgresql';
  const versions = existsSync(root) ? readdirSync(root).filter((v) => existsSync(path.join(root, v, 'bin', 'initdb'))) : [];
  if (versions.length === 0) {
    throw new Error("PostgreSQL is not installed: apt-get install -y postgresql (scripts/test.sh does so when run as root)");
  }
  return path.join(root, versions.sort((a, b) => Number(b) - Number(a))[0] as string, 'bin');
}

async function freePort(): Promise<number> {
  const s = http.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

export async function startPostgres(): Promise<PostgresTestServer> {
  const bin = binDir();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'kernelhop-pg-'));
  const asRoot = process.getuid?.() === 0;
  const run = (tool: string, args: string[]): void => {
    const argv = asRoot ? ['runuser', '-u', 'postgres', '--', path.join(bin, tool), ...args] : [path.join(bin, tool), ...args];
    execFileSync(argv[0] as string, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], cwd: dir });
  };
  if (asRoot) {
    const ids = execFileSync('id', ['-u', 'postgres']).toString().trim();
    const gid = execFileSync('id', ['-g', 'postgres']).toString().trim();
    chownSync(dir, Number(ids), Number(gid));
  }
  const data = path.join(dir, 'data');
  run('initdb', ['-D', data, '-U', 'kernelhop', '-A', 'trust', '--no-sync', '-E', 'UTF8']);
  const port = await freePort();
  const options = `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off`;
  run('pg_ctl', ['-D', data, '-o', options, '-l', path.join(dir, 'log'), '-w', '-t', '60', 'start']);
  const base = `postgres://kernelhop@127.0.0.1:${port}`;
  let n = 0;
  return {
    newDatabase: async () => {
      const name = `t${process.pid}_${n++}`;
      const client = new pg.Client({ connectionString: `${base}/postgres` });
      await client.connect();
      await client.query(`CREATE DATABASE ${name}`);
      await client.end();
      return `${base}/${name}`;
    },
    stop: async () => {
      try {
        run('pg_ctl', ['-D', data, '-m', 'fast', '-w', 'stop']);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  };
}

/**
 * What a suite run on both databases needs: a temporary folder for its SQLite files and a real PostgreSQL started
 * before its tests; both go when the file's tests end. Call at the top level of a test file.
 */
export function bothDatabases(prefix: string): { dir: string; postgres: Pick<PostgresTestServer, 'newDatabase'> } {
  const dir = mkdtempSync(path.join(os.tmpdir(), prefix));
  after(() => rmSync(dir, { recursive: true, force: true }));
  let server: PostgresTestServer | undefined;
  before(async () => {
    server = await startPostgres();
  });
  after(async () => {
    await server?.stop();
  });
  // The server exists only once `before` ran; the tests reach it through this.
  return { dir, postgres: { newDatabase: () => (server as PostgresTestServer).newDatabase() } };
}
