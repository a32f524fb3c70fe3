// Several gateways, one runtime (ARCHITECTURE.md, "Several gateways"): each gateway places runs on this runtime's
// slots from its own view, so the runtime is the one that knows which gateway's run holds a slot. A slot held by one
// gateway's run is refused to every other gateway until that run ends, and each gateway is told, whenever it
// changes, which slots the others hold.

/** One gateway this runtime serves, as the arbiter sees it. */
export interface SlotHolder {
  /** Said when a slot is refused ("the gateway at ..."). */
  readonly name: string;
  /** The slots held by runs of the other gateways changed: the whole set. */
  slotsTaken(slots: number[]): void;
}

export class SlotArbiter {
  /** Per slot: the gateway whose runs hold it, and how many of them (a gateway may place two runs on one slot). */
  private readonly held = new Map<number, { by: SlotHolder; runs: number }>();
  private readonly holders = new Set<SlotHolder>();
  /** What each holder was last told, so it hears only of changes. */
  private readonly told = new Map<SlotHolder, string>();

  add(holder: SlotHolder): void {
    this.holders.add(holder);
    this.told.delete(holder);
  }

  /** The holder's gateway went away: the runs it holds end on their own (their slots are released as they do). */
  remove(holder: SlotHolder): void {
    this.holders.delete(holder);
    this.told.delete(holder);
  }

  /** Tells `holder` the current set again (its Work stream was opened anew). */
  announce(holder: SlotHolder): void {
    this.told.delete(holder);
    this.notify();
  }

  /** Takes `slot` for a run of `holder`; the name of the gateway holding it instead, when it is another's. */
  take(slot: number, holder: SlotHolder): { ok: true } | { ok: false; heldBy: string } {
    const h = this.held.get(slot);
    if (h !== undefined && h.by !== holder) return { ok: false, heldBy: h.by.name };
    if (h === undefined) this.held.set(slot, { by: holder, runs: 1 });
    else h.runs += 1;
    this.notify();
    return { ok: true };
  }

  release(slot: number, holder: SlotHolder): void {
    const h = this.held.get(slot);
    if (h === undefined || h.by !== holder) return;
    h.runs -= 1;
    if (h.runs > 0) return;
    this.held.delete(slot);
    this.notify();
  }

  /** The slots held by runs of gateways other than `holder`, ascending. */
  takenFor(holder: SlotHolder): number[] {
    return [...this.held].filter(([, h]) => h.by !== holder).map(([slot]) => slot).sort((a, b) => a - b);
  }

  private notify(): void {
    for (const holder of this.holders) {
      const slots = this.takenFor(holder);
      const key = slots.join(',');
      if (this.told.get(holder) === key) continue;
      this.told.set(holder, key);
      holder.slotsTaken(slots);
    }
  }
}
