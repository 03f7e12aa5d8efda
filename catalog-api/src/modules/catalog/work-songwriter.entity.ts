/**
 * A songwriter's split of a work (`work_songwriters`): CWR role and the shares of the performance,
 * mechanical and sync rights (percent, two decimals; per right ≤ 100 per work, checked by the API and
 * by a constraint trigger). Plain key columns rather than relations: a split keeps pointing at its
 * songwriter even after that songwriter is soft-deleted.
 */
import { defineEntity, p } from '@mikro-orm/core';
import { SONGWRITER_ROLES } from './shares.ts';

const WorkSongwriterSchema = defineEntity({
  name: 'WorkSongwriter',
  tableName: 'work_songwriters',
  properties: {
    workId: p.uuid().primary(),
    songwriterId: p.uuid().primary(),
    publisherId: p.uuid(),
    role: p.enum(SONGWRITER_ROLES),
    performanceShare: p.decimal('number'),
    mechanicalShare: p.decimal('number'),
    syncShare: p.decimal('number'),
  },
});

export class WorkSongwriter extends WorkSongwriterSchema.class {}
WorkSongwriterSchema.setClass(WorkSongwriter);
