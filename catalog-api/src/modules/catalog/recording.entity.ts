/**
 * A sound recording (`recordings`) of a work: title, ISRC (stored compact, 12 characters), duration
 * in milliseconds, release date (`YYYY-MM-DD`).
 */
import { defineEntity, p } from '@mikro-orm/core';
import { catalogColumns, notDeleted } from '../../db/base.entity.ts';

const RecordingSchema = defineEntity({
  name: 'Recording',
  tableName: 'recordings',
  properties: {
    ...catalogColumns,
    workId: p.uuid().nullable(),
    title: p.string(),
    isrc: p.string().nullable(),
    durationMs: p.integer().nullable(),
    releaseDate: p.date().nullable(),
  },
  filters: notDeleted,
});

export class Recording extends RecordingSchema.class {}
RecordingSchema.setClass(Recording);
