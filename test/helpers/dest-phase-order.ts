// The order D's persisted phase may move in (re-persisting the same phase is fine): the model tests of D's core
// alone and of both cores together check every persist against it.
import type { DestPhase } from '../../src/dest/dest-core-types.js';

export const DEST_PHASE_EDGES: Readonly<Record<DestPhase, readonly DestPhase[]>> = {
  idle: ['prepared', 'aborted'],
  prepared: ['receiving-ram', 'postcopy', 'aborted'],
  'receiving-ram': ['postcopy', 'aborted'],
  // postcopy -> aborted only while nothing ran here: each test checks that separately.
  postcopy: ['complete', 'aborted'],
  // complete -> postcopy only on S's DIGEST_MISMATCH: checked where it happens.
  complete: ['confirmed', 'postcopy'],
  confirmed: [],
  aborted: [],
};
