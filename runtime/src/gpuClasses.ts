// Which GPU classes this host offers: nvidia-smi's device names, "cpu" without one, or --class overrides.
import type { PbGpuClass } from './proto.js';

const VENDOR_WORDS = new Set(['nvidia', 'tesla', 'geforce', 'quadro']);
const FAMILY_WORDS = new Set(['rtx', 'gtx']);

/** "NVIDIA H100 80GB HBM3" → "h100", "NVIDIA A100-SXM4-80GB" → "a100", "NVIDIA GeForce RTX 4090" → "rtx4090". */
export function classOfDeviceName(deviceName: string): string {
  const words = deviceName
    .toLowerCase()
    .split(/\s+/)
    .filter((w) => w && !VENDOR_WORDS.has(w));
  const first = (words[0] ?? 'gpu').split('-')[0] as string;
  const model = FAMILY_WORDS.has(first) && words[1] ? first + (words[1].split('-')[0] as string) : first;
  return model.replace(/[^a-z0-9_-]/g, '') || 'gpu';
}

/** The classes to register: overrides (simulated when the host lacks the device) or what was detected. */
export function resolveClasses(overrides: string[], deviceNames: string[]): PbGpuClass[] {
  const detected = [...new Set(deviceNames.map(classOfDeviceName))];
  if (overrides.length === 0) {
    return detected.length > 0 ? detected.map((name) => ({ name, simulated: false })) : [{ name: 'cpu', simulated: false }];
  }
  // Every host has a CPU, so "cpu" is never simulated.
  return overrides.map((name) => ({ name, simulated: name !== 'cpu' && !detected.includes(name) }));
}
