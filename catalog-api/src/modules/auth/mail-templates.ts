/**
 * The text of the sign-in service's mail. Links point at APP_BASE_URL; the tokens in them are
 * single-use and expire (password reset 1 h, email verification 24 h).
 */
import type { Mail } from '../../mail/mailer.ts';

const hours = (ms: number) => Math.round(ms / 3_600_000);

/** What a link mail says; the link is `<baseUrl><page>?token=…`, the same token works at `apiRoute`. */
type LinkMail = { subject: string; intro: string; page: string; apiRoute: string; validity: string; closing?: string };

function linkMail(to: string, m: LinkMail, baseUrl: string, token: string): Mail {
  const link = `${baseUrl}${m.page}?token=${encodeURIComponent(token)}`;
  const text = [m.intro, '', `Open ${link}`, `or send the token to POST ${m.apiRoute}: ${token}`, '', m.validity];
  if (m.closing) text.push(m.closing);
  return { to, subject: m.subject, text: text.join('\n') };
}

/** A password-reset link for an internal account. */
export function passwordResetMail(to: string, baseUrl: string, token: string, ttlMs: number): Mail {
  const m: LinkMail = {
    subject: 'Reset your Music Publishing password',
    intro: 'Someone (hopefully you) asked to reset the password of this account.',
    page: '/reset-password',
    apiRoute: '/api/v1/auth/password/reset',
    validity: `The link works once, for ${hours(ttlMs)} hour(s). Setting a new password signs you out everywhere.`,
    closing: 'If you did not ask for this, ignore this message: your password stays as it is.',
  };
  return linkMail(to, m, baseUrl, token);
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
  const m: LinkMail = {
    subject: 'Confirm your email address for Music Publishing',
    intro: 'Please confirm that this address belongs to you.',
    page: '/verify-email',
    apiRoute: '/api/v1/auth/email/verify',
    validity: `The link works once, for ${hours(ttlMs)} hour(s).`,
  };
  return linkMail(to, m, baseUrl, token);
}
