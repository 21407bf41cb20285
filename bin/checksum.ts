import { createHash } from 'node:crypto';
import { crc32c, crcHex } from '../fs/crc32c.js';
import { CliError } from './cli-support.js';

export const CHECKSUM_KINDS = ['sha256', 'crc32c'] as const;
export type ChecksumKind = (typeof CHECKSUM_KINDS)[number];

export function parseChecksumKind(value: string): ChecksumKind {
  if (!(CHECKSUM_KINDS as readonly string[]).includes(value)) throw new CliError(`--checksum must be one of ${CHECKSUM_KINDS.join(', ')}, not "${value}"`, 2);
  return value as ChecksumKind;
}

/** The checksum of a stream of chunks, in hex (crc32c: 8 digits). */
export async function checksumOf(kind: ChecksumKind, chunks: AsyncIterable<Uint8Array>): Promise<string> {
  if (kind === 'sha256') {
    const hash = createHash('sha256');
    for await (const chunk of chunks) hash.update(chunk);
    return hash.digest('hex');
  }
  let crc = 0;
  for await (const chunk of chunks) crc = crc32c(chunk, crc);
  return crcHex(crc);
}
