/**
 * A test-only fault: `HVSHARE_FAULT_CORRUPT_READS=dom2:planted` makes domain dom2's guest agent flip the first
 * byte of every read of a file whose path contains "planted", and of every extended attribute value read from
 * such a path (several `domain:text` pairs may be given, separated by commas). It stands for a domain whose view went wrong, so tests can show that `hvshare check` and
 * `hvshare diff` see it. Unset (always, outside tests), the agent does nothing extra.
 */
export class ReadCorruption {
  private readonly victims = new Set<number>();

  private constructor(private readonly marker: string) {}

  /** The fault for domain `name` from the environment, or null. */
  static fromEnvironment(name: string, env = process.env.HVSHARE_FAULT_CORRUPT_READS): ReadCorruption | null {
    for (const pair of env?.split(',') ?? []) {
      const colon = pair.indexOf(':');
      if (colon > 0 && pair.slice(0, colon) === name && colon < pair.length - 1) return new ReadCorruption(pair.slice(colon + 1));
    }
    return null;
  }

  /** Follows the agent's calls: which handles are open on a marked path. */
  observe(op: string, args: unknown[], result: unknown): unknown {
    if ((op === 'open' || op === 'create') && String(args[0]).includes(this.marker)) this.victims.add(result as number);
    else if (op === 'release') this.victims.delete(args[0] as number);
    else if (op === 'read' && this.victims.has(args[0] as number) && result instanceof Uint8Array && result.length > 0) result[0] ^= 0xff;
    else if (op === 'getxattr' && String(args[0]).includes(this.marker) && result instanceof Uint8Array && result.length > 0) result[0] ^= 0xff;
    return result;
  }
}
