/**
 * Password hashing with argon2id (RFC 9106) through the `argon2` library, with the OWASP Password
 * Storage Cheat Sheet's first recommended configuration: m = 19 MiB (19456 KiB), t = 2, p = 1.
 * Hashes are PHC strings (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`), so the parameters travel with each
 * hash and can be raised later (`needsRehash`).
 *
 * Unknown accounts cost the same as known ones: {@link verifyPassword} without a hash verifies
 * against a dummy hash made with the same parameters (OWASP Authentication Cheat Sheet).
 */
import argon2 from 'argon2';
import { randomBytes } from 'node:crypto';

/** argon2id parameters (OWASP: m = 19456 KiB, t = 2, p = 1). */
export const ARGON2_OPTIONS = { type: argon2.argon2id, memoryCost: 19_456, timeCost: 2, parallelism: 1 } as const;

/** Shortest accepted password (characters). */
export const MIN_PASSWORD_LENGTH = 12;
/** Longest accepted password (characters): bounds the work one request can ask for. */
export const MAX_PASSWORD_LENGTH = 1024;

/** Hash `password` (argon2id, a fresh 16-byte salt). @returns the PHC string */
export function hashPassword(password: string): Promise<string> {
  return argon2.hash(password, ARGON2_OPTIONS);
}

let dummy: Promise<string> | undefined;
/** A hash of a random secret with {@link ARGON2_OPTIONS}, made once per process. */
function dummyHash(): Promise<string> {
  dummy ??= hashPassword(randomBytes(24).toString('base64'));
  return dummy;
}

/**
 * Check `password` against `hash`; with no hash (unknown account, directory user) the same work
 * is done against a dummy hash and the answer is false.
 * @returns true when the password matches
 */
export async function verifyPassword(hash: string | null | undefined, password: string): Promise<boolean> {
  if (!hash) {
    await argon2.verify(await dummyHash(), password).catch(() => false);
    return false;
  }
  try {
    return await argon2.verify(hash, password);
  } catch {
    return false; // a malformed stored hash never matches
  }
}

/** True when `hash` was made with weaker parameters than {@link ARGON2_OPTIONS}. */
export function needsRehash(hash: string): boolean {
  return argon2.needsRehash(hash, ARGON2_OPTIONS);
}

/**
 * The reasons `password` is not acceptable as a new password (empty = fine): at least 12 and at most
 * 1024 characters (NIST SP 800-63B §3.1.1.2: length over composition rules), not the account's email.
 */
export function passwordProblems(password: string, email?: string): string[] {
  const problems: string[] = [];
  const length = [...password].length;
  if (length < MIN_PASSWORD_LENGTH) problems.push(`must be at least ${MIN_PASSWORD_LENGTH} characters`);
  if (length > MAX_PASSWORD_LENGTH) problems.push(`must be at most ${MAX_PASSWORD_LENGTH} characters`);
  if (email && password.trim().toLowerCase() === email.trim().toLowerCase()) problems.push('must not be your email address');
  return problems;
}
