/**
 * Runs a filesystem instance's operations one at a time, in arrival order, except that urgent work (answering
 * a lock revoke) goes right after the operation in flight.
 */
type Task = () => Promise<void>;

export class OpQueue {
  private readonly tasks: Task[] = [];
  private running = false;

  run<T>(op: () => Promise<T>, urgent = false): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const task: Task = () => op().then(resolve, reject);
      if (urgent) this.tasks.unshift(task);
      else this.tasks.push(task);
      if (!this.running) void this.pump();
    });
  }

  /** Operations waiting behind the running one. */
  get backlog(): number {
    return this.tasks.length;
  }

  get idle(): boolean {
    return !this.running && this.tasks.length === 0;
  }

  private async pump(): Promise<void> {
    this.running = true;
    while (this.tasks.length > 0) await this.tasks.shift()!();
    this.running = false;
  }
}
