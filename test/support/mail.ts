/**
 * A real SMTP server for the suites that send mail: scripts/mail-catcher.ts (the `smtp-server`
 * package) as a child process on an ephemeral loopback port, storing every message as an .eml file
 * in a temporary folder; messages are read back with `mailparser`.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { simpleParser } from 'mailparser';
import { freePort } from './http.ts';

const ROOT = resolve(import.meta.dirname, '../..');

/** A parsed message. */
export type Mail = { file: string; to: string; subject: string; text: string };

/** The running catcher. */
export type MailCatcher = {
  /** `smtp://127.0.0.1:<port>` for SMTP_URL */
  url: string;
  dir: string;
  /** Every message so far, oldest first. */
  all(): Promise<Mail[]>;
  /**
   * Wait for a message to `to` (case-insensitive) matching `filter`, newer than `after` messages.
   * @throws after `timeoutMs` (default 10 s)
   */
  waitFor(to: string, opts?: { subject?: RegExp; after?: number; timeoutMs?: number }): Promise<Mail>;
  stop(): Promise<void>;
};

/** A folder of .eml files (a mail catcher's), read back with mailparser. */
export type Mailbox = Pick<MailCatcher, 'all' | 'waitFor'>;

/** The messages stored in `dir` (one .eml each, named so that they sort oldest first). */
export function mailbox(dir: string): Mailbox {
  const parse = async (file: string): Promise<Mail> => {
    const m = await simpleParser(readFileSync(join(dir, file)));
    const to = Array.isArray(m.to) ? m.to.map((a) => a.text).join(', ') : (m.to?.text ?? '');
    return { file, to, subject: m.subject ?? '', text: m.text ?? '' };
  };
  const all = async () => Promise.all(readdirSync(dir).filter((f) => f.endsWith('.eml')).sort().map(parse));
  return {
    all,
    async waitFor(to, opts = {}) {
      const deadline = Date.now() + (opts.timeoutMs ?? 10_000);
      for (;;) {
        const mails = (await all()).slice(opts.after ?? 0);
        const hit = mails.find((m) => m.to.toLowerCase().includes(to.toLowerCase()) && (!opts.subject || opts.subject.test(m.subject)));
        if (hit) return hit;
        if (Date.now() > deadline) throw new Error(`no mail to ${to} within ${opts.timeoutMs ?? 10_000} ms (${mails.length} others)`);
        await sleep(100);
      }
    },
  };
}

/** Start a catcher; resolves once it listens. */
export async function startMailCatcher(): Promise<MailCatcher> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'mail-'));
  const child = spawn(process.execPath, ['scripts/mail-catcher.ts', '--port', String(port), '--dir', dir], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stderr.on('data', (d) => (out += d));
  await new Promise<void>((res, rej) => {
    const timer = setTimeout(() => rej(new Error(`mail catcher did not start: ${out}`)), 20_000);
    child.stdout.on('data', (d: Buffer) => {
      if (String(d).includes('listening')) {
        clearTimeout(timer);
        res();
      }
    });
    child.once('exit', (code) => rej(new Error(`mail catcher exited ${code}: ${out}`)));
  });
  const box = mailbox(dir);
  return {
    url: `smtp://127.0.0.1:${port}`,
    dir,
    all: box.all,
    waitFor: box.waitFor,
    stop: async () => {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await exited;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** The token of an invitation mail (the `{token}` of its `/invitations/{token}` link). */
export function invitationTokenInMail(mail: Mail): string {
  const m = /invitations\/([0-9a-f-]{36})/.exec(mail.text);
  if (!m) throw new Error(`no invitation token in mail "${mail.subject}"`);
  return m[1]!;
}

/** The single-use token a mail carries (the `token=` of its link). */
export function tokenInMail(mail: Mail): string {
  const m = /token=([A-Za-z0-9_%-]+)/.exec(mail.text);
  if (!m) throw new Error(`no token in mail "${mail.subject}"`);
  return decodeURIComponent(m[1]!);
}
