import type { BlockWorkload, WorkloadResult } from './block-workload.js';

/**
 * Requests the host sends a domain's guest agent, which runs each as a process inside the domain (so the work
 * really goes through the guest kernel, its hypercalls and the monitor), and the replies.
 */
export type AgentRequest =
  | { kind: 'block-workload'; workload: BlockWorkload }
  | { kind: 'block-read'; offset: number; length: number }
  | { kind: 'block-write'; offset: number; data: Uint8Array; fua?: boolean }
  | { kind: 'block-flush' }
  | { kind: 'info' };

export interface DomainInfo {
  name: string;
  sizeBytes: number;
  readOnly: boolean;
  interrupts: number;
  hypercalls: number;
  polledCompletions: number;
  processes: { pid: number; name: string }[];
}

export type AgentResult = WorkloadResult | Uint8Array | DomainInfo | null;

export type AgentMessage = { seq: number; request: AgentRequest };
export type AgentReply = { seq: number; ok: true; result: AgentResult } | { seq: number; ok: false; code: string; message: string };

/** Sent by the domain worker once its kernel has booted and attached its block devices. */
export type DomainBooted = { booted: true; name: string };
