import { Command } from 'commander';
import { open, stat } from 'node:fs/promises';
import { FileBlockDevice } from '../fs/file-block-device.js';
import { mkfs } from '../fs/mkfs.js';
import { readSuperblock } from '../fs/layout.js';
import { formatSize, parseSize } from '../hypervisor/platform-config.js';
import { CliError, parseIntOption } from './cli-support.js';

export function registerMkfs(program: Command): void {
  program
    .command('mkfs')
    .description('create (or overwrite) a volume image and format it with the shared-volume filesystem')
    .argument('<image>', 'the image file')
    .option('--size <size>', 'create the image with this size (e.g. 256M, 1G); without it the image must exist')
    .option('--slots <n>', 'journal slots, one per domain that may mount the volume (default 8)', parseIntOption('--slots'))
    .option('--force', 'format an image that already holds a filesystem')
    .option('--json', 'print the resulting geometry as JSON')
    .addHelpText(
      'after',
      `
Examples:
  $ hvshare mkfs state/shared.img --size 256M
  $ hvshare mkfs big.img --size 4G --slots 16 --json`,
    )
    .action(async (image: string, opts: { size?: string; slots?: number; force?: boolean; json?: boolean }) => {
      const existing = await stat(image).catch(() => null);
      if (opts.size !== undefined) {
        const bytes = parseSize(opts.size);
        if (bytes % 4096 !== 0 || bytes < 1 << 20) throw new CliError(`--size must be at least 1M and a multiple of 4K, not ${opts.size}`);
        if (existing && existing.size > 0 && !opts.force) throw new CliError(`${image} exists; add --force to overwrite it`);
        const handle = await open(image, 'w');
        await handle.truncate(bytes);
        await handle.close();
      } else if (!existing) {
        throw new CliError(`${image} does not exist; give --size to create it`);
      }
      const dev = await FileBlockDevice.open(image);
      try {
        if (!opts.force && opts.size === undefined && (await readSuperblock(dev).then(() => true, () => false))) {
          throw new CliError(`${image} already holds an hvshare filesystem; add --force to format it anyway`);
        }
        const sb = await mkfs(dev, { slots: opts.slots });
        if (opts.json) console.log(JSON.stringify({ image, sizeBytes: dev.sizeBytes, ...sb, uuid: Buffer.from(sb.uuid).toString('hex') }, null, 2));
        else console.log(`${image}: ${formatSize(dev.sizeBytes)}, ${sb.slotCount} journal slots, formatted`);
      } finally {
        await dev.close();
      }
    });
}
