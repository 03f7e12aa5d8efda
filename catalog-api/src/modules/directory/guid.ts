/**
 * AD objectGUID ↔ RFC 4122 text. AD stores the GUID as the 16 bytes of a Windows GUID structure,
 * whose first three fields are little-endian ([MS-DTYP] 2.3.4.2), while the text form prints them
 * big-endian: bytes 3 2 1 0 - 5 4 - 7 6 - 8 9 - 10 … 15.
 */
const ORDER = [3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15];

/** 16 objectGUID bytes → `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (lower case). */
export function guidFromBytes(bytes: Uint8Array): string {
  if (bytes.length !== 16) throw new RangeError('an objectGUID has 16 bytes');
  const hex = ORDER.map((i) => bytes[i]!.toString(16).padStart(2, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** RFC 4122 text → the 16 objectGUID bytes. @throws RangeError for anything else */
export function guidToBytes(guid: string): Buffer {
  const hex = guid.replace(/-/g, '');
  if (!/^[0-9a-fA-F]{32}$/.test(hex)) throw new RangeError(`not a GUID: ${guid}`);
  const text = Buffer.from(hex, 'hex');
  const out = Buffer.alloc(16);
  ORDER.forEach((src, dst) => (out[src] = text[dst]!));
  return out;
}
