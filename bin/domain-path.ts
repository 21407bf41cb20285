import { posix } from 'node:path';
import type { DomainSummary } from '../hypervisor/control-protocol.js';
import { CliError } from './cli-support.js';
import { EXIT_ERROR } from './platform-client.js';

/** A path inside a domain's view of the shared volume, written `DOM:PATH` on the command line. */
export interface DomainPath {
  domain: string;
  /** Absolute and normalized: `/`, `/dir/file`. */
  path: string;
}

/** True when `spec` names a path in one of the platform's domains (`dom1:/x`, `dom1:`); host paths otherwise. */
export function isDomainSpec(spec: string, domains: DomainSummary[]): boolean {
  const colon = spec.indexOf(':');
  return colon > 0 && domains.some((d) => d.name === spec.slice(0, colon));
}

/** `DOM`, `DOM:` and `DOM:PATH` (relative paths start at the root); an unknown domain is an error naming it. */
export function parseDomainPath(spec: string, domains: DomainSummary[]): DomainPath {
  const colon = spec.indexOf(':');
  const domain = colon < 0 ? spec : spec.slice(0, colon);
  const path = colon < 0 ? '/' : spec.slice(colon + 1);
  if (!domains.some((d) => d.name === domain)) {
    throw new CliError(`unknown domain "${domain}" in "${spec}" (the platform runs ${domains.map((d) => d.name).join(', ')})`, EXIT_ERROR);
  }
  return { domain, path: domainPathOf(path) };
}

/** A path inside a domain made absolute and normalized (`..` never climbs above the root). */
export function domainPathOf(path: string): string {
  return posix.normalize(`/${path}`).replace(/(.)\/$/, '$1');
}

export function formatDomainPath(p: DomainPath): string {
  return `${p.domain}:${p.path}`;
}
