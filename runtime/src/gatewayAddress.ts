// `--gateway` as the user has it: HOST:PORT of the gateway's gRPC port, or the ws:// or wss:// URL the gateway prints.
// A URL names the WebSocket port only; the gateway tells its gRPC port there (GET /runtimes/v1 → {"grpc_port": N}),
// which holds whatever --grpc-port it was given, where a guess such as "WebSocket port + 1" would not.
import { isHostPort } from './config.js';
import { TlsTrust, httpsGetJson } from './tls.js';

export const RUNTIMES_INFO_PATH = '/runtimes/v1';
const ASK_TIMEOUT_MS = 10_000;

export class GatewayAddressError extends Error {
  override name = 'GatewayAddressError';
}

/** The gRPC address (HOST:PORT) of the gateway `gateway` names. */
export async function grpcAddressOf(gateway: string, trust?: TlsTrust): Promise<string> {
  if (isHostPort(gateway)) return gateway;
  const url = new URL(gateway);
  const info = `${url.protocol === 'wss:' ? 'https' : 'http'}://${url.host}${RUNTIMES_INFO_PATH}`;
  const refuse = (why: string): GatewayAddressError =>
    new GatewayAddressError(
      `cannot learn the gRPC port of the gateway at ${gateway} from ${info} (${why}). Is the gateway running there? ` +
        'Else pass --gateway HOST:PORT of its gRPC port (its ready line prints it as grpc=HOST:PORT).' +
        (url.protocol === 'wss:' && /certificate|self.signed|altnames|fingerprint/i.test(why)
          ? ' A gateway with a CA of its own (--tls auto) is verified with --ca DATA/tls/ca.pem (KERNELHOP_CA) or ' +
            '--fingerprint SHA256 (KERNELHOP_FINGERPRINT), both printed by the gateway.'
          : ''),
    );
  let answer: unknown;
  try {
    if (url.protocol === 'wss:') {
      answer = await httpsGetJson(info, trust ?? {}, ASK_TIMEOUT_MS);
    } else {
      const res = await fetch(info, { signal: AbortSignal.timeout(ASK_TIMEOUT_MS) });
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      answer = await res.json();
    }
  } catch (e) {
    const cause = (e as Error & { cause?: Error }).cause;
    throw refuse(cause?.message ?? (e as Error).message);
  }
  const port = (answer as { grpc_port?: unknown } | null)?.grpc_port;
  if (typeof port !== 'number' || !Number.isSafeInteger(port) || port < 1 || port > 65535) {
    throw refuse(`the answer names no gRPC port: ${JSON.stringify(answer)}`);
  }
  // The host the user named: the gateway binds both ports on one host, and its own name for it may be 0.0.0.0.
  return `${url.hostname}:${port}`;
}
