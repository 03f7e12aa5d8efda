/**
 * Stage 1b — request header checks (after the canonical-path check), on the raw header list: Node
 * keeps only the first of a repeated `Authorization` and silently drops the rest, so a request
 * with two credentials would be decided on one while a proxy or upstream behind us might read
 * the other. `Authorization` is not a list field (RFC 9110 §5.3, §11.6.2): sending it twice is
 * ambiguous, and ambiguity is refused.
 */
import { ProblemError } from '../problem.ts';

/** Request fields that must not be repeated (compared case-insensitively). */
export const SINGLETON_HEADERS: readonly string[] = ['authorization'];

/**
 * Check the raw request headers.
 * @param rawHeaders Node's `IncomingMessage.rawHeaders`: name, value, name, value …
 * @throws ProblemError 400 `bad-request` when a {@link SINGLETON_HEADERS} field appears twice
 */
export function checkRequestHeaders(rawHeaders: readonly string[]): void {
  for (const name of SINGLETON_HEADERS) {
    let seen = 0;
    for (let i = 0; i < rawHeaders.length; i += 2) {
      if (rawHeaders[i]!.length === name.length && rawHeaders[i]!.toLowerCase() === name && ++seen > 1) {
        throw new ProblemError(400, 'bad-request', `The ${name} header must be sent once.`);
      }
    }
  }
}
