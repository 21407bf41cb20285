/** Path syntax: names are checked by their UTF-8 length without being encoded, and encoded as TextEncoder would. */
import test from 'ava';
import { IoError } from '../fs/block-device.js';
import { checkName, encodeName, splitParent, splitPath } from '../fs/path.js';

const code = (f: () => unknown) => {
  try {
    f();
    return 'ok';
  } catch (error) {
    return (error as IoError).code;
  }
};

test('a name is at most 255 bytes of UTF-8, however many UTF-16 units it takes', (t) => {
  const cases: Array<[string, string]> = [
    ['a'.repeat(255), 'ok'],
    ['a'.repeat(256), 'ENAMETOOLONG'],
    ['€'.repeat(85), 'ok'], // 3 bytes each: 255
    ['€'.repeat(86), 'ENAMETOOLONG'], // 258 bytes in 86 units
    ['😀'.repeat(63), 'ok'], // 4 bytes for 2 units: 252
    ['😀'.repeat(64), 'ENAMETOOLONG'], // 256 bytes in 128 units
    ['é'.repeat(127) + 'a', 'ok'], // 255
    ['é'.repeat(128), 'ENAMETOOLONG'], // 256 bytes in 128 units
    ['a\0b', 'EINVAL'],
  ];
  for (const [name, expected] of cases) {
    t.is(code(() => splitPath(`/dir/${name}`)), expected, `splitPath, ${name.length} units`);
    t.is(code(() => splitParent(`/dir/${name}`)), expected, `splitParent, ${name.length} units`);
    t.is(code(() => checkName(name)), expected, `checkName, ${name.length} units`);
  }
  t.deepEqual(splitPath('//a///b/'), ['a', 'b']);
  t.is(code(() => splitPath('')), 'ENOENT');
});

test('names encode to the bytes TextEncoder gives', (t) => {
  const encoder = new TextEncoder();
  for (const name of ['plain', 'é€😀', 'x'.repeat(255), '\u{10ffff}', '']) {
    t.deepEqual(new Uint8Array(encodeName(name)), encoder.encode(name), name.slice(0, 10));
  }
});

test('routine errnos carry no stack trace, others (EIO) keep theirs', (t) => {
  t.false(/\n\s+at /.test(new IoError('ENOENT', 'no such file: x').stack ?? ''), 'ENOENT: no frames');
  t.false(/\n\s+at /.test(new IoError('EEXIST', 'x exists').stack ?? ''), 'EEXIST: no frames');
  t.true(/\n\s+at /.test(new IoError('EIO', 'read failed').stack ?? ''), 'EIO: frames');
  t.is(new IoError('ENOENT', 'no such file: x').message, 'ENOENT: no such file: x');
  // The limit is put back: errors raised afterwards have their frames.
  t.true(/\n\s+at /.test(new Error('after').stack ?? ''));
});
