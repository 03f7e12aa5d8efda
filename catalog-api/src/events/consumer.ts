/**
 * A consumer of the domain-event queue on the same SDK the relay uses: what a downstream service
 * does, and what `npm run events -- consume` runs against the local queue. It receives one message
 * at a time and deletes it before the next receive — goaws v0.4.5 hides later messages of a group
 * from a receive that asks for several while an earlier one is in flight (real SQS does not), and
 * a FIFO group's next message is only handed out once the one before is deleted.
 */
import { DeleteMessageCommand, ReceiveMessageCommand, type SQSClient } from '@aws-sdk/client-sqs';

/** A domain event as the relay publishes it (docs/CONTRACTS.md, "Domain events"). */
export type ConsumedEvent = { id: string; type: string; publisher_id: string | null; occurred_at: string; [k: string]: unknown };

/**
 * Receive and delete up to `max` messages, calling `onEvent` with each parsed body, until a receive
 * finds the queue empty (after `waitSeconds` of long polling).
 * @returns how many messages were consumed
 * @throws the SDK's error when the queue cannot be reached (messages received so far stay deleted)
 */
export async function consumeEvents(
  client: SQSClient,
  queueUrl: string,
  onEvent: (event: ConsumedEvent) => void,
  opts: { max?: number; waitSeconds?: number } = {},
): Promise<number> {
  const max = opts.max ?? Number.POSITIVE_INFINITY;
  let consumed = 0;
  while (consumed < max) {
    const out = await client.send(new ReceiveMessageCommand({ QueueUrl: queueUrl, MaxNumberOfMessages: 1, WaitTimeSeconds: opts.waitSeconds ?? 1, VisibilityTimeout: 30 }));
    const message = out.Messages?.[0];
    if (!message) break;
    onEvent(JSON.parse(message.Body ?? '{}') as ConsumedEvent);
    await client.send(new DeleteMessageCommand({ QueueUrl: queueUrl, ReceiptHandle: message.ReceiptHandle }));
    consumed++;
  }
  return consumed;
}
