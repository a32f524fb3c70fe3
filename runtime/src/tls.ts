// How the runtime checks it reached the real gateway over TLS: a CA file (--ca / KERNELHOP_CA), a pinned certificate
// fingerprint (--fingerprint / KERNELHOP_FINGERPRINT), or the system's CAs for a wss:// gateway with neither.
import { readFileSync } from 'node:fs';
import * as https from 'node:https';
import * as tls from 'node:tls';
import * as grpc from '@grpc/grpc-js';

export interface TlsTrust {
  /** PEM roots; undefined: the system's. */
  ca?: Buffer;
  /** SHA-256 of the gateway's certificate, upper-case hex in pairs separated by colons. */
  fingerprint?: string;
}

export class TlsTrustError extends Error {
  override name = 'TlsTrustError';
}

const PROBE_TIMEOUT_MS = 10_000;

/** `AB:CD:...`, `abcd...` or `sha256:abcd...` → `AB:CD:...`; anything else is refused. */
export function normalizeFingerprint(text: string): string {
  const hex = text.trim().replace(/^sha256[:=]/i, '').replace(/:/g, '').toUpperCase();
  if (!/^[0-9A-F]{64}$/.test(hex)) {
    throw new TlsTrustError(
      `fingerprint ${JSON.stringify(text)} is not a SHA-256 (64 hex digits, colons allowed): copy it from the line ` +
        '"kernelhop gateway TLS certificate sha256 ..." the gateway printed',
    );
  }
  return (hex.match(/../g) as string[]).join(':');
}

export function readCa(file: string): Buffer {
  try {
    const pem = readFileSync(file);
    if (!pem.includes('-----BEGIN CERTIFICATE-----')) throw new Error('no PEM certificate in it');
    return pem;
  } catch (e) {
    throw new TlsTrustError(`cannot use ${file} as the gateway's CA (--ca / KERNELHOP_CA): ${(e as Error).message}`);
  }
}

/**
 * A pinned certificate is trusted for itself, whoever signed it: connect once without verifying, check the
 * fingerprint, and take the chain's root as the CA, so the channel that follows verifies the chain as usual and
 * checks the fingerprint again on every connection (a different certificate from the same CA is refused).
 */
export async function resolvePin(host: string, port: number, fingerprint: string): Promise<TlsTrust> {
  const chain = await new Promise<tls.DetailedPeerCertificate>((resolve, reject) => {
    const socket = tls.connect({ host, port, servername: isIp(host) ? undefined : host, rejectUnauthorized: false, ALPNProtocols: ['h2', 'http/1.1'] });
    socket.setTimeout(PROBE_TIMEOUT_MS, () => socket.destroy(new Error(`no TLS handshake in ${PROBE_TIMEOUT_MS / 1000} s`)));
    socket.once('secureConnect', () => {
      const cert = socket.getPeerCertificate(true);
      socket.destroy();
      resolve(cert);
    });
    socket.once('error', reject);
  }).catch((e: unknown) => {
    throw new TlsTrustError(`cannot open TLS to the gateway at ${host}:${port} to check its fingerprint: ${(e as Error).message}`);
  });
  if (chain.fingerprint256 !== fingerprint) {
    throw new TlsTrustError(
      `the gateway at ${host}:${port} presented a certificate with sha256 ${chain.fingerprint256 ?? '(none)'}, not the pinned ` +
        `${fingerprint}: refusing to send it our token. If the gateway's certificate was replaced, pin the fingerprint it prints now.`,
    );
  }
  let root: tls.DetailedPeerCertificate = chain;
  while (root.issuerCertificate !== undefined && root.issuerCertificate !== root && root.issuerCertificate.raw !== undefined) {
    root = root.issuerCertificate;
  }
  return { ca: Buffer.from(toPem(root.raw)), fingerprint };
}

/** Node's check, plus the pin when there is one: a pinned certificate stands in for the host name. */
export function checkServerIdentity(trust: TlsTrust): (host: string, cert: tls.PeerCertificate) => Error | undefined {
  return (host, cert) => {
    if (trust.fingerprint === undefined) return tls.checkServerIdentity(host, cert);
    return cert.fingerprint256 === trust.fingerprint
      ? undefined
      : new Error(`the gateway's certificate has sha256 ${cert.fingerprint256}, not the pinned ${trust.fingerprint}`);
  };
}

export function grpcCredentials(trust: TlsTrust | undefined): grpc.ChannelCredentials {
  if (trust === undefined) return grpc.credentials.createInsecure();
  return grpc.credentials.createSsl(trust.ca ?? null, null, null, { checkServerIdentity: checkServerIdentity(trust) });
}

/** GET a JSON document over https with the same trust as the gRPC channel. */
export function httpsGetJson(url: string, trust: TlsTrust, timeoutMs: number): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const req = https.get(url, { ca: trust.ca, checkServerIdentity: checkServerIdentity(trust), timeout: timeoutMs }, (res) => {
      if (res.statusCode !== 200) {
        res.resume();
        reject(new Error(`HTTP ${res.statusCode}`));
        return;
      }
      const parts: Buffer[] = [];
      res.on('data', (b: Buffer) => parts.push(b));
      res.on('end', () => {
        try {
          resolve(JSON.parse(Buffer.concat(parts).toString('utf8')));
        } catch (e) {
          reject(e as Error);
        }
      });
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer in ${timeoutMs / 1000} s`)));
    req.on('error', reject);
  });
}

function isIp(host: string): boolean {
  return /^\d+\.\d+\.\d+\.\d+$/.test(host) || host.includes(':');
}

function toPem(der: Buffer): string {
  return `-----BEGIN CERTIFICATE-----\n${der.toString('base64').replace(/(.{64})/g, '$1\n').replace(/\n$/, '')}\n-----END CERTIFICATE-----\n`;
}
