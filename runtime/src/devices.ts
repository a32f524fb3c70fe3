// The devices of this host and the slots the runtime offers: one per GPU, or per MIG instance of a GPU in MIG mode;
// posed slots (`--class NAME --gpus N`) on a host without the device. A slot's worker sees only its own device.
import { execFile } from 'node:child_process';
import { classOfDeviceName } from './gpuClasses.js';
import type { PbGpuClass } from './proto.js';

export interface Gpu {
  index: number;
  name: string;
  memoryMib: number;
  uuid: string;
  /** MIG instances, when the GPU is in MIG mode: each is a slot of its own. */
  mig: Array<{ profile: string; uuid: string; memoryMib: number }>;
}

export interface Slot {
  index: number;
  /** The worker's CUDA_VISIBLE_DEVICES: the GPU's index, the MIG instance's UUID, a posed slot's index, '' for none. */
  device: string;
  name: string;
  memoryMib: number;
}

/** The GPUs nvidia-smi reports, or [] when it is absent or fails (no NVIDIA device usable here). */
export async function queryDevices(timeoutMs = 10_000): Promise<Gpu[]> {
  const query = await run(['--query-gpu=index,name,memory.total,uuid', '--format=csv,noheader,nounits'], timeoutMs);
  if (query === null) return [];
  const listing = (await run(['-L'], timeoutMs)) ?? '';
  return parseDevices(query, listing);
}

/**
 * `query`: lines of `index, name, memory.total (MiB), uuid`; `listing`: `nvidia-smi -L`, where the MIG instances
 * of a GPU follow its line ("  MIG 1g.10gb  Device  0: (UUID: MIG-...)"). A line of a name alone is a GPU too.
 */
export function parseDevices(query: string, listing: string): Gpu[] {
  const gpus: Gpu[] = query
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l.length > 0)
    .map((line, i) => {
      const f = line.split(',').map((x) => x.trim());
      if (f.length < 4) return { index: i, name: line, memoryMib: 0, uuid: '', mig: [] };
      return { index: Number(f[0]), name: f[1] as string, memoryMib: Number(f[2]) || 0, uuid: f[3] as string, mig: [] };
    });
  let current: Gpu | undefined;
  for (const line of listing.split('\n')) {
    const gpu = /^GPU (\d+):.*\(UUID: ([^)]+)\)/.exec(line.trim());
    if (gpu !== null) {
      current = gpus.find((g) => g.uuid === gpu[2]) ?? gpus.find((g) => g.index === Number(gpu[1]));
      continue;
    }
    const mig = /^MIG (\S+)\s+Device\s+\d+: \(UUID: (MIG-[^)]+)\)/.exec(line.trim());
    if (mig !== null && current !== undefined) {
      const gb = /\.(\d+)gb$/.exec(mig[1] as string);
      current.mig.push({ profile: mig[1] as string, uuid: mig[2] as string, memoryMib: gb ? Number(gb[1]) * 1024 : 0 });
    }
  }
  return gpus;
}

export class SlotError extends Error {
  override name = 'SlotError';
}

/**
 * The slots to offer for `classes`: the devices when one of them is this host's (the first `posed` of them when
 * given), else `posed` slots (each shown to its worker as device `i` when the class is simulated, none for plain cpu).
 */
export function resolveSlots(classes: PbGpuClass[], gpus: Gpu[], posed: number | null): Slot[] {
  const real = classes.some((c) => !c.simulated && c.name !== 'cpu');
  if (real) {
    const offered = new Set(classes.map((c) => c.name));
    const slots: Slot[] = [];
    for (const g of gpus.filter((g) => offered.has(classOfDeviceName(g.name)))) {
      if (g.mig.length === 0) slots.push({ index: slots.length, device: String(g.index), name: g.name, memoryMib: g.memoryMib });
      for (const m of g.mig) slots.push({ index: slots.length, device: m.uuid, name: `${g.name} MIG ${m.profile}`, memoryMib: m.memoryMib });
    }
    if (posed !== null && posed > slots.length) {
      throw new SlotError(`--gpus ${posed}: this host has ${slots.length} GPU slot(s) of ${[...offered].join(', ')} (nvidia-smi)`);
    }
    return posed === null ? slots : slots.slice(0, posed);
  }
  const simulated = classes.some((c) => c.simulated);
  return Array.from({ length: posed ?? 1 }, (_, index) => ({ index, device: simulated ? String(index) : '', name: '', memoryMib: 0 }));
}

function run(args: string[], timeoutMs: number): Promise<string | null> {
  return new Promise((resolve) => {
    execFile('nvidia-smi', args, { timeout: timeoutMs }, (err, stdout) => resolve(err ? null : stdout));
  });
}
