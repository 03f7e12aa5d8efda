/**
 * The SQS side of the domain-event relay: an {@link EventSink} on `@aws-sdk/client-sqs`
 * (SendMessageBatch to a FIFO queue), configured by catalog-api/src/config.ts (SQS_*, AWS_*).
 *
 * `SQS_PROTOCOL=query` selects the AWS Query protocol (`@aws-sdk/config/protocol`, documented in
 * the client's README), which local servers such as goaws v0.4.5 speak; AWS itself speaks both.
 * The SDK makes one attempt per call (`maxAttempts: 1`): the relay retries with its own backoff,
 * and a call must never outlast the relay's database transaction.
 */
import { SQSClient, SendMessageBatchCommand, type SendMessageBatchCommandOutput } from '@aws-sdk/client-sqs';
import { AwsQueryProtocol } from '@aws-sdk/config/protocol';
import type { CatalogConfig } from '../config.ts';

/** SQS's limit of entries per SendMessageBatch call. */
export const SQS_MAX_BATCH_ENTRIES = 10;

/** One message for the queue. */
export type OutgoingMessage = {
  /** batch entry id, unique within the call (the outbox row id) */
  entryId: string;
  body: string;
  /** MessageGroupId: the order key (publisher id, or `user:<id>`) */
  groupId: string;
  /** MessageDeduplicationId: the event id */
  deduplicationId: string;
};

/** What became of one entry of a batch call. */
export type EntryOutcome =
  | { entryId: string; ok: true }
  /** `senderFault`: SQS says the entry itself is at fault (it would fail again); false = the service's */
  | { entryId: string; ok: false; error: string; senderFault: boolean };

/** Where the relay sends events. */
export interface EventSink {
  /**
   * Send ≤ 10 messages in one call.
   * @returns one outcome per entry, in the order of `messages`
   * @throws when the call as a whole fails (network, throttling, credentials, missing queue): no
   *   entry is known to be accepted
   */
  sendBatch(messages: readonly OutgoingMessage[]): Promise<EntryOutcome[]>;
  /** Release connections. */
  close(): void;
}

/**
 * Per-entry outcomes of a SendMessageBatch answer (SQS reports each entry in `Successful` or
 * `Failed`; a 200 answer may hold failures). An entry in neither list is counted as failed, not the
 * sender's fault (its fate is unknown; resending is safe, the queue de-duplicates by event id).
 * @returns one outcome per entry of `messages`, in that order
 */
export function batchOutcomes(messages: readonly OutgoingMessage[], output: Pick<SendMessageBatchCommandOutput, 'Successful' | 'Failed'>): EntryOutcome[] {
  const ok = new Set((output.Successful ?? []).map((s) => s.Id));
  const failed = new Map((output.Failed ?? []).map((f) => [f.Id, f]));
  return messages.map((m): EntryOutcome => {
    const f = failed.get(m.entryId);
    if (f) return { entryId: m.entryId, ok: false, error: `${f.Code ?? 'Failed'}: ${f.Message ?? 'refused by SQS'}`, senderFault: f.SenderFault === true };
    if (ok.has(m.entryId)) return { entryId: m.entryId, ok: true };
    return { entryId: m.entryId, ok: false, error: 'MissingResult: SQS reported no result for this entry', senderFault: false };
  });
}

/** The configuration an {@link SqsEventSink} reads. */
export type SqsConfig = Pick<
  CatalogConfig,
  'SQS_ENDPOINT_URL' | 'SQS_PROTOCOL' | 'AWS_REGION' | 'AWS_ACCESS_KEY_ID' | 'AWS_SECRET_ACCESS_KEY' | 'AWS_SESSION_TOKEN' | 'SQS_REQUEST_TIMEOUT_MS'
>;

/**
 * An SQS client for `config`: endpoint (or AWS's for the region), static credentials when both
 * halves are configured (else the SDK's default chain), protocol, timeouts, one attempt per call.
 */
export function createSqsClient(config: SqsConfig): SQSClient {
  const credentials =
    config.AWS_ACCESS_KEY_ID && config.AWS_SECRET_ACCESS_KEY
      ? { accessKeyId: config.AWS_ACCESS_KEY_ID, secretAccessKey: config.AWS_SECRET_ACCESS_KEY, sessionToken: config.AWS_SESSION_TOKEN }
      : undefined;
  return new SQSClient({
    region: config.AWS_REGION,
    endpoint: config.SQS_ENDPOINT_URL,
    credentials,
    maxAttempts: 1,
    requestHandler: { requestTimeout: config.SQS_REQUEST_TIMEOUT_MS, connectionTimeout: Math.min(config.SQS_REQUEST_TIMEOUT_MS, 2000) },
    ...(config.SQS_PROTOCOL === 'query' ? { protocol: AwsQueryProtocol } : {}),
  });
}

/** Sends to one FIFO queue with SendMessageBatch. */
export class SqsEventSink implements EventSink {
  readonly #client: SQSClient;
  readonly #queueUrl: string;

  /** @param queueUrl the FIFO queue's URL */
  constructor(client: SQSClient, queueUrl: string) {
    this.#client = client;
    this.#queueUrl = queueUrl;
  }

  /** @throws RangeError for more than 10 messages; the SDK's error when the call fails */
  async sendBatch(messages: readonly OutgoingMessage[]): Promise<EntryOutcome[]> {
    if (messages.length === 0) return [];
    if (messages.length > SQS_MAX_BATCH_ENTRIES) throw new RangeError(`at most ${SQS_MAX_BATCH_ENTRIES} messages per call`);
    const output = await this.#client.send(
      new SendMessageBatchCommand({
        QueueUrl: this.#queueUrl,
        Entries: messages.map((m) => ({ Id: m.entryId, MessageBody: m.body, MessageGroupId: m.groupId, MessageDeduplicationId: m.deduplicationId })),
      }),
    );
    return batchOutcomes(messages, output);
  }

  close(): void {
    this.#client.destroy();
  }
}
