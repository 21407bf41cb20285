import { closeSync, fdatasyncSync, openSync } from 'node:fs';
import { workerData } from 'node:worker_threads';
import { Doorbell } from './abi.js';
import { FlushWord, type FlushWorkerData } from './background-flush.js';

/**
 * The thread that runs a volume's background flushes (background-flush.ts): waits for a ticket, fdatasyncs the
 * image through its own descriptor (a datasync covers the file, whichever descriptor wrote it), publishes the
 * ticket as done and rings the monitor's doorbell so it issues the writes that waited for it.
 */
const data = workerData as FlushWorkerData;
const words = new Int32Array(data.words);
const doorbell = new Int32Array(data.doorbell);
const fd = openSync(data.path, 'r+');
for (;;) {
  const done = Atomics.load(words, FlushWord.DONE);
  Atomics.wait(words, FlushWord.REQUESTED, done);
  if (Atomics.load(words, FlushWord.STOP) !== 0) break;
  const ticket = Atomics.load(words, FlushWord.REQUESTED);
  if (ticket === done) continue;
  // A test holds the flush here (FlushWord.GATE) to see what the image holds before it completes.
  for (let gate = Atomics.load(words, FlushWord.GATE); gate !== 0; gate = Atomics.load(words, FlushWord.GATE)) {
    Atomics.wait(words, FlushWord.GATE, gate);
  }
  try {
    fdatasyncSync(fd);
  } catch {
    Atomics.store(words, FlushWord.FAILED, 1);
  }
  Atomics.store(words, FlushWord.DONE, ticket);
  Atomics.notify(words, FlushWord.DONE);
  Atomics.add(doorbell, Doorbell.SEQ, 1);
  Atomics.notify(doorbell, Doorbell.SEQ);
}
closeSync(fd);
