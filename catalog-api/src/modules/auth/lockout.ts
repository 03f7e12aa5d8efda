/**
 * Account lockout after repeated sign-in failures (OWASP Authentication Cheat Sheet, "Account
 * Lockout"): 5 failures within 15 minutes lock the account for 15 minutes; each further lock while
 * the previous one is recent doubles the time (30 min, 1 h, … capped at 24 h); a successful sign-in
 * clears the count and the doubling. A locked account is answered 429 `account-locked` with
 * Retry-After without looking at the password.
 *
 * The rule is pure; two stores apply it: `user_credentials` for known accounts, Redis for emails
 * that belong to no account (so a lockout cannot tell an attacker which emails exist).
 */

/** Failures within {@link LOCKOUT.windowMs} that lock the account. */
export const LOCKOUT = {
  threshold: 5,
  windowMs: 15 * 60_000,
  baseLockMs: 15 * 60_000,
  maxLockMs: 24 * 60 * 60_000,
  /** A lock that ended longer ago than this no longer doubles the next one. */
  levelMemoryMs: 24 * 60 * 60_000,
} as const;

/** The lockout columns of one account. */
export type LockoutState = {
  failedLoginCount: number;
  firstFailedAt: Date | null;
  lockedUntil: Date | null;
  lockoutLevel: number;
};

/** The state of an account that never failed. */
export const CLEAR: LockoutState = Object.freeze({ failedLoginCount: 0, firstFailedAt: null, lockedUntil: null, lockoutLevel: 0 });

/** Milliseconds until `state` unlocks at `now` (0 = not locked). */
export function lockedForMs(state: LockoutState, now: Date): number {
  return state.lockedUntil ? Math.max(0, state.lockedUntil.getTime() - now.getTime()) : 0;
}

/** The state after one more failure at `now` (may start a lock). */
export function afterFailure(state: LockoutState, now: Date): LockoutState {
  const t = now.getTime();
  const inWindow = state.firstFailedAt !== null && t - state.firstFailedAt.getTime() <= LOCKOUT.windowMs;
  const count = inWindow ? state.failedLoginCount + 1 : 1;
  const first = inWindow ? state.firstFailedAt : now;
  if (count < LOCKOUT.threshold) return { ...state, failedLoginCount: count, firstFailedAt: first };
  const recent = state.lockedUntil !== null && t - state.lockedUntil.getTime() <= LOCKOUT.levelMemoryMs;
  const level = (recent ? state.lockoutLevel : 0) + 1;
  const lockMs = Math.min(LOCKOUT.baseLockMs * 2 ** (level - 1), LOCKOUT.maxLockMs);
  return { failedLoginCount: 0, firstFailedAt: null, lockedUntil: new Date(t + lockMs), lockoutLevel: level };
}
