/**
 * A domain's change count: one word shared by the host and the domain's guest agent. The guest filesystem adds one
 * whenever what it would answer may have changed (FileSystem's onChange: after every change, before any cluster lock
 * is given up or downgraded, at unmount); the agent after raw block writes; the toolstack when the domain dies,
 * before its locks pass on. So an answer the domain gave while the count read N is exactly what it would answer now
 * as long as the count still reads N: the host's view answers repeated lookups and stats itself on that condition
 * (mount/answer-cache.ts) and stays strict.
 */
export class ChangeCount {
  private readonly word: Int32Array;

  constructor(readonly buffer = new SharedArrayBuffer(4)) {
    this.word = new Int32Array(buffer, 0, 1);
  }

  read(): number {
    return Atomics.load(this.word, 0);
  }

  add(): void {
    Atomics.add(this.word, 0, 1);
  }
}
