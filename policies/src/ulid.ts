/**
 * OpenFGA ids (stores, models) are ULIDs (https://github.com/ulid/spec): the first 10 Crockford
 * base32 characters are the creation time in ms since the Unix epoch. ReadAuthorizationModels
 * returns no timestamps, so this is how the CLI shows when a model was written.
 */
const ALPHABET = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';

/** Creation time of a ULID. @throws Error when `id` is not a 26-character ULID. */
export function ulidTime(id: string): Date {
  if (!/^[0-9A-HJKMNP-TV-Z]{26}$/i.test(id)) throw new Error(`not a ULID: ${id}`);
  let ms = 0;
  for (const ch of id.slice(0, 10).toUpperCase()) ms = ms * 32 + ALPHABET.indexOf(ch);
  return new Date(ms);
}
