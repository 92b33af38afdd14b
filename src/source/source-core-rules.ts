// Small pure rules S's core applies to what D says: its ABORT as an error, its phase at a resume, its refusals.
import { CODE_OWNER, ERROR_CODES, RolledBackError, UsageError, errorFor, isPostcopyError, type ErrorCode, type PostcopyError } from '../common/errors.js';

/**
 * D's ABORT as an error: a refusal the operator must act on keeps D's code (a UsageError: exit 2); any other
 * reason, or a code we do not know, is a rollback.
 */
export function abortError(msg: { reason: string; code?: string }): PostcopyError {
  const code = msg.code;
  const usage = code !== undefined && Object.hasOwn(ERROR_CODES, code) && CODE_OWNER[code as ErrorCode] === UsageError;
  return usage ? errorFor(code as ErrorCode, msg.reason) : new RolledBackError('PC_ERR_ROLLBACK', msg.reason);
}

/** D refused the connection because too many are authenticating (its ERROR frame, or the code itself). */
export function isDestBusy(e: unknown): boolean {
  return isPostcopyError(e) && (e.code === 'PC_ERR_BUSY' || (e.code === 'PC_ERR_PEER' && e.detail?.startsWith('PC_ERR_BUSY') === true));
}

/** D does not know our session (or our ticket): reconnecting again will not change that. */
export function isAuthFailure(e: unknown): boolean {
  return isPostcopyError(e) && e.code === 'PC_ERR_AUTH';
}

/**
 * What D's phase in its WELCOME says of the guest after S sent the final state: D runs it (it answered "running"
 * before that phase), never will (it rolled back or never got the state), or has not answered yet.
 */
export function peerPhaseMeans(destPhase: string): 'running' | 'not-running' | 'undecided' {
  if (destPhase === 'postcopy' || destPhase === 'complete' || destPhase === 'confirmed') return 'running';
  if (destPhase === 'aborted' || destPhase === 'prepared' || destPhase === 'receiving-ram') return 'not-running';
  return 'undecided';
}
