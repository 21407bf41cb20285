import { Command } from 'commander';
import { stat } from 'node:fs/promises';
import { FileBlockDevice } from '../fs/file-block-device.js';
import { DEFAULT_SLOTS, formatNewImage, minimumVolumeBytes } from '../fs/mkfs.js';
import { BLOCK_SIZE, readSuperblock } from '../fs/layout.js';
import { formatSize, minimumSizeText, parseSize } from '../hypervisor/platform-config.js';
import { CliError, parseIntOption } from './cli-support.js';

/** Slots mkfs accepts (one journal each). */
const MAX_MKFS_SLOTS = 256;

async function holdsFilesystem(image: string): Promise<boolean> {
  const dev = await FileBlockDevice.open(image, { readOnly: true });
  try {
    return await readSuperblock(dev).then(() => true, () => false);
  } finally {
    await dev.close();
  }
}

export function registerMkfs(program: Command): void {
  program
    .command('mkfs')
    .description('create (or overwrite) a volume image and format it with the shared-volume filesystem')
    .argument('<image>', 'the image file')
    .option('--size <size>', 'create the image with this size (e.g. 256M, 1G); without it the image must exist')
    .option('--slots <n>', `journal slots, one per domain that may mount the volume (default ${DEFAULT_SLOTS}, at most ${MAX_MKFS_SLOTS})`, parseIntOption('--slots'))
    .option('--force', 'format an image that already holds a filesystem')
    .option('--json', 'print the resulting geometry as JSON')
    .addHelpText(
      'after',
      `
The image is built in a hidden file beside it (.IMAGE.formatting) and renamed into place once it is complete
and on disk: an interrupted or failed mkfs leaves the old image (or none) and never a half-formatted one. Large
images are sparse and formatted lazily: allocation groups past the first 16 are initialised on first use, so
1T takes under a second.
The smallest size depends on the slots: ${minimumSizeText(DEFAULT_SLOTS)}.

Examples:
  $ hvshare mkfs state/shared.img --size 256M
  $ hvshare mkfs big.img --size 4G --slots 16 --json
  $ hvshare mkfs state/shared.img --force          re-format an existing image at its size`,
    )
    .action(async (image: string, opts: { size?: string; slots?: number; force?: boolean; json?: boolean }) => {
      const slots = opts.slots ?? DEFAULT_SLOTS;
      if (slots > MAX_MKFS_SLOTS) throw new CliError(`--slots must be at most ${MAX_MKFS_SLOTS}, not ${slots}`);
      const existing = await stat(image).catch(() => null);
      if (existing && !existing.isFile()) throw new CliError(`${image} is not a regular file`);
      let bytes: number;
      let what: string;
      if (opts.size !== undefined) {
        try {
          bytes = parseSize(opts.size);
        } catch (err) {
          throw new CliError(`--size: ${(err as Error).message}`);
        }
        if (bytes % BLOCK_SIZE !== 0) throw new CliError(`--size must be a multiple of 4K, not ${opts.size}`);
        if (existing && existing.size > 0 && !opts.force) throw new CliError(`${image} exists; add --force to overwrite it`);
        what = `--size ${opts.size}`;
      } else if (!existing) {
        throw new CliError(`${image} does not exist; give --size to create it`);
      } else {
        if (!opts.force && (await holdsFilesystem(image))) {
          throw new CliError(`${image} already holds an hvshare filesystem; add --force to format it anyway`);
        }
        bytes = existing.size;
        what = `${image} (${bytes} bytes)`;
      }
      if (bytes < minimumVolumeBytes({ slots })) throw new CliError(`${what} is too small: ${minimumSizeText(slots)}`);
      const sb = await formatNewImage(image, bytes, { slots }).catch((err: Error & { detail?: string }) => {
        throw new CliError(`${image}: ${err.detail ?? err.message}; nothing was left behind`);
      });
      if (opts.json) console.log(JSON.stringify({ image, sizeBytes: bytes, ...sb, uuid: Buffer.from(sb.uuid).toString('hex') }, null, 2));
      else console.log(`${image}: ${formatSize(bytes)}, ${sb.slotCount} journal slots, formatted`);
    });
}
