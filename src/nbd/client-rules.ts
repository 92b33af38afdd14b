// What the negotiated export allows a request: its size, block alignment, largest request, and the commands and
// flags the server advertised. The client checks each call here before anything goes on the wire. Pure.
import { NbdError } from '../common/errors.js';
import type { NegotiatedExport } from './client-handshake.js';
import type { RequestOptions } from './client-types.js';
import * as C from './constants.js';

export class ExportRules {
  readonly size: number;
  /** Requests must be aligned to this (the server's minimum block size; 1 when it named none). */
  readonly minBlock: number;
  /** Largest READ/WRITE payload per request: ours and the server's cap, rounded down to whole blocks. */
  readonly maxRequest: number;
  readonly #transmissionFlags: number;

  constructor(info: NegotiatedExport, maxRequestBytes = C.NBD_DEFAULT_MAX_PAYLOAD) {
    if (!Number.isSafeInteger(info.size)) throw new NbdError('NBD_ERR_HANDSHAKE', `export size ${info.size} too large`);
    this.size = info.size;
    this.#transmissionFlags = info.transmissionFlags;
    this.minBlock = info.blockSizes?.minimum ?? 1;
    let max = Math.min(maxRequestBytes, info.blockSizes?.maximum ?? C.NBD_DEFAULT_MAX_PAYLOAD);
    max -= max % this.minBlock;
    this.maxRequest = Math.max(max, this.minBlock);
  }

  /** No honest chunk is longer than our largest read (+ its offset) or a full status reply. */
  get maxChunkLength(): number {
    return Math.max(this.maxRequest + C.OFFSET_DATA_AT.data, C.BLOCK_STATUS_AT.extents + C.EXTENT_BYTES * C.NBD_MAX_EXTENTS);
  }

  has(flag: number): boolean {
    return (this.#transmissionFlags & flag) !== 0;
  }

  checkRange(offset: number, length: number): void {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > this.size) {
      throw new NbdError('NBD_ERR_REQUEST', `range [${offset}, +${length}) outside the export (${this.size})`, { errno: C.NBD_EINVAL });
    }
  }

  checkWritable(offset: number, length: number, flag: number): void {
    this.checkRange(offset, length);
    if (offset % this.minBlock !== 0 || length % this.minBlock !== 0) {
      throw new NbdError('NBD_ERR_REQUEST', `[${offset}, +${length}) not aligned to the server's ${this.minBlock}-byte blocks`, {
        errno: C.NBD_EINVAL,
      });
    }
    if (this.has(C.NBD_FLAG_READ_ONLY)) throw new NbdError('NBD_ERR_REQUEST', 'export is read-only', { errno: C.NBD_EPERM });
    if (flag) this.requireFlag(flag, C.nameOfTransmissionFlags(flag));
  }

  requireFlag(flag: number, what: string): void {
    if (!this.has(flag)) throw new NbdError('NBD_ERR_REQUEST', `server does not support ${what}`, { errno: C.NBD_EINVAL });
  }

  /** The FUA command flag when asked for (and advertised), else 0. */
  fuaFlag(opts: RequestOptions): number {
    if (!opts.fua) return 0;
    this.requireFlag(C.NBD_FLAG_SEND_FUA, 'FUA');
    return C.NBD_CMD_FLAG_FUA;
  }
}
