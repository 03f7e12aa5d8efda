/**
 * The text of the sign-in service's mail. Links point at APP_BASE_URL; the tokens in them are
 * single-use and expire (password reset 1 h, email verification 24 h).
 */
import type { Mail } from '../../mail/mailer.ts';

const hours = (ms: number) => Math.round(ms / 3_600_000);

/** A password-reset link for an internal account. */
export function passwordResetMail(to: string, baseUrl: string, token: string, ttlMs: number): Mail {
  const link = `${baseUrl}/reset-password?token=${encodeURIComponent(token)}`;
  return {
    to,
    subject: 'Reset your Music Publishing password',
    text: [
      'Someone (hopefully you) asked to reset the password of this account.',
      '',
      `Open ${link}`,
      `or send the token to POST /api/v1/auth/password/reset: ${token}`,
      '',
      `The link works once, for ${hours(ttlMs)} hour(s). Setting a new password signs you out everywhere.`,
      'If you did not ask for this, ignore this message: your password stays as it is.',
    ].join('\n'),
  };
}

/** The answer to a reset request for a directory account, whose password lives in the directory. */
export function directoryPasswordMail(to: string): Mail {
  return {
    to,
    subject: 'Your Music Publishing password',
    text: [
      'Someone (hopefully you) asked to reset the password of this account.',
      '',
      "This account signs in with your organisation's directory (Active Directory), so its password",
      'is changed there: ask your IT department or use its password tools.',
    ].join('\n'),
  };
}

/** An email-verification link. */
export function emailVerificationMail(to: string, baseUrl: string, token: string, ttlMs: number): Mail {
  const link = `${baseUrl}/verify-email?token=${encodeURIComponent(token)}`;
  return {
    to,
    subject: 'Confirm your email address for Music Publishing',
    text: [
      'Please confirm that this address belongs to you.',
      '',
      `Open ${link}`,
      `or send the token to POST /api/v1/auth/email/verify: ${token}`,
      '',
      `The link works once, for ${hours(ttlMs)} hour(s).`,
    ].join('\n'),
  };
}
