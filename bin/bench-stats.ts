import { cpuSplit, mapSplit, processCpuMs, type CpuSplit } from '../hypervisor/thread-cpu.js';
import type { Platform } from '../hypervisor/toolstack.js';

/** The median of some measurements (the mean of the middle two for an even count). */
export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** The 99th percentile (nearest rank). */
export function p99(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * 0.99))];
}

/** A deterministic pseudo-random generator (mulberry32): the same seed, the same sequence in [0, 1). */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** What a run cost in CPU: every thread of this process per GiB moved, and by part of the platform when given. */
export interface CpuCost {
  cpuMsPerGiB: number;
  split?: CpuSplit;
}

/** Runs `run` and measures its CPU cost per GiB of `bytesOf(result)` (the platform's parts from /proc). */
export async function withCpuCost<T>(run: () => Promise<T>, bytesOf: (result: T) => number, platform?: Platform): Promise<{ result: T } & CpuCost> {
  const before = platform?.cpu();
  const cpu0 = processCpuMs();
  const result = await run();
  const cpuMs = processCpuMs() - cpu0;
  const gib = bytesOf(result) / 2 ** 30;
  const perGiB = (ms: number) => (gib > 0 ? ms / gib : 0);
  const split = before && cpuSplit(before, platform!.cpu());
  return {
    result,
    cpuMsPerGiB: perGiB(cpuMs),
    ...(split ? { split: mapSplit((part) => perGiB(split[part])) } : {}),
  };
}
