/**
 * Outgoing mail through SMTP with nodemailer. Messages are queued and sent in the background, so a
 * request never waits for (or reveals anything through the timing of) the mail server; a failed send
 * is retried three times with backoff (1 s, 4 s, 16 s), then logged and dropped — every message here
 * can be asked for again (a new reset link, a new invitation).
 */
import nodemailer, { type Transporter } from 'nodemailer';
import type { Logger } from '../logger.ts';

/** One message. */
export type Mail = { to: string; subject: string; text: string };

/** Minimal logger (pino-compatible). */
type Log = Logger;

/** The mail queue. */
export type Mailer = {
  /** Queue `mail`; returns at once. */
  send(mail: Mail): void;
  /** Resolves when every queued message has been sent or given up on. */
  idle(): Promise<void>;
  /** Wait for the queue, then close the SMTP connections. */
  close(): Promise<void>;
};

/** Options of {@link createMailer}. Timeouts in milliseconds. */
export type MailerOptions = {
  /** `smtp://host:port` or `smtps://user:pass@host:port` */
  smtpUrl: string;
  from: string;
  log: Log;
  /** connect, greeting and socket timeouts (default 5000) */
  timeoutMs?: number;
  /** delays between attempts (default [1000, 4000, 16000]) */
  retryDelaysMs?: number[];
};

/** Create the mail queue. */
export function createMailer(opts: MailerOptions): Mailer {
  const timeout = opts.timeoutMs ?? 5000;
  const transport: Transporter = nodemailer.createTransport({
    url: opts.smtpUrl,
    connectionTimeout: timeout,
    greetingTimeout: timeout,
    socketTimeout: timeout,
  });
  const delays = opts.retryDelaysMs ?? [1000, 4000, 16_000];
  const pending = new Set<Promise<void>>();

  const deliver = async (mail: Mail) => {
    for (let attempt = 0; ; attempt++) {
      try {
        await transport.sendMail({ from: opts.from, to: mail.to, subject: mail.subject, text: mail.text });
        opts.log.info({ subject: mail.subject }, 'mail sent');
        return;
      } catch (err) {
        if (attempt >= delays.length) {
          opts.log.error({ err: { message: (err as Error).message }, subject: mail.subject }, 'mail could not be sent; giving up');
          return;
        }
        opts.log.warn({ err: { message: (err as Error).message }, attempt: attempt + 1 }, 'mail not sent; will retry');
        await new Promise((r) => setTimeout(r, delays[attempt]));
      }
    }
  };

  return {
    send(mail) {
      const p = deliver(mail).finally(() => pending.delete(p));
      pending.add(p);
    },
    async idle() {
      while (pending.size) await Promise.all([...pending]);
    },
    async close() {
      await this.idle();
      transport.close();
    },
  };
}
