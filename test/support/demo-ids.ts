/**
 * The seeded publishers and users the suites name most (migrations/seed/demo.ts has them all), and
 * the problem `type` URI of an error kind.
 */
import { publisherId, userId } from '../../migrations/seed/demo.ts';

export const DMP = publisherId('dmp');
export const SHEER = publisherId('sheer');
export const SONGTRUST = publisherId('songtrust');
export const SPIRIT = publisherId('spirit');
export const SYSADMIN = userId('sysadmin@example.com');
export const DMP_ADMIN = userId('admin@dmp.example');
export const DMP_MANAGER = userId('manager@dmp.example');
export const DMP_EDITOR = userId('editor@dmp.example');
export const DMP_VIEWER = userId('viewer@dmp.example');
export const SPIRIT_OWNER = userId('owner@spirit.example');
/** viewer at DMP, editor at Spirit */
export const MULTI = userId('multi@example.com');
/** a creator at Songtrust */
export const CREATOR1 = userId('creator1@songtrust.example');

/** The problem `type` of error kind `kind` (docs/CONTRACTS.md, "Errors"). */
export const TYPE = (kind: string) => `https://errors.music-publishing.example/${kind}`;
