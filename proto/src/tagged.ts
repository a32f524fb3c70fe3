// The JSON of the worker's pipes and the WebSocket's run events: one message of a oneof, flattened as
// {TAG: CASE, ...extra, ...the case's fields in the proto's names}, e.g. {"event": "stream", "name": "stdout",
// "text": "hi"}. Built on protobuf-es's canonical JSON (`useProtoFieldName`), so what each side writes parses
// against the schema and a field renamed on one side only fails to parse.
import { create, fromJson, toJson, type DescMessage, type JsonObject, type JsonValue, type Message } from '@bufbuild/protobuf';

export class TaggedError extends Error {}

const WRITE = { useProtoFieldName: true, alwaysEmitImplicit: true } as const;

/** The message of `schema` whose oneof `kind` holds what `json[tag]` names; other top-level fields of `schema` too. */
export function decodeTagged<T extends Message>(schema: DescMessage, tag: string, json: JsonObject): T {
  const oneof = schema.oneofs.find((o) => o.name === 'kind');
  if (oneof === undefined) throw new TaggedError(`${schema.typeName} has no oneof "kind"`);
  const which = json[tag];
  const field = oneof.fields.find((f) => f.name === which);
  if (field === undefined) {
    throw new TaggedError(`unknown ${tag} ${JSON.stringify(which)}: one of ${oneof.fields.map((f) => f.name).join(', ')}`);
  }
  const outer: JsonObject = {};
  const inner: JsonObject = {};
  for (const [k, v] of Object.entries(json)) {
    if (k === tag) continue;
    if (schema.fields.some((f) => f.name === k && f.oneof === undefined)) outer[k] = v;
    else inner[k] = v;
  }
  outer[field.name] = inner;
  try {
    return fromJson(schema, outer, { ignoreUnknownFields: false }) as T;
  } catch (e) {
    throw new TaggedError(`${schema.typeName} ${String(which)}: ${(e as Error).message}`);
  }
}

/** The flattened JSON of `msg` (whose oneof `kind` is set). */
export function encodeTagged(schema: DescMessage, tag: string, msg: Message): JsonObject {
  const json = toJson(schema, msg, WRITE) as JsonObject;
  const oneof = schema.oneofs.find((o) => o.name === 'kind');
  const set = oneof?.fields.find((f) => json[f.name] !== undefined);
  if (set === undefined) throw new TaggedError(`${schema.typeName}: no kind set`);
  const { [set.name]: inner, ...outer } = json;
  return { [tag]: set.name, ...outer, ...(inner as JsonObject) };
}

export { create };
export type { JsonValue };
