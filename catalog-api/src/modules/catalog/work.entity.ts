/**
 * A musical work (`works`): title, ISWC (stored compact, `T` + 10 digits), language. Its songwriter
 * splits are {@link WorkSongwriter} rows. RLS decides which works a request sees; the entity knows
 * nothing about publishers beyond the column.
 */
import { defineEntity, p } from '@mikro-orm/core';
import { catalogColumns, notDeleted } from '../../db/base.entity.ts';

const WorkSchema = defineEntity({
  name: 'Work',
  tableName: 'works',
  properties: {
    ...catalogColumns,
    title: p.string(),
    iswc: p.string().nullable(),
    language: p.string().nullable(),
  },
  filters: notDeleted,
});

export class Work extends WorkSchema.class {}
WorkSchema.setClass(Work);
