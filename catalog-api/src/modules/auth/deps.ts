/**
 * What the sign-in service's functions need, built once per process by the auth plugin
 * (routes.ts) or a CLI. Durations in milliseconds.
 */
import type { Redis } from 'ioredis';
import type { Orm } from '../../db/orm.ts';
import type { Mailer } from '../../mail/mailer.ts';
import type { TokenSettings } from './access-tokens.ts';
import type { IssuerKeys } from './keys/key-store.ts';
import type { RevocationPublisher } from './revocations.ts';
import type { Kek } from './secrets.ts';
import type { DirectoryGateway } from '../directory/gateway.ts';

/** Minimal logger (pino-compatible). */
export type Log = {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
};

export type AuthDeps = {
  /** the `catalog_auth` pool */
  orm: Orm;
  keys: IssuerKeys;
  kek: Kek;
  tokens: TokenSettings;
  /** null: no Redis configured (lockout of unknown emails then lives in this process) */
  redis: Redis | null;
  revocations: RevocationPublisher;
  mailer: Mailer;
  directory: DirectoryGateway;
  /** delivers pending relationship changes (memberships created by directory sign-ins) to OpenFGA */
  flushOutbox: () => Promise<void>;
  ttl: {
    sessionMs: number;
    mfaChallengeMs: number;
    passwordResetMs: number;
    emailVerificationMs: number;
  };
  /** base URL of links in mail */
  appBaseUrl: string;
  log: Log;
};
