/**
 * /api/v1/recordings — sound recordings of works. ISRCs are syntax-checked and stored compact
 * (12 characters); `work_id` must name a work the caller can see (RLS), else 422.
 */
import { z } from 'zod';
import { problem, type FieldError } from '../errors.ts';
import { IDENTIFIER_REASONS, parseIsrc } from '../domain/identifiers.ts';
import type { RequestTx } from '../db/context.ts';
import { identifierValue } from './common.ts';
import { catalogItemSchema, catalogResource } from './resource.ts';

const createSchema = z.strictObject({
  title: z.string().trim().min(1).max(500),
  isrc: z.string().max(32).nullish(),
  work_id: z.uuid().nullish(),
  duration_ms: z.number().int().min(1).max(86_400_000).nullish().describe('milliseconds'),
  release_date: z.iso.date().nullish().describe('YYYY-MM-DD'),
  owner_user_id: z.uuid().nullish(),
});

const recordingSchema = catalogItemSchema({
  work_id: z.uuid().nullable(),
  title: z.string(),
  isrc: z.string().nullable().describe('compact form CCXXXYYNNNNN'),
  duration_ms: z.number().int().nullable(),
  release_date: z.string().nullable(),
});
type Recording = z.infer<typeof recordingSchema>;

async function checkInput(tx: RequestTx, b: { isrc?: string | null; work_id?: string | null }): Promise<{ isrc: string | null | undefined; workId: string | null | undefined }> {
  const errors: FieldError[] = [];
  const isrc = identifierValue(b.isrc, 'isrc', parseIsrc, IDENTIFIER_REASONS.isrc, errors);
  const workId = typeof b.work_id === 'string' ? b.work_id.toLowerCase() : b.work_id;
  if (workId) {
    const visible = await tx.sql(`select 1 from works where id = $1 and deleted_at is null`, [workId]);
    if (visible.length === 0) errors.push({ field: 'work_id', reason: 'no such work' });
  }
  if (errors.length) throw problem.validation(errors);
  return { isrc, workId };
}

/** Fastify plugin: the recording routes. */
export const recordingsRoutes = catalogResource({
  table: 'recordings',
  noun: 'recording',
  columns: 'work_id, title, isrc, duration_ms, release_date::text as release_date',
  body: createSchema,
  item: recordingSchema,
  values: async (tx, b) => {
    const { isrc, workId } = await checkInput(tx, b);
    return { work_id: workId, title: b.title, isrc, duration_ms: b.duration_ms, release_date: b.release_date };
  },
  present: async (_tx, rows: Recording[]) => rows,
});
