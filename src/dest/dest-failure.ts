// Between errors (what adapters throw) and Failures (what D's session core carries as data).
import { PostcopyError, UsageError, errorFor, toPostcopyError } from '../common/errors.js';
import type { Failure } from './dest-core-types.js';

/** A Failure as an error: the one it came from when there is one. */
export function errorOf(f: Failure): PostcopyError {
  return f.cause instanceof PostcopyError ? f.cause : errorFor(f.code, f.detail ?? f.message);
}

/** Anything thrown, as a Failure the core can carry (`wrapCode` for what is not ours). */
export function failureOf(e: unknown, wrapCode: PostcopyError['code'] = 'PC_ERR_ROLLBACK', usageAllowed = false): Failure {
  const err = toPostcopyError(e, (d, o) => errorFor(wrapCode, d, o));
  // A state dir D cannot write is D's trouble, not a mistake in S's request.
  const usage = usageAllowed && err instanceof UsageError && err.code !== 'PC_ERR_STATE_DIR';
  return { code: err.code, message: err.message, detail: err.detail ?? err.message, cause: err, ...(usage ? { usage } : {}) };
}
