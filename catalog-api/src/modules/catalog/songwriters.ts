/**
 * /api/v1/songwriters — songwriters (interested parties) of a publisher. IPI name numbers are
 * validated (11 digits, mod-101 check, see identifiers.ts).
 */
import { z } from 'zod';
import { problem, type FieldError } from '../../errors.ts';
import { IDENTIFIER_REASONS, parseIpiNameNumber } from './identifiers.ts';
import { catalogItemBase, catalogItemSchema, catalogResource, identifierValue, placementFields } from './resource.ts';
import { Songwriter } from './songwriter.entity.ts';

const name = z.string().trim().min(1).max(200);

const createSchema = z.strictObject({
  first_name: name.nullish(),
  last_name: name,
  ipi_name_number: z.string().max(32).nullish(),
  pro: z.string().trim().min(1).max(64).nullish().describe('performing rights organisation, e.g. ASCAP'),
  ...placementFields,
});

const songwriterSchema = catalogItemSchema({
  first_name: z.string().nullable(),
  last_name: z.string(),
  ipi_name_number: z.string().nullable(),
  pro: z.string().nullable(),
}).meta({ id: 'Songwriter' });

/** Fastify plugin: the songwriter routes. */
export const songwritersRoutes = catalogResource({
  entity: Songwriter,
  collection: 'songwriters',
  noun: 'songwriter',
  body: createSchema,
  item: songwriterSchema,
  values: async (_tx, b) => {
    const errors: FieldError[] = [];
    const ipi = identifierValue(b.ipi_name_number, 'ipi_name_number', parseIpiNameNumber, IDENTIFIER_REASONS.ipi, errors);
    if (errors.length) throw problem.validation(errors);
    return { firstName: b.first_name, lastName: b.last_name, ipiNameNumber: ipi, pro: b.pro };
  },
  present: async (_tx, rows) =>
    rows.map((s) => ({ ...catalogItemBase(s), first_name: s.firstName ?? null, last_name: s.lastName, ipi_name_number: s.ipiNameNumber ?? null, pro: s.pro ?? null })),
});
