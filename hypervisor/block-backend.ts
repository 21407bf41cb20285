/**
 * What the monitor's block driver does I/O against. Calls are synchronous: the monitor is a thread of its own
 * that serves every domain's ring, and page-cache I/O done inline costs less than any hand-off to other threads.
 * Transfers go straight between the backend and the guest's memory (views onto its SharedArrayBuffer).
 */
export interface BlockBackend {
  readonly sizeBytes: number;
  readonly readOnly: boolean;
  read(position: number, into: Uint8Array): void;
  write(position: number, from: Uint8Array): void;
  /** One transfer into several buffers, back to back from `position` (merged requests). */
  readv(position: number, into: Uint8Array[]): void;
  writev(position: number, from: Uint8Array[]): void;
  /** A write after a barrier: every write completed before it is durable before it reaches the image. */
  writeBarrier(position: number, from: Uint8Array): void;
  /** Ordered backends (write-epochs.ts): true while writes wait in memory for a flush. */
  readonly holding?: boolean;
  /** Ordered backends: true when held writes may go to the image now (progress() writes them). */
  readonly ready?: boolean;
  /** Ordered backends: writes the held writes whose flush completed; true when it wrote any. */
  progress?(): boolean;
  /** Make every completed write durable (fdatasync). */
  flush(): void;
  discard(position: number, length: number): void;
  close(): void;
}
