import { join } from 'node:path';
import { FileBlockDevice } from '../../fs/file-block-device.js';
import { formatNewImage } from '../../fs/mkfs.js';
import { fsck, type FsckReport } from '../../fs/fsck.js';

/** A freshly formatted volume image of `bytes`. */
export async function formattedImage(dir: string, bytes: number, name = 'shared.img'): Promise<string> {
  const path = join(dir, name);
  await formatNewImage(path, bytes);
  return path;
}

/** fsck an image natively. */
export async function fsckImage(path: string): Promise<FsckReport> {
  const dev = await FileBlockDevice.open(path, { readOnly: true });
  try {
    return await fsck(dev);
  } finally {
    await dev.close();
  }
}
