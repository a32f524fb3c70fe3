// The hello of every link: what each side offers, its defaults read from the schema's `default_limit` options (the
// one place they are written), and the agreement both sides then obey.
import { create, fromJson, getOption, toJson, type JsonValue } from '@bufbuild/protobuf';
import { CapabilitiesSchema, default_limit, type Capabilities } from './gen/es/kernelhop/v1/capabilities_pb.js';

export type { Capabilities };
export const PROTOCOL = 'kernelhop.v1';
export const DIGEST_FUNCTION = 'blake3';

/** The limit fields of Capabilities (all but codecs, digest_function, protocol). */
export type LimitName = 'maxFrameBytes' | 'maxBatchBytes' | 'maxBatchReadBytes' | 'maxBlobsInFlight';
const LIMITS: LimitName[] = ['maxFrameBytes', 'maxBatchBytes', 'maxBatchReadBytes', 'maxBlobsInFlight'];

function schemaDefault(name: LimitName): number {
  const field = CapabilitiesSchema.fields.find((f) => f.localName === name);
  if (field === undefined) throw new Error(`Capabilities has no field ${name}`);
  return getOption(field, default_limit);
}

/** The schema's defaults. */
export const DEFAULT_LIMITS: Readonly<Record<LimitName, number>> = Object.freeze(
  Object.fromEntries(LIMITS.map((n) => [n, schemaDefault(n)])) as Record<LimitName, number>,
);

/** What this side offers: the schema's defaults, any limit overridden, these codecs. */
export function offer(codecs: string[], overrides: Partial<Record<LimitName, number>> = {}): Capabilities {
  return create(CapabilitiesSchema, {
    ...DEFAULT_LIMITS,
    ...overrides,
    codecs,
    digestFunction: DIGEST_FUNCTION,
    protocol: PROTOCOL,
  });
}

export class IncompatiblePeer extends Error {}

/** Plain fields of a Capabilities however it was decoded (protobuf-es, proto-loader in either case, JSON). */
export interface CapabilitiesLike {
  maxFrameBytes?: number;
  maxBatchBytes?: number;
  maxBatchReadBytes?: number;
  maxBlobsInFlight?: number;
  codecs?: string[];
  digestFunction?: string;
  protocol?: string;
}

/**
 * The agreement of two offers: the smaller of each limit (a limit a peer leaves at 0 is the schema's default), the
 * codecs both speak; a peer of another protocol or digest function is refused, saying which.
 */
export function agree(mine: CapabilitiesLike, theirs: CapabilitiesLike | null | undefined, peer: string): Capabilities {
  if (theirs === null || theirs === undefined || !theirs.protocol) {
    throw new IncompatiblePeer(`${peer} sent no capabilities (hello): it is older than ${PROTOCOL}'s hello; upgrade it`);
  }
  if ((theirs.protocol ?? '') !== PROTOCOL) {
    throw new IncompatiblePeer(`${peer} speaks protocol ${JSON.stringify(theirs.protocol ?? '')}, this side ${PROTOCOL}`);
  }
  if ((theirs.digestFunction ?? '') !== DIGEST_FUNCTION) {
    throw new IncompatiblePeer(`${peer} names blobs by ${JSON.stringify(theirs.digestFunction ?? '')}, this side by ${DIGEST_FUNCTION}`);
  }
  const limit = (name: LimitName): number => {
    const a = mine[name] || DEFAULT_LIMITS[name];
    const b = theirs[name] || DEFAULT_LIMITS[name];
    return Math.min(a, b);
  };
  const theirCodecs = new Set(theirs.codecs ?? []);
  return create(CapabilitiesSchema, {
    maxFrameBytes: limit('maxFrameBytes'),
    maxBatchBytes: limit('maxBatchBytes'),
    maxBatchReadBytes: limit('maxBatchReadBytes'),
    maxBlobsInFlight: limit('maxBlobsInFlight'),
    codecs: (mine.codecs ?? []).filter((c) => theirCodecs.has(c)),
    digestFunction: DIGEST_FUNCTION,
    protocol: PROTOCOL,
  });
}

/** Capabilities in the proto's own field names (a keepCase gRPC message, JSON) → Capabilities; null: none sent. */
export function fromProtoNames(c: unknown): Capabilities | null {
  if (c === null || c === undefined) return null;
  return fromJson(CapabilitiesSchema, c as JsonValue, { ignoreUnknownFields: true });
}

/** Capabilities in the proto's own field names, for a keepCase gRPC message or JSON. */
export function toProtoNames(c: Capabilities): Record<string, unknown> {
  return toJson(CapabilitiesSchema, c, { useProtoFieldName: true, alwaysEmitImplicit: true }) as Record<string, unknown>;
}
