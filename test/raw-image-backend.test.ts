import test from 'ava';
import { randomBytes } from 'node:crypto';
import { truncate } from 'node:fs/promises';
import { RawImageBackend } from '../hypervisor/raw-image-backend.js';
import { randomImage, tempDir } from './helpers/platform.js';

test('vectored transfers land back to back; a read cut short by the end of the file is finished with zeros', async (t) => {
  const dir = await tempDir(t);
  const image = await randomImage(dir, 16 * 1024);
  const backend = new RawImageBackend(image.path);
  t.teardown(() => backend.close());

  const parts = [randomBytes(512), randomBytes(3584), randomBytes(4096)];
  backend.writev(1024, parts);
  const back = [new Uint8Array(1024), new Uint8Array(7168)];
  backend.readv(1024, back);
  t.true(Buffer.concat(back).equals(Buffer.concat(parts)));

  // The image shrinks under the backend (its size was taken at open): the part past the end reads as zeros.
  await truncate(image.path, 6 * 1024);
  const views = [new Uint8Array(4096).fill(7), new Uint8Array(4096).fill(7)];
  backend.readv(0, views);
  const expected = Buffer.alloc(8192);
  image.contents.copy(expected, 0, 0, 1024);
  Buffer.concat(parts).copy(expected, 1024, 0, 5 * 1024);
  t.true(Buffer.concat(views).equals(expected));
});
