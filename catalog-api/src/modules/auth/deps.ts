/**
 * What the sign-in service's functions need, built once per process by the auth plugin
 * (routes.ts) or a CLI. Durations in milliseconds.
 */
import type { RedisClient } from '../../../../policies/src/redis.ts';
import type { Orm } from '../../db/orm.ts';
import type { Mailer } from '../../mail/mailer.ts';
import type { TokenSettings } from './access-tokens.ts';
import type { IssuerKeys } from './keys/key-store.ts';
import type { RevocationPublisher } from './revocations.ts';
import type { Kek } from './secrets.ts';
import type { DirectoryGateway } from '../directory/gateway.ts';
import type { Logger } from '../../logger.ts';

/** The logger of the sign-in service. */
export type Log = Logger;

export type AuthDeps = {
  /** the `catalog_auth` pool */
  orm: Orm;
  keys: IssuerKeys;
  kek: Kek;
  tokens: TokenSettings;
  /** lockout of unknown emails, shared by every process (while Redis fails: each process's own) */
  redis: RedisClient;
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
