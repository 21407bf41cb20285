/**
 * A domain's data window: pages shared by the host and the domain's guest agent through which the bytes of a file
 * read or write travel, so a request carries a slot number instead of a new buffer moved between threads each
 * time (a 128 KiB buffer per FUSE request otherwise: allocated, zeroed, moved, collected). The host owns the slots
 * (WindowSlots); the agent only reads or fills the slot a request names, for that request's lifetime.
 */
import { IoError } from '../fs/block-device.js';

/** One slot holds libfuse 2.9's largest read or write (max_read, max_write). */
export const WINDOW_SLOT_BYTES = 128 * 1024;
/** Slots per domain: more than libfuse's threads keep in flight on one mount (10 by default). */
export const WINDOW_SLOTS = 16;

export function createDataWindow(): SharedArrayBuffer {
  return new SharedArrayBuffer(WINDOW_SLOTS * WINDOW_SLOT_BYTES);
}

/** The first `length` bytes of slot `slot`; EINVAL for a slot or length the window does not have. */
export function windowSlot(window: SharedArrayBuffer, slot: number, length: number): Uint8Array {
  if (!Number.isInteger(slot) || slot < 0 || slot >= WINDOW_SLOTS) throw new IoError('EINVAL', `no data window slot ${slot}`);
  if (!Number.isInteger(length) || length < 0 || length > WINDOW_SLOT_BYTES) throw new IoError('EINVAL', `bad data window length ${length}`);
  return new Uint8Array(window, slot * WINDOW_SLOT_BYTES, length);
}

/** The host's side: which slots are free. A request that finds none moves its bytes the old way. */
export class WindowSlots {
  private readonly slots: number[] = Array.from({ length: WINDOW_SLOTS }, (_, i) => WINDOW_SLOTS - 1 - i);

  get free(): number {
    return this.slots.length;
  }

  take(): number | undefined {
    return this.slots.pop();
  }

  give(slot: number): void {
    this.slots.push(slot);
  }
}
