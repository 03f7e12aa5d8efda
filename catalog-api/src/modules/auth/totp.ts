/**
 * Time-based one-time passwords (RFC 6238, HMAC-SHA1, 6 digits, 30 s steps) through the `otpauth`
 * library, and recovery codes.
 *
 * A code is accepted for the current step ± 1 (clock drift) and only for a step later than the last
 * accepted one (`user_credentials.totp_last_step`), so an observed code cannot be replayed
 * (RFC 6238 §5.2).
 */
import * as OTPAuth from 'otpauth';

/** The `issuer` shown by authenticator apps. */
export const TOTP_ISSUER = 'Music Publishing';
const PERIOD_S = 30;

function totp(secretBase32: string, label = ''): OTPAuth.TOTP {
  return new OTPAuth.TOTP({ issuer: TOTP_ISSUER, label, algorithm: 'SHA1', digits: 6, period: PERIOD_S, secret: OTPAuth.Secret.fromBase32(secretBase32) });
}

/** A new random TOTP secret (160 bits, RFC 4226 §4's recommendation), base32. */
export function newTotpSecret(): string {
  return new OTPAuth.Secret({ size: 20 }).base32;
}

/** The `otpauth://totp/…` URI that authenticator apps scan (Key Uri Format). */
export function otpauthUri(secretBase32: string, accountLabel: string): string {
  return totp(secretBase32, accountLabel).toString();
}

/**
 * Check `code` at `nowMs`.
 * @param lastStep the last accepted step (null: none)
 * @returns the step the code belongs to, or null when it is wrong, malformed or already used
 */
export function acceptTotp(secretBase32: string, code: string, lastStep: number | null, nowMs = Date.now()): number | null {
  if (!/^\d{6}$/.test(code)) return null;
  const delta = totp(secretBase32).validate({ token: code, timestamp: nowMs, window: 1 });
  if (delta === null) return null;
  const step = Math.floor(nowMs / 1000 / PERIOD_S) + delta;
  return lastStep !== null && step <= lastStep ? null : step;
}

/** The code for `nowMs` (tests and the demo's `npm run token`). */
export function totpCode(secretBase32: string, nowMs = Date.now()): string {
  return totp(secretBase32).generate({ timestamp: nowMs });
}

/** How many recovery codes an enrolment hands out. */
export const RECOVERY_CODE_COUNT = 10;

/** `n` new recovery codes: 10 random bytes each (80 bits), as `xxxx-xxxx-xxxx-xxxx` (base32, lower case). */
export function newRecoveryCodes(n = RECOVERY_CODE_COUNT): string[] {
  return Array.from({ length: n }, () => {
    const b32 = new OTPAuth.Secret({ size: 10 }).base32.toLowerCase();
    return b32.match(/.{4}/g)!.join('-');
  });
}

/** The canonical form of a typed recovery code (case and dashes/spaces ignored). */
export function normaliseRecoveryCode(code: string): string {
  return code.toLowerCase().replace(/[\s-]/g, '').match(/.{1,4}/g)?.join('-') ?? '';
}
