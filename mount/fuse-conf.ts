/**
 * Whether this process may mount a view for every user of the host. fusermount lets a user other than root pass
 * allow_other only when /etc/fuse.conf has a line `user_allow_other`; otherwise the mount fails. Asked before
 * mounting, so the user learns why and what to do instead of a failed mount.
 */
import { readFile } from 'node:fs/promises';

export const FUSE_CONF = '/etc/fuse.conf';

/** Why allow_other cannot be used here, or null when it can. */
export async function allowOtherRefusal(uid = process.getuid?.() ?? 0, conf = FUSE_CONF): Promise<string | null> {
  if (uid === 0) return null;
  const text = await readFile(conf, 'utf8').catch(() => '');
  const allowed = text.split('\n').some((line) => line.trim() === 'user_allow_other');
  return allowed
    ? null
    : `a view for every user (allow_other) needs a line "user_allow_other" in ${conf} when not mounted by root; ` +
        'add it, or mount a private view (hvshare up --private)';
}
