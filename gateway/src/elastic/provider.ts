// Where elastic runtimes come from (ARCHITECTURE.md, "Elastic runtimes"): the autoscaler asks a provider for a
// runtime of a class when runs wait too long, and releases it when it has been idle too long.

/** What a provided runtime needs to join: the gateway's gRPC address and a runtime token good for one runtime. */
export interface RuntimeRequest {
  gpuClass: string;
  /** A name for the runtime (and its Pod), unique among those provided. */
  name: string;
  gateway: string;
  enrollmentToken: string;
}

export interface ProvidedRuntime {
  /** Resolves (never rejects) when the provided runtime ended by itself: it will not register, or not again. */
  readonly ended: Promise<void>;
  /** Stops it and frees what it holds; safe to call twice. */
  release(): Promise<void>;
}

export interface RuntimeProvider {
  /** For the log and errors: "command", "kubernetes". */
  readonly kind: string;
  provide(req: RuntimeRequest): Promise<ProvidedRuntime>;
}

export class ProviderError extends Error {
  override name = 'ProviderError';
}
