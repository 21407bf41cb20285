import test from 'ava';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { allowOtherRefusal } from '../mount/fuse-conf.js';
import { tempDir } from './helpers/platform.js';

test('allow_other: root always may; another user only with user_allow_other in fuse.conf', async (t) => {
  const dir = await tempDir(t);
  const conf = join(dir, 'fuse.conf');
  await writeFile(conf, '# mount_max = 1000\n#user_allow_other\n');
  t.is(await allowOtherRefusal(0, conf), null);
  t.regex((await allowOtherRefusal(1000, conf)) ?? '', /user_allow_other.*fuse\.conf.*--private/);
  t.regex((await allowOtherRefusal(1000, join(dir, 'missing.conf'))) ?? '', /user_allow_other/);
  await writeFile(conf, 'mount_max = 10\n user_allow_other \n');
  t.is(await allowOtherRefusal(1000, conf), null);
});
