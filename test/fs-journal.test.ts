import test from 'ava';
import { crc32c, crc32cPieces } from '../fs/crc32c.js';
import { FileBlockDevice } from '../fs/file-block-device.js';
import { mkfs } from '../fs/mkfs.js';
import { BLOCK_SIZE, BlockType, Geometry, readSuperblock, sealBlock } from '../fs/layout.js';
import { inspectJournal, Journal, recoverJournals, replayJournal, encodeJournalHeader } from '../fs/journal.js';
import { SMALL_FS, tempImage } from './fs-helpers.js';

test('crc32c matches the standard check values', (t) => {
  t.is(crc32c(new TextEncoder().encode('123456789')), 0xe3069283);
  t.is(crc32c(new Uint8Array(32)), 0x8a9136aa);
  const data = new TextEncoder().encode('hello, journal');
  t.is(crc32c(data.subarray(5), crc32c(data.subarray(0, 5))), crc32c(data), 'continuation');
});

async function setup() {
  const image = await tempImage(16 << 20);
  const dev = await FileBlockDevice.open(image.path);
  const sb = await mkfs(dev, SMALL_FS);
  const g = new Geometry(sb);
  const block = (address: number, fill: number) => {
    const data = new Uint8Array(BLOCK_SIZE).fill(fill);
    sealBlock(data, BlockType.Indirect, address);
    return data;
  };
  const readBlock = async (address: number) => {
    const data = new Uint8Array(BLOCK_SIZE);
    await dev.read(address * BLOCK_SIZE, data);
    return data;
  };
  return { image, dev, sb, g, block, readBlock, async close() { await dev.close(); await image.cleanup(); } };
}

test('commit writes blocks home and leaves a clean journal', async (t) => {
  const s = await setup();
  const journal = await Journal.open(s.dev, s.sb, 1);
  const target = s.g.firstDataBlock(0) + 100;
  await journal.commit([{ block: target, data: s.block(target, 0xab) }, { block: target + 1, data: s.block(target + 1, 0xcd) }]);
  t.deepEqual(await s.readBlock(target), s.block(target, 0xab));
  t.deepEqual(await s.readBlock(target + 1), s.block(target + 1, 0xcd));
  t.is((await inspectJournal(s.dev, s.sb, 1)).state, 'clean');
  t.is(await replayJournal(s.dev, 1), 0);
  await s.close();
});

test('replay copies a committed transaction home; a bad logged copy drops it', async (t) => {
  const s = await setup();
  const slot = 2;
  const target = s.g.firstDataBlock(0) + 50;
  const copy = s.block(target, 0x5a);
  await s.dev.write(s.g.journalLog(slot) * BLOCK_SIZE, copy);
  const header = encodeJournalHeader(s.g.journalHeader(slot), { seq: 9, slot, tag: 0, targets: [target], crcs: [crc32c(copy)] });
  await s.dev.write(s.g.journalHeader(slot) * BLOCK_SIZE, header);
  t.is((await inspectJournal(s.dev, s.sb, slot)).state, 'committed');
  t.is(await replayJournal(s.dev, slot), 1);
  t.deepEqual(await s.readBlock(target), copy);
  t.is((await inspectJournal(s.dev, s.sb, slot)).state, 'clean');

  // Same header, but the logged copy no longer matches its checksum: not committed, dropped.
  const other = s.g.firstDataBlock(0) + 60;
  const before = await s.readBlock(other);
  const wrong = s.block(other, 0x11);
  await s.dev.write(s.g.journalLog(slot) * BLOCK_SIZE, wrong);
  await s.dev.write(s.g.journalHeader(slot) * BLOCK_SIZE, encodeJournalHeader(s.g.journalHeader(slot), { seq: 10, slot, tag: 0, targets: [other], crcs: [crc32c(wrong) ^ 1] }));
  t.is((await inspectJournal(s.dev, s.sb, slot)).state, 'torn');
  t.is(await replayJournal(s.dev, slot), 0);
  t.deepEqual(await s.readBlock(other), before);
  t.is((await inspectJournal(s.dev, s.sb, slot)).state, 'clean');
  t.is((await readSuperblock(s.dev)).slotCount, SMALL_FS.slots!);
  await s.close();
});

test('a torn header (bad checksum) is dropped and Journal.open refuses an unreplayed journal', async (t) => {
  const s = await setup();
  const slot = 0;
  const target = s.g.firstDataBlock(0) + 70;
  const copy = s.block(target, 0x77);
  await s.dev.write(s.g.journalLog(slot) * BLOCK_SIZE, copy);
  const header = encodeJournalHeader(s.g.journalHeader(slot), { seq: 3, slot, tag: 0, targets: [target], crcs: [crc32c(copy)] });
  await s.dev.write(s.g.journalHeader(slot) * BLOCK_SIZE, header);
  await t.throwsAsync(Journal.open(s.dev, s.sb, slot));
  header[100] ^= 0xff;
  await s.dev.write(s.g.journalHeader(slot) * BLOCK_SIZE, header);
  t.is((await inspectJournal(s.dev, s.sb, slot)).state, 'torn');
  t.is(await replayJournal(s.dev, slot), 0);
  t.notDeepEqual(await s.readBlock(target), copy);
  await s.close();
});

test('records of one block in two journals are replayed oldest tag first, whatever the slot order', async (t) => {
  const s = await setup();
  const target = s.g.firstDataBlock(0) + 70;
  const older = s.block(target, 0x11);
  const newer = s.block(target, 0x22);
  // The newer record sits in the lower slot, so slot order alone would replay it first and lose it.
  const records: Array<[number, Uint8Array, number]> = [[0, newer, 8], [3, older, 5]];
  for (const [slot, copy, tag] of records) {
    await s.dev.write(s.g.journalLog(slot) * BLOCK_SIZE, copy);
    const address = s.g.journalHeader(slot);
    await s.dev.write(address * BLOCK_SIZE, encodeJournalHeader(address, { seq: 1, slot, tag, targets: [target], crcs: [crc32c(copy)] }));
  }
  t.is(await recoverJournals(s.dev, [0, 3]), 2);
  t.deepEqual(await s.readBlock(target), newer);
  t.is((await inspectJournal(s.dev, s.sb, 0)).state, 'clean');
  t.is((await inspectJournal(s.dev, s.sb, 3)).state, 'clean');
  await s.close();
});

test('crc32c of the pieces of a buffer: each piece as crc32c gives it, aligned or not', (t) => {
  const data = new Uint8Array(4 * 4096 + 4);
  for (let i = 0; i < data.length; i++) data[i] = (i * 131 + 17) & 255;
  for (const from of [0, 4, 1]) {
    const buffer = data.subarray(from, from + 4 * 4096);
    const pieces = [...crc32cPieces(buffer, 4096, new Uint32Array(4))];
    t.deepEqual(pieces, [0, 1, 2, 3].map((k) => crc32c(buffer.subarray(k * 4096, (k + 1) * 4096))), `offset ${from}`);
  }
  t.not(crc32cPieces(data.subarray(0, 4096), 4096, new Uint32Array(1))[0], crc32cPieces(data.subarray(4, 4100), 4096, new Uint32Array(1))[0]);
});
