/**
 * A platform description checked against the images that already exist, before it is stored or anything boots:
 * an image's size and journal slots are fixed when it is made, so a description that says otherwise would either
 * pass silently (a size) or fail later at boot (a grant's slot the volume does not have).
 */
import { stat } from 'node:fs/promises';
import { FileBlockDevice } from '../fs/file-block-device.js';
import { readSuperblock } from '../fs/layout.js';
import { formatSize, PlatformConfigError, resolveImagePath, type PlatformConfig } from './platform-config.js';

/** Throws a PlatformConfigError naming each field that disagrees with an existing image. */
export async function checkConfigAgainstImages(stateDir: string, config: PlatformConfig): Promise<void> {
  const problems: string[] = [];
  for (const [i, volume] of config.volumes.entries()) {
    const path = resolveImagePath(stateDir, volume);
    const info = await stat(path).catch(() => null);
    // A missing (or empty: a format cut short by an older hvshare) image is made with the description's figures.
    if (!info || info.size === 0) continue;
    if (!info.isFile()) {
      problems.push(`volumes[${i}].image: ${path} is not a regular file`);
      continue;
    }
    if (info.size !== volume.size) {
      problems.push(
        `volumes[${i}].size: ${formatSize(volume.size)}, but the image ${path} is ${formatSize(info.size)} ` +
          `(set size to "${formatSize(info.size)}", or re-create the image with \`hvshare mkfs --force --size\`)`,
      );
    }
    // An unreadable superblock is refused when the volume is checked before mounting, in words of its own.
    const sb = await superblockOf(path);
    if (!sb || sb.slotCount >= volume.slots) continue;
    problems.push(`volumes[${i}].slots: ${volume.slots}, but the image ${path} was made with ${sb.slotCount} journal slots`);
    for (const domain of config.domains) {
      for (const [g, grant] of domain.grants.entries()) {
        if (grant.volume === volume.name && grant.slot >= sb.slotCount) {
          problems.push(`domains[${config.domains.indexOf(domain)}].grants[${g}].slot: ${grant.slot}, but volume "${volume.name}" has slots 0..${sb.slotCount - 1}`);
        }
      }
    }
  }
  if (problems.length > 0) throw new PlatformConfigError(problems, `(against the images in ${stateDir})`);
}

async function superblockOf(path: string) {
  const dev = await FileBlockDevice.open(path, { readOnly: true });
  try {
    return await readSuperblock(dev).catch(() => null);
  } finally {
    await dev.close();
  }
}
