// TLS for both listeners: the operator's certificate (--tls-cert/--tls-key) or one made here (--tls auto).
// `auto` keeps a CA under DATA/tls (ca.pem is what kernels and runtimes verify against, ca-key.pem never leaves the
// directory) and a server certificate it signed for the names the gateway is reached by; both are kept across starts
// so a CA file or a pinned fingerprint handed to other hosts stays good, and the server certificate is made again only
// when a name is missing or it nears its end.
import { X509Certificate, createPrivateKey, webcrypto } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
// @peculiar/x509 resolves its algorithms through tsyringe, which needs this polyfill loaded first.
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';

export type TlsSetting = { mode: 'off' } | { mode: 'auto'; names: string[] } | { mode: 'files'; certFile: string; keyFile: string };

export interface ServerTls {
  /** PEM: the server certificate, then its CA when made here (so a client pinning the certificate can learn it). */
  certChain: Buffer;
  key: Buffer;
  /** SHA-256 of the server certificate, as `openssl x509 -fingerprint -sha256` writes it. */
  fingerprint: string;
  /** The CA a client should verify against: DATA/tls/ca.pem for `auto`, none for the operator's certificate. */
  caFile?: string;
}

export class TlsError extends Error {
  override name = 'TlsError';
}

const ALGORITHM = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
const CA_DAYS = 3650;
const SERVER_DAYS = 397;
const RENEW_BEFORE_MS = 30 * 24 * 3600 * 1000;

x509.cryptoProvider.set(webcrypto);

export async function loadServerTls(setting: TlsSetting, dataDir: string, host: string): Promise<ServerTls | undefined> {
  if (setting.mode === 'off') return undefined;
  if (setting.mode === 'files') return fromFiles(setting.certFile, setting.keyFile);
  return autoTls(path.join(dataDir, 'tls'), serverNames(host, setting.names));
}

async function fromFiles(certFile: string, keyFile: string): Promise<ServerTls> {
  const read = async (file: string, what: string): Promise<Buffer> => {
    try {
      return await fsp.readFile(file);
    } catch (e) {
      throw new TlsError(`cannot read the TLS ${what} ${file}: ${(e as Error).message}`);
    }
  };
  const certChain = await read(certFile, 'certificate (--tls-cert)');
  const key = await read(keyFile, 'key (--tls-key)');
  let leaf: X509Certificate;
  try {
    leaf = new X509Certificate(certChain);
    createPrivateKey(key);
  } catch (e) {
    throw new TlsError(`${certFile} and ${keyFile} must be a PEM certificate and its PEM private key (${(e as Error).message})`);
  }
  if (!leaf.checkPrivateKey(createPrivateKey(key))) {
    throw new TlsError(`the key ${keyFile} is not the private key of the certificate ${certFile}`);
  }
  return { certChain, key, fingerprint: leaf.fingerprint256 };
}

/** The names a client may use for this gateway: the bind address, or every local address when it binds them all. */
export function serverNames(host: string, extra: string[]): string[] {
  const names = new Set<string>(['localhost', '127.0.0.1', '::1', os.hostname()]);
  if (host === '0.0.0.0' || host === '::' || host === '') {
    for (const addresses of Object.values(os.networkInterfaces())) {
      for (const a of addresses ?? []) names.add(a.address.replace(/%.*$/, ''));
    }
  } else {
    names.add(host);
  }
  for (const name of extra) names.add(name);
  return [...names].sort();
}

async function autoTls(dir: string, names: string[]): Promise<ServerTls> {
  await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
  const caFile = path.join(dir, 'ca.pem');
  const caKeyFile = path.join(dir, 'ca-key.pem');
  const certFile = path.join(dir, 'server.pem');
  const keyFile = path.join(dir, 'server-key.pem');

  let ca = await readPair(caFile, caKeyFile);
  if (ca === undefined) {
    ca = await makeCa();
    await writePem(caKeyFile, ca.keyPem, 0o600);
    await writePem(caFile, ca.certPem, 0o644);
  }
  let server = await readPair(certFile, keyFile);
  if (server === undefined || !covers(server.certPem, ca.certPem, names)) {
    server = await makeServerCertificate(ca, names);
    await writePem(keyFile, server.keyPem, 0o600);
    await writePem(certFile, server.certPem, 0o644);
  }
  return {
    certChain: Buffer.from(server.certPem + ca.certPem),
    key: Buffer.from(server.keyPem),
    fingerprint: new X509Certificate(server.certPem).fingerprint256,
    caFile,
  };
}

interface Pair {
  certPem: string;
  keyPem: string;
}

async function readPair(certFile: string, keyFile: string): Promise<Pair | undefined> {
  try {
    return { certPem: await fsp.readFile(certFile, 'utf8'), keyPem: await fsp.readFile(keyFile, 'utf8') };
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new TlsError(`cannot read ${certFile} or ${keyFile}: ${(e as Error).message}`);
  }
}

/** Signed by this CA, names every name, and not near its end. */
function covers(certPem: string, caPem: string, names: string[]): boolean {
  try {
    const cert = new X509Certificate(certPem);
    if (!cert.verify(new X509Certificate(caPem).publicKey)) return false;
    if (Date.parse(cert.validTo) - Date.now() < RENEW_BEFORE_MS) return false;
    const sans = new Set((cert.subjectAltName ?? '').split(', ').map((s) => s.replace(/^(DNS|IP Address):/, '')));
    return names.every((n) => sans.has(canonicalIp(n) ?? n));
  } catch {
    return false;
  }
}

/** Node writes IPv6 SANs uncompressed and upper-case (`0:0:0:0:0:0:0:1`): compare in that form. */
function canonicalIp(name: string): string | undefined {
  if (!name.includes(':')) return undefined;
  const [head = '', tail = ''] = name.split('::');
  const h = head === '' ? [] : head.split(':');
  const t = tail === '' ? [] : tail.split(':');
  const groups = name.includes('::') ? [...h, ...Array(8 - h.length - t.length).fill('0'), ...t] : h;
  return groups.map((g) => parseInt(g, 16).toString(16).toUpperCase()).join(':');
}

async function makeCa(): Promise<Pair> {
  const keys = await webcrypto.subtle.generateKey(ALGORITHM, true, ['sign', 'verify']);
  const notBefore = new Date(Date.now() - 3600 * 1000);
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: `CN=kernelhop gateway CA (${os.hostname()})`,
    notBefore,
    notAfter: new Date(notBefore.getTime() + CA_DAYS * 24 * 3600 * 1000),
    keys: keys,
    signingAlgorithm: ALGORITHM,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { certPem: `${cert.toString('pem')}\n`, keyPem: await pkcs8Pem(keys.privateKey) };
}

async function makeServerCertificate(ca: Pair, names: string[]): Promise<Pair> {
  const caCert = new x509.X509Certificate(ca.certPem);
  const caKey = await webcrypto.subtle.importKey('pkcs8', pemBody(ca.keyPem), ALGORITHM, false, ['sign']);
  const keys = await webcrypto.subtle.generateKey(ALGORITHM, true, ['sign', 'verify']);
  const notBefore = new Date(Date.now() - 3600 * 1000);
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: `CN=${os.hostname()}`,
    issuer: caCert.subject,
    notBefore,
    notAfter: new Date(notBefore.getTime() + SERVER_DAYS * 24 * 3600 * 1000),
    publicKey: keys.publicKey,
    signingKey: caKey,
    signingAlgorithm: ALGORITHM,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      new x509.SubjectAlternativeNameExtension(names.map((n) => ({ type: isIp(n) ? 'ip' : 'dns', value: n }))),
      await x509.AuthorityKeyIdentifierExtension.create(caCert),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { certPem: `${cert.toString('pem')}\n`, keyPem: await pkcs8Pem(keys.privateKey) };
}

function isIp(name: string): boolean {
  return /^\d+\.\d+\.\d+\.\d+$/.test(name) || name.includes(':');
}

function serial(): string {
  // Positive: the top bit clear.
  const bytes = webcrypto.getRandomValues(new Uint8Array(16));
  bytes[0] = (bytes[0] as number) & 0x7f;
  return Buffer.from(bytes).toString('hex');
}

async function pkcs8Pem(key: webcrypto.CryptoKey): Promise<string> {
  const der = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', key));
  return `-----BEGIN PRIVATE KEY-----\n${der.toString('base64').replace(/(.{64})/g, '$1\n').replace(/\n$/, '')}\n-----END PRIVATE KEY-----\n`;
}

function pemBody(pem: string): Buffer {
  return Buffer.from(pem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''), 'base64');
}

async function writePem(file: string, text: string, mode: number): Promise<void> {
  await fsp.writeFile(file, text, { mode });
  await fsp.chmod(file, mode);
}
