/**
 * /api/v1/recordings — sound recordings of works. ISRCs are syntax-checked and stored compact
 * (12 characters); `work_id` must name a work the caller can see (RLS), else 422.
 */
import { z } from 'zod';
import { problem, type FieldError } from '../../errors.ts';
import { IDENTIFIER_REASONS, parseIsrc } from './identifiers.ts';
import { catalogItemBase, catalogItemSchema, catalogResource, identifierValue, placementFields } from './resource.ts';
import { Recording } from './recording.entity.ts';
import { Work } from './work.entity.ts';

const createSchema = z.strictObject({
  title: z.string().trim().min(1).max(500),
  isrc: z.string().max(32).nullish(),
  work_id: z.uuid().nullish(),
  duration_ms: z.number().int().min(1).max(86_400_000).nullish().describe('milliseconds'),
  release_date: z.iso.date().nullish().describe('YYYY-MM-DD'),
  ...placementFields,
});

const recordingSchema = catalogItemSchema({
  work_id: z.uuid().nullable(),
  title: z.string(),
  isrc: z.string().nullable().describe('compact form CCXXXYYNNNNN'),
  duration_ms: z.number().int().nullable(),
  release_date: z.string().nullable(),
}).meta({ id: 'Recording' });

/** Fastify plugin: the recording routes. */
export const recordingsRoutes = catalogResource({
  entity: Recording,
  collection: 'recordings',
  noun: 'recording',
  body: createSchema,
  item: recordingSchema,
  values: async (tx, b) => {
    const errors: FieldError[] = [];
    const isrc = identifierValue(b.isrc, 'isrc', parseIsrc, IDENTIFIER_REASONS.isrc, errors);
    const workId = typeof b.work_id === 'string' ? b.work_id.toLowerCase() : b.work_id;
    if (workId && !(await tx.em.findOne(Work, { id: workId }, { fields: ['id'] }))) errors.push({ field: 'work_id', reason: 'no such work' });
    if (errors.length) throw problem.validation(errors);
    return { workId, title: b.title, isrc, durationMs: b.duration_ms, releaseDate: b.release_date };
  },
  present: async (_tx, rows) =>
    rows.map((r) => ({
      ...catalogItemBase(r),
      work_id: r.workId ?? null,
      title: r.title,
      isrc: r.isrc ?? null,
      duration_ms: r.durationMs ?? null,
      release_date: r.releaseDate ?? null,
    })),
});
