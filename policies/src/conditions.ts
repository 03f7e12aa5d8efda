/**
 * Conditional grants (policies/model.fga, "Conditional grants"; OpenFGA conditions:
 * https://openfga.dev/docs/modeling/conditions): the two conditions' names and parameters, the
 * request context every Check sends, and the office-network (CIDR) parsing the catalog API and the
 * model tests share.
 *
 * - `non_expired_grant(current_time, grant_expires_at)`: a membership's role tuple that ends. The
 *   tuple carries `grant_expires_at`; the Check sends `current_time`.
 * - `outside_office_networks(client_ip, office_networks)`: the publisher's
 *   `publisher:<p>#off_network@user:*` tuple carries `office_networks` (CIDRs); the Check sends
 *   `client_ip`. It holds (and shuts the publisher's staff out) when the address is in none of them.
 *
 * OpenFGA (v1.18.3 and v1.22.1) answers a Check whose path reaches a conditional tuple without the condition's
 * parameters with an error (400, "missing context parameters"), not with a deny — so every Check of
 * this model must carry {@link CheckContext}.
 */
import { BlockList, isIP } from 'node:net';

/** The expiring-grant condition of role tuples. */
export const EXPIRY_CONDITION = 'non_expired_grant';
/** The office-network condition of the `off_network` tuple. */
export const OFFICE_NETWORK_CONDITION = 'outside_office_networks';
/** The publisher relation whose `user:*` tuple restricts the publisher's staff to its office networks. */
export const OFF_NETWORK_RELATION = 'off_network';

/** The context every Check sends (both parameters the tuples do not carry). */
export type CheckContext = { current_time: string; client_ip: string };

/** A condition as written on a tuple (OpenFGA `RelationshipCondition`). */
export type TupleCondition = { name: string; context: Record<string, unknown> };

/**
 * The address used when the client's is unknown: in no office network anyone would configure
 * (except `0.0.0.0/0`, which restricts nothing), so a restricted publisher's staff are shut out — fail closed.
 */
export const UNKNOWN_CLIENT_IP = '0.0.0.0';

/**
 * The client address as the condition context takes it: an IPv4-mapped IPv6 address
 * (`::ffff:192.0.2.1`, RFC 4291 §2.5.5.2) → its IPv4 form; an IPv6 zone (`%eth0`) dropped;
 * undefined or not an IP address → {@link UNKNOWN_CLIENT_IP}.
 * Cheap on the common path (an IPv4 string is returned as is).
 */
export function conditionClientIp(address: string | undefined): string {
  if (!address) return UNKNOWN_CLIENT_IP;
  let a = address;
  if (a.startsWith('::ffff:') && isIP(a.slice(7)) === 4) return a.slice(7);
  const zone = a.indexOf('%');
  if (zone >= 0) a = a.slice(0, zone);
  return isIP(a) ? a : UNKNOWN_CLIENT_IP;
}

/**
 * The Check context for a request at `timeMs` (ms since the epoch) from `clientIp`.
 * @returns `{ current_time: RFC 3339 (UTC, ms precision), client_ip }` ({@link conditionClientIp}).
 */
export function checkContext(timeMs: number, clientIp: string | undefined): CheckContext {
  return { current_time: new Date(timeMs).toISOString(), client_ip: conditionClientIp(clientIp) };
}

/**
 * The condition of a role tuple that ends at `expiresAt`.
 * @throws RangeError when `expiresAt` is not a valid date.
 */
export function expiryCondition(expiresAt: Date | string): TupleCondition {
  const d = typeof expiresAt === 'string' ? new Date(expiresAt) : expiresAt;
  if (Number.isNaN(d.getTime())) throw new RangeError(`expiryCondition: not a date: ${String(expiresAt)}`);
  return { name: EXPIRY_CONDITION, context: { grant_expires_at: d.toISOString() } };
}

/** The condition of a publisher's `off_network` tuple for its office networks (canonical CIDRs). */
export function officeNetworksCondition(networks: readonly string[]): TupleCondition {
  return { name: OFFICE_NETWORK_CONDITION, context: { office_networks: [...networks] } };
}

/** A parsed CIDR block. */
export type Cidr = { address: string; prefix: number; family: 'ipv4' | 'ipv6' };

/**
 * Parse a CIDR block (`192.0.2.0/24`, `2001:db8::/32`, `198.51.100.7/32`; RFC 4632, RFC 4291 §2.3).
 * The prefix length is required (OpenFGA's `in_cidr` parses with Go's netip.ParsePrefix, which
 * needs it). Host bits may be set: `in_cidr` and node:net's BlockList both match on the prefix only.
 * @throws RangeError when the address or the prefix length is invalid.
 */
export function parseCidr(text: string): Cidr {
  const slash = text.indexOf('/');
  if (slash < 0) throw new RangeError(`no prefix length (/n): ${text}`);
  const address = text.slice(0, slash);
  const version = isIP(address);
  // strict (no spaces, zones or leading zeros): the text goes to OpenFGA's in_cidr as it is, and a
  // block it cannot parse would make every Check at the publisher an error
  if (version === 0 || address.includes('%')) throw new RangeError(`not an IP address: ${text}`);
  const max = version === 4 ? 32 : 128;
  const prefixText = text.slice(slash + 1);
  if (!/^(0|[1-9]\d{0,2})$/.test(prefixText) || Number(prefixText) > max) throw new RangeError(`not a prefix length 0..${max}: ${text}`);
  return { address: address.toLowerCase(), prefix: Number(prefixText), family: version === 4 ? 'ipv4' : 'ipv6' };
}

/** The canonical text of a CIDR block: `<address>/<prefix>`. */
export function formatCidr(c: Cidr): string {
  return `${c.address}/${c.prefix}`;
}

/**
 * A matcher for a list of office networks.
 * @returns `contains(ip)`: whether the address (IPv4, IPv6 or IPv4-mapped IPv6) is in any of them.
 * @throws RangeError from {@link parseCidr}.
 */
export function officeNetworkMatcher(networks: readonly string[]): { contains(ip: string): boolean } {
  const list = new BlockList();
  for (const n of networks) {
    const c = parseCidr(n);
    list.addSubnet(c.address, c.prefix, c.family);
  }
  return {
    contains(ip) {
      const version = isIP(ip);
      return version !== 0 && list.check(ip, version === 4 ? 'ipv4' : 'ipv6');
    },
  };
}
