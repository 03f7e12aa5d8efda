/**
 * A songwriter (`songwriters`, an interested party): name, IPI name number (11 digits), performing
 * rights organisation.
 */
import { defineEntity, p } from '@mikro-orm/core';
import { catalogColumns, notDeleted } from '../../db/base.entity.ts';

const SongwriterSchema = defineEntity({
  name: 'Songwriter',
  tableName: 'songwriters',
  properties: {
    ...catalogColumns,
    firstName: p.string().nullable(),
    lastName: p.string(),
    ipiNameNumber: p.string().nullable(),
    pro: p.string().nullable(),
  },
  filters: notDeleted,
});

export class Songwriter extends SongwriterSchema.class {}
SongwriterSchema.setClass(Songwriter);
