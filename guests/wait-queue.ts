/**
 * A kernel wait queue: processes (async tasks) sleep on it until an interrupt handler or another process wakes
 * them. FIFO, so the oldest sleeper runs first.
 */
export class WaitQueue {
  private sleepers: (() => void)[] = [];

  get length(): number {
    return this.sleepers.length;
  }

  sleep(): Promise<void> {
    return new Promise((resolve) => this.sleepers.push(resolve));
  }

  wakeOne(): void {
    this.sleepers.shift()?.();
  }

  wakeAll(): void {
    const sleepers = this.sleepers;
    this.sleepers = [];
    for (const wake of sleepers) wake();
  }
}
