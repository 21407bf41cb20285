/** BlockSet answers as a Set<number> of the same blocks would, across chunk boundaries and for runs. */
import test from 'ava';
import { BlockSet } from '../fs/block-set.js';

test('runs added and removed across chunk boundaries: has and size as a Set gives them', (t) => {
  const set = new BlockSet();
  const model = new Set<number>();
  const ops: Array<[boolean, number, number]> = [[true, 32760, 20], [true, 5, 1], [false, 32767, 3], [true, 2 ** 31 + 7, 2], [true, 32765, 4], [false, 0, 10], [false, 99999, 5]];
  for (const [add, start, count] of ops) {
    if (add) set.add(start, count);
    else set.delete(start, count);
    for (let b = start; b < start + count; b++) {
      if (add) model.add(b);
      else model.delete(b);
    }
    t.is(set.size, model.size);
  }
  for (const b of [0, 4, 5, 6, 32759, 32760, 32766, 32767, 32768, 32769, 32770, 32779, 32780, 2 ** 31 + 7, 2 ** 31 + 8, 2 ** 31 + 9]) {
    t.is(set.has(b), model.has(b), `block ${b}`);
  }
  set.clear();
  t.is(set.size, 0);
  t.false(set.has(32760));
});
