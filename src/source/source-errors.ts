// S's rollback as the CLI and tests see it: the common RolledBackError, with the pre-copy's figures.
import { RolledBackError as CommonRolledBackError, type PostcopyError } from '../common/errors.js';
import type { PrecopyResult } from '../guest/source-guest.js';

/** The migration was rolled back before cut-over; the guest runs on S. */
export class RolledBackError extends CommonRolledBackError {
  readonly precopy: PrecopyResult | null;
  constructor(cause: PostcopyError, precopy: PrecopyResult | null) {
    super('PC_ERR_ROLLBACK', cause.code === 'PC_ERR_ROLLBACK' ? cause.detail : cause.message, { cause });
    this.precopy = precopy;
  }
}

