// Gateway liveness (ARCHITECTURE.md, "Several gateways"): each gateway beats in the shared metadata database, and on
// each beat ends the runs of the gateways that stopped beating (their GPU-seconds counted in the usage ledger), then
// reads how many runs each user has running through the live others, for the slot limits.
import { GatewayBeat, MetadataStore } from '../metadataStore.js';
import { Scheduler } from '../scheduler.js';

export interface LivenessOptions {
  metadata: Pick<MetadataStore, 'beat' | 'claimLapsed' | 'runningElsewhere'>;
  gateway: GatewayBeat;
  scheduler: Pick<Scheduler, 'runningElsewhere'>;
  log: (line: string) => void;
}

export class Liveness {
  private timer: NodeJS.Timeout | null = null;
  /** The beat in flight, if any: a slow database makes beats skip rather than pile up. */
  private beating: Promise<void> | null = null;

  constructor(private readonly opts: LivenessOptions) {}

  /** Beats now and then every interval. */
  start(): Promise<void> {
    this.timer = setInterval(() => void this.beat(), this.opts.gateway.intervalMs);
    this.timer.unref();
    return this.beat();
  }

  /** One beat; its failures are logged, never thrown (the next beat tries again). */
  beat(): Promise<void> {
    this.beating ??= this.beatOnce()
      .catch((e: unknown) => this.opts.log(`gateway liveness beat failed: ${String(e)}`))
      .finally(() => {
        this.beating = null;
      });
    return this.beating;
  }

  async close(): Promise<void> {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    await this.beating;
  }

  private async beatOnce(): Promise<void> {
    const { metadata, gateway, scheduler, log } = this.opts;
    const now = Date.now();
    await metadata.beat(gateway, now);
    const lost = await metadata.claimLapsed(now);
    for (const r of lost) {
      log(`run ${r.runId} of ${r.user} ended as gateway_lost: ${r.gatewayAddr} stopped beating${r.counted ? '; its GPU-seconds are counted' : ''}`);
    }
    scheduler.runningElsewhere(await metadata.runningElsewhere(gateway.id, now));
  }
}
