/**
 * The platform description: which volumes exist (backing image, size, journal slot count), which domains exist
 * (id, memory) and what each domain may touch (grants: volume, ro/rw, journal slot). It is what the platform
 * store keeps under its `config` sublevel and what a user may supply as platform.json.
 *
 * `validatePlatform` turns untrusted JSON into a `PlatformConfig`, collecting every problem it finds; each problem
 * names the offending field as a path (`domains[1].grants[0].volume: unknown volume "sharde"`).
 */
import { readFile } from 'node:fs/promises';
import { isAbsolute, join, resolve } from 'node:path';
import { DEFAULT_SLOTS, minimumVolumeBytes } from '../fs/mkfs.js';

/** Volume sizes must be whole filesystem blocks. */
export const VOLUME_ALIGN = 4096;
export const MAX_VOLUME_SIZE = 2 ** 40;
/** Guest memory is a SharedArrayBuffer in the monitor's process: keep it modest. */
export const MIN_MEMORY_MIB = 1;
export const MAX_MEMORY_MIB = 4096;
/** Journal slots a volume has when platform.json does not say (fixed at mkfs): mkfs's default. */
export { DEFAULT_SLOTS };
export const MAX_SLOTS = 64;
/** Domain 0 is the monitor itself; guest domains are numbered from 1. */
export const MAX_DOMAIN_ID = 65535;
export const NAME_PATTERN = /^[a-z0-9-]+$/;
/**
 * `revokeDeadlineMs`: how long a domain may keep a cluster lock after the monitor asked for it back before it is
 * fenced. Not below MIN (a lock in use is kept 100 ms after its grant, and an answer may need a journal commit).
 */
export const MIN_REVOKE_DEADLINE_MS = 1000;
export const MAX_REVOKE_DEADLINE_MS = 600_000;
export const MAX_NAME_LENGTH = 63;

export type GrantMode = 'ro' | 'rw';

export interface VolumeConfig {
  /** [a-z0-9-]+, unique among volumes. */
  name: string;
  /** Backing image file. A relative path is relative to the platform's state folder (see `resolveImagePath`). */
  image: string;
  /** Bytes, a multiple of VOLUME_ALIGN. */
  size: number;
  /** Journal slots on the volume; grant slots are 0..slots-1. */
  slots: number;
}

export interface GrantConfig {
  volume: string;
  mode: GrantMode;
  /** The domain's journal slot on the volume, unique per volume. */
  slot: number;
}

export interface DomainConfig {
  /** [a-z0-9-]+, unique among domains. */
  name: string;
  /** 1..MAX_DOMAIN_ID, unique. */
  id: number;
  /** Guest memory in MiB. */
  memory: number;
  grants: GrantConfig[];
}

export interface PlatformConfig {
  volumes: VolumeConfig[];
  domains: DomainConfig[];
  /** Milliseconds a lock holder has to answer a revoke before it is fenced; absent: the monitor's default (10 s). */
  revokeDeadlineMs?: number;
}

/** Thrown by the validator; `problems` lists every bad field, `message` joins them one per line. */
export class PlatformConfigError extends Error {
  readonly problems: string[];
  constructor(problems: string[], source?: string) {
    const head = source ? `invalid platform description ${source}` : 'invalid platform description';
    super(`${head}:\n  ${problems.join('\n  ')}`);
    this.name = 'PlatformConfigError';
    this.problems = problems;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// sizes

const UNITS: Record<string, number> = { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3, T: 1024 ** 4 };
const SIZE_RE = /^(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?$/i;

/**
 * Parses a size: a non-negative integer number of bytes, or a string such as "4096", "512K", "256M", "1G",
 * "1.5G", "256MiB", "64mb" (binary units, case-insensitive). The result must be a whole number of bytes.
 * Throws a RangeError saying what is wrong.
 */
export function parseSize(input: string | number): number {
  if (typeof input === 'number') {
    if (!Number.isSafeInteger(input) || input < 0) {
      throw new RangeError(`bad size ${input}: expected a non-negative whole number of bytes`);
    }
    return input;
  }
  if (typeof input !== 'string') throw new RangeError(`bad size ${JSON.stringify(input)}: expected e.g. "256M"`);
  const m = SIZE_RE.exec(input.trim());
  if (!m) throw new RangeError(`bad size "${input}": expected bytes or a number with K, M, G or T, e.g. "256M"`);
  const bytes = Number(m[1]) * UNITS[m[2].toUpperCase()];
  if (!Number.isSafeInteger(bytes)) {
    throw new RangeError(`bad size "${input}": not a whole number of bytes, or too large`);
  }
  return bytes;
}

/**
 * Formats bytes for people: the largest binary unit the value reaches, exact when it divides ("256M", "1G",
 * "4096" stays "4K"), otherwise with one decimal ("1.5G"). Exact results parse back with `parseSize`.
 */
export function formatSize(bytes: number): string {
  if (!Number.isFinite(bytes) || bytes < 0) throw new RangeError(`bad byte count ${bytes}`);
  const units = ['K', 'M', 'G', 'T'];
  for (let i = units.length - 1; i >= 0; i--) {
    const scale = UNITS[units[i]];
    if (bytes < scale) continue;
    if (bytes % scale === 0) return `${bytes / scale}${units[i]}`;
    const rounded = Math.round((bytes / scale) * 10) / 10;
    // 1023.96K rounds to 1024.0K: the next unit up says it as 1.0M.
    if (rounded >= 1024 && i + 1 < units.length) return `1.0${units[i + 1]}`;
    return `${rounded.toFixed(1)}${units[i]}`;
  }
  return String(Math.round(bytes));
}

/** The smallest volume for `slots` journals (mkfs's layout), said exactly and as a size to type. */
export function minimumSizeText(slots: number): string {
  const minimum = minimumVolumeBytes({ slots });
  return `${slots} journal slot${slots === 1 ? '' : 's'} need at least ${minimum} bytes (${formatSize(Math.ceil(minimum / 2 ** 20) * 2 ** 20)})`;
}

// ---------------------------------------------------------------------------------------------------------------
// the default platform

export const DEFAULT_VOLUME = 'shared';
export const DEFAULT_IMAGE = 'shared.img';

/**
 * The embedded platform: one 256 MiB volume `shared` backed by `<state>/shared.img`, domains dom1 and dom2
 * read-write and dom3 read-only on it, each with its own journal slot and 64 MiB of memory. With `stateDir` the
 * image path is absolute, without it relative to the state folder.
 */
export function defaultPlatform(stateDir?: string): PlatformConfig {
  const image = stateDir ? join(resolve(stateDir), DEFAULT_IMAGE) : DEFAULT_IMAGE;
  const domain = (id: number, mode: GrantMode): DomainConfig => ({
    name: `dom${id}`,
    id,
    memory: 64,
    grants: [{ volume: DEFAULT_VOLUME, mode, slot: id - 1 }],
  });
  return {
    volumes: [{ name: DEFAULT_VOLUME, image, size: 256 * 1024 * 1024, slots: DEFAULT_SLOTS }],
    domains: [domain(1, 'rw'), domain(2, 'rw'), domain(3, 'ro')],
  };
}

/** The absolute path of a volume's backing image. */
export function resolveImagePath(stateDir: string, volume: Pick<VolumeConfig, 'image'>): string {
  return isAbsolute(volume.image) ? volume.image : resolve(stateDir, volume.image);
}

/** The domain's grant on `volume`, if any. */
export function grantFor(domain: DomainConfig, volume: string): GrantConfig | undefined {
  return domain.grants.find((g) => g.volume === volume);
}

// ---------------------------------------------------------------------------------------------------------------
// validation

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Reports fields of `obj` that are not in `known` (typos such as "memroy" must not pass silently). */
function unknownFields(obj: Obj, known: readonly string[], at: string, problems: string[]): void {
  for (const key of Object.keys(obj)) {
    if (!known.includes(key)) {
      problems.push(`${at ? `${at}.` : ''}${key}: unknown field (expected ${known.join(', ')})`);
    }
  }
}

/** Calls `fn` for each entry of `list` that is an object, after reporting the entries that are not and any
 *  unknown fields; `at` is the entry's path, e.g. `domains[2]`. */
function eachEntry(
  list: unknown[],
  prefix: string,
  fields: readonly string[],
  problems: string[],
  fn: (raw: Obj, at: string, i: number) => void,
): void {
  list.forEach((raw, i) => {
    const at = `${prefix}[${i}]`;
    if (!isObj(raw)) {
      problems.push(`${at}: expected an object`);
      return;
    }
    unknownFields(raw, fields, at, problems);
    fn(raw, at, i);
  });
}

function checkName(v: unknown, at: string, problems: string[]): string | undefined {
  if (typeof v !== 'string' || v === '') {
    problems.push(`${at}: missing name (a string of a-z, 0-9 and -)`);
    return undefined;
  }
  if (!NAME_PATTERN.test(v)) {
    problems.push(`${at}: bad name ${JSON.stringify(v)}: only lower-case letters, digits and - are allowed`);
    return undefined;
  }
  if (v.length > MAX_NAME_LENGTH) {
    problems.push(`${at}: name ${JSON.stringify(v)} is longer than ${MAX_NAME_LENGTH} characters`);
    return undefined;
  }
  return v;
}

function checkInt(v: unknown, min: number, max: number, what: string, at: string, problems: string[]) {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    problems.push(`${at}: bad ${what} ${JSON.stringify(v)}: expected a whole number from ${min} to ${max}`);
    return undefined;
  }
  return v;
}

function checkVolumeSize(v: unknown, slots: number, at: string, problems: string[]): number | undefined {
  if (v === undefined) {
    problems.push(`${at}: missing size (e.g. "256M")`);
    return undefined;
  }
  let bytes: number;
  try {
    bytes = parseSize(v as string | number);
  } catch (e) {
    problems.push(`${at}: ${(e as Error).message}`);
    return undefined;
  }
  if (bytes < minimumVolumeBytes({ slots })) {
    problems.push(`${at}: size ${formatSize(bytes)} is too small: ${minimumSizeText(slots)}`);
    return undefined;
  }
  if (bytes > MAX_VOLUME_SIZE) {
    problems.push(`${at}: size ${formatSize(bytes)} is larger than ${formatSize(MAX_VOLUME_SIZE)}`);
    return undefined;
  }
  if (bytes % VOLUME_ALIGN !== 0) {
    problems.push(`${at}: size ${bytes} is not a multiple of the ${VOLUME_ALIGN}-byte block`);
    return undefined;
  }
  return bytes;
}

/** Memory: a number of MiB, or a size string that is a whole number of MiB ("64M", "1G"). */
function checkMemory(v: unknown, at: string, problems: string[]): number | undefined {
  if (v === undefined) {
    problems.push(`${at}: missing memory (MiB, e.g. 64 or "64M")`);
    return undefined;
  }
  let mib: number;
  if (typeof v === 'number') {
    mib = v;
  } else {
    let bytes: number;
    try {
      bytes = parseSize(v as string);
    } catch (e) {
      problems.push(`${at}: ${(e as Error).message}`);
      return undefined;
    }
    if (bytes % (1024 * 1024) !== 0) {
      problems.push(`${at}: memory ${JSON.stringify(v)} is not a whole number of MiB`);
      return undefined;
    }
    mib = bytes / (1024 * 1024);
  }
  return checkInt(mib, MIN_MEMORY_MIB, MAX_MEMORY_MIB, 'memory (MiB)', at, problems);
}

const VOLUME_FIELDS = ['name', 'image', 'size', 'slots'] as const;
const DOMAIN_FIELDS = ['name', 'id', 'memory', 'grants'] as const;
const GRANT_FIELDS = ['volume', 'mode', 'slot'] as const;

/**
 * Checks an untrusted platform description (parsed JSON) and returns it normalised: sizes in bytes, memory in
 * MiB, `slots` defaulted, domain ids assigned in order where omitted. Throws PlatformConfigError listing every
 * problem. Accepts its own output unchanged.
 */
export function validatePlatform(input: unknown, source?: string): PlatformConfig {
  const problems: string[] = [];
  const fail = () => new PlatformConfigError(problems, source);
  if (!isObj(input)) {
    problems.push('expected an object with "volumes" and "domains"');
    throw fail();
  }
  unknownFields(input, ['volumes', 'domains', 'revokeDeadlineMs'], '', problems);
  const revokeDeadlineMs =
    input.revokeDeadlineMs === undefined
      ? undefined
      : checkInt(input.revokeDeadlineMs, MIN_REVOKE_DEADLINE_MS, MAX_REVOKE_DEADLINE_MS, 'revoke deadline (ms)', 'revokeDeadlineMs', problems);

  const volumes: VolumeConfig[] = [];
  const volumeByName = new Map<string, VolumeConfig>();
  const imageOwner = new Map<string, string>();
  if (!Array.isArray(input.volumes) || input.volumes.length === 0) {
    problems.push('volumes: expected a non-empty array of volumes');
  } else {
    eachEntry(input.volumes, 'volumes', VOLUME_FIELDS, problems, (raw, at) => {
      const name = checkName(raw.name, `${at}.name`, problems);
      if (name !== undefined && volumeByName.has(name)) {
        problems.push(`${at}.name: duplicate volume name "${name}"`);
      }
      let image: string | undefined;
      if (raw.image === undefined && name !== undefined) {
        image = `${name}.img`;
      } else if (typeof raw.image !== 'string' || raw.image.trim() === '') {
        problems.push(`${at}.image: expected the backing image's path`);
      } else {
        image = raw.image;
      }
      if (image !== undefined) {
        const other = imageOwner.get(image);
        if (other !== undefined) problems.push(`${at}.image: "${image}" already backs volume "${other}"`);
        else if (name !== undefined) imageOwner.set(image, name);
      }
      const slots =
        raw.slots === undefined ? DEFAULT_SLOTS : checkInt(raw.slots, 1, MAX_SLOTS, 'slot count', `${at}.slots`, problems);
      const size = checkVolumeSize(raw.size, slots ?? DEFAULT_SLOTS, `${at}.size`, problems);
      if (name !== undefined && image !== undefined && size !== undefined && slots !== undefined) {
        const vol = { name, image, size, slots };
        if (!volumeByName.has(name)) volumeByName.set(name, vol);
        volumes.push(vol);
      } else if (name !== undefined && !volumeByName.has(name)) {
        // Remember the name anyway so grants on it do not also report "unknown volume".
        volumeByName.set(name, { name, image: '', size: 0, slots: MAX_SLOTS });
      }
    });
  }

  const domains: DomainConfig[] = [];
  const domainNames = new Set<string>();
  const ids = new Map<number, string>();
  /** volume -> slot -> "domain name" that holds it */
  const slotOwner = new Map<string, Map<number, string>>();
  if (!Array.isArray(input.domains) || input.domains.length === 0) {
    problems.push('domains: expected a non-empty array of domains');
  } else {
    const explicitIds = input.domains
      .map((d) => (isObj(d) && typeof d.id === 'number' && Number.isInteger(d.id) ? d.id : 0))
      .filter((n) => n > 0);
    let nextId = Math.max(0, ...explicitIds) + 1;
    eachEntry(input.domains, 'domains', DOMAIN_FIELDS, problems, (raw, at, i) => {
      const name = checkName(raw.name, `${at}.name`, problems);
      if (name !== undefined) {
        if (domainNames.has(name)) problems.push(`${at}.name: duplicate domain name "${name}"`);
        domainNames.add(name);
      }
      const id = raw.id === undefined ? nextId++ : checkInt(raw.id, 1, MAX_DOMAIN_ID, 'domain id', `${at}.id`, problems);
      if (id !== undefined) {
        const other = ids.get(id);
        if (other !== undefined) problems.push(`${at}.id: duplicate domain id ${id} (already domain "${other}")`);
        else ids.set(id, name ?? `#${i}`);
      }
      const memory = checkMemory(raw.memory, `${at}.memory`, problems);
      const grants: GrantConfig[] = [];
      if (!Array.isArray(raw.grants) || raw.grants.length === 0) {
        // A domain boots with the filesystem of its first grant: without one it has nothing to run.
        problems.push(`${at}.grants: expected a non-empty array of grants (a domain mounts the volume of its first grant)`);
      } else {
        const seen = new Set<string>();
        eachEntry(raw.grants, `${at}.grants`, GRANT_FIELDS, problems, (g, gat) => {
          let volume: VolumeConfig | undefined;
          if (typeof g.volume !== 'string') {
            problems.push(`${gat}.volume: expected a volume name`);
          } else if (!(volume = volumeByName.get(g.volume))) {
            const known = [...volumeByName.keys()].map((n) => `"${n}"`).join(', ') || 'none';
            problems.push(`${gat}.volume: unknown volume ${JSON.stringify(g.volume)} (volumes: ${known})`);
          } else if (seen.has(g.volume)) {
            problems.push(`${gat}.volume: volume "${g.volume}" is granted twice`);
            volume = undefined;
          } else {
            seen.add(g.volume);
          }
          let mode: GrantMode | undefined;
          if (g.mode !== 'ro' && g.mode !== 'rw') {
            problems.push(`${gat}.mode: bad mode ${JSON.stringify(g.mode)}: expected "ro" or "rw"`);
          } else {
            mode = g.mode;
          }
          const maxSlot = (volume?.slots ?? MAX_SLOTS) - 1;
          const slot = checkInt(g.slot, 0, maxSlot, 'journal slot', `${gat}.slot`, problems);
          if (volume && slot !== undefined) {
            let owners = slotOwner.get(volume.name);
            if (!owners) slotOwner.set(volume.name, (owners = new Map()));
            const other = owners.get(slot);
            if (other !== undefined) {
              problems.push(`${gat}.slot: slot ${slot} on volume "${volume.name}" is already domain "${other}"'s journal slot`);
            } else {
              owners.set(slot, name ?? `#${i}`);
            }
          }
          if (volume && mode && slot !== undefined) grants.push({ volume: volume.name, mode, slot });
        });
      }
      if (name !== undefined && id !== undefined && memory !== undefined) domains.push({ name, id, memory, grants });
    });
  }

  if (problems.length > 0) throw fail();
  return revokeDeadlineMs === undefined ? { volumes, domains } : { volumes, domains, revokeDeadlineMs };
}

/** Parses and validates platform.json text; `source` (a file name) prefixes the error messages. */
export function parsePlatformJson(text: string, source = 'platform.json'): PlatformConfig {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (e) {
    throw new PlatformConfigError([`not valid JSON: ${(e as Error).message}`], source);
  }
  return validatePlatform(data, source);
}

/** Reads, parses and validates a platform.json file. */
export async function loadPlatformFile(path: string): Promise<PlatformConfig> {
  return parsePlatformJson(await readFile(path, 'utf8'), path);
}
