/**
 * The SQS-compatible server the tests publish to (goaws, started by scripts/services.sh; its
 * settings come from the environment: SQS_ENDPOINT_URL, SQS_PROTOCOL, AWS_*), a private FIFO queue
 * per suite, and a consumer on the same SDK the relay uses.
 *
 * The consumer is the product's (catalog-api/src/events/consumer.ts: one message at a time, deleted
 * before the next receive).
 */
import { CreateQueueCommand, DeleteQueueCommand, GetQueueAttributesCommand, type SQSClient } from '@aws-sdk/client-sqs';
import { consumeEvents } from '../../catalog-api/src/events/consumer.ts';
import { randomBytes } from 'node:crypto';
import { createSqsClient } from '../../catalog-api/src/events/sqs.ts';

/** The SQS settings of the environment, as catalog-api config variables. @throws when SQS_ENDPOINT_URL is unset */
export function sqsEnv(): Record<string, string> {
  const endpoint = process.env.SQS_ENDPOINT_URL;
  if (!endpoint) throw new Error('SQS_ENDPOINT_URL is not set: run the suites through scripts/test.sh, or eval "$(bash scripts/services.sh)" first');
  return {
    SQS_ENDPOINT_URL: endpoint,
    SQS_PROTOCOL: process.env.SQS_PROTOCOL ?? 'query',
    AWS_REGION: process.env.AWS_REGION ?? 'us-east-1',
    AWS_ACCESS_KEY_ID: process.env.AWS_ACCESS_KEY_ID ?? 'local',
    AWS_SECRET_ACCESS_KEY: process.env.AWS_SECRET_ACCESS_KEY ?? 'local',
  };
}

/** An SDK client on the environment's server. */
export function testSqsClient(): SQSClient {
  const env = sqsEnv();
  return createSqsClient({
    SQS_ENDPOINT_URL: env.SQS_ENDPOINT_URL,
    SQS_PROTOCOL: env.SQS_PROTOCOL as 'json' | 'query',
    AWS_REGION: env.AWS_REGION!,
    AWS_ACCESS_KEY_ID: env.AWS_ACCESS_KEY_ID,
    AWS_SECRET_ACCESS_KEY: env.AWS_SECRET_ACCESS_KEY,
    AWS_SESSION_TOKEN: undefined,
    SQS_REQUEST_TIMEOUT_MS: 5000,
  });
}

/** Create a fresh FIFO queue `events-<tag>-<pid>-<random>.fifo`. @returns its URL */
export async function createTestQueue(client: SQSClient, tag: string): Promise<string> {
  const name = `events-${tag}-${process.pid}-${randomBytes(4).toString('hex')}.fifo`;
  const out = await client.send(new CreateQueueCommand({ QueueName: name, Attributes: { FifoQueue: 'true', ContentBasedDeduplication: 'false' } }));
  return out.QueueUrl!;
}

/** Delete a queue (never throws). */
export async function deleteTestQueue(client: SQSClient, url: string): Promise<void> {
  await client.send(new DeleteQueueCommand({ QueueUrl: url })).catch(() => undefined);
}

/** Messages in the queue, visible or in flight. */
export async function queueDepth(client: SQSClient, url: string): Promise<number> {
  const out = await client.send(new GetQueueAttributesCommand({ QueueUrl: url, AttributeNames: ['ApproximateNumberOfMessages', 'ApproximateNumberOfMessagesNotVisible'] }));
  return Number(out.Attributes?.ApproximateNumberOfMessages ?? 0) + Number(out.Attributes?.ApproximateNumberOfMessagesNotVisible ?? 0);
}

/** A received event: the parsed body. */
export type ReceivedEvent = {
  id: string;
  type: string;
  version: number;
  publisher_id: string | null;
  object_id: string;
  occurred_at: string;
  actor_user_id: string | null;
  data: Record<string, unknown>;
  previous?: Record<string, unknown>;
};

/**
 * Receive and delete messages one at a time until the queue answers empty.
 * @param max stop after this many (default: no limit)
 * @returns the parsed bodies in the order received
 */
export async function receiveAll(client: SQSClient, url: string, max = Infinity): Promise<ReceivedEvent[]> {
  const got: ReceivedEvent[] = [];
  await consumeEvents(client, url, (e) => got.push(e as unknown as ReceivedEvent), { max, waitSeconds: 0 });
  return got;
}

/**
 * Receive until at least `n` messages arrived or `timeoutMs` passed.
 * @returns what arrived (possibly fewer than `n`)
 */
export async function receiveAtLeast(client: SQSClient, url: string, n: number, timeoutMs = 10_000): Promise<ReceivedEvent[]> {
  const got: ReceivedEvent[] = [];
  const until = Date.now() + timeoutMs;
  while (got.length < n && Date.now() < until) {
    const batch = await receiveAll(client, url, n - got.length);
    got.push(...batch);
    if (got.length < n) await new Promise((r) => setTimeout(r, 50));
  }
  return got;
}

/** The MessageGroupId an event was sent with, derived from its body (goaws does not report it). */
export function groupOf(e: ReceivedEvent): string {
  return e.publisher_id ?? `user:${e.object_id}`;
}
