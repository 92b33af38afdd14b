// The server's option phase as a pure step function: one option request in, the reply buffers
// and what the connection does next out. No socket here, so every refusal is unit-testable.
import type { BlockDevice } from '../common/block-device.js';
import * as codec from './codec.js';
import type { BlockSizeLimits } from './codec.js';
import * as C from './constants.js';

export interface NbdExport {
  name: string;
  device: BlockDevice;
  description?: string;
}

/** What the negotiation needs from the server: the exports and the limits it advertises. */
export interface ExportCatalog {
  /** An export by name; "" names the default export. */
  find(name: string): NbdExport | undefined;
  list(): readonly NbdExport[];
  blockSizes(exp: NbdExport): BlockSizeLimits;
}

/**
 * TLS on this connection, per the spec's modes: 'none' (NOTLS: STARTTLS is refused), 'required'
 * (FORCEDTLS before STARTTLS: every option but STARTTLS and ABORT gets TLS_REQD), 'active' (after it).
 */
export type TlsMode = 'none' | 'required' | 'active';

export interface NegotiationState {
  /** Both sides agreed to drop the EXPORT_NAME padding (a handshake flag: it survives STARTTLS). */
  noZeroes: boolean;
  tls: TlsMode;
  structuredReplies: boolean;
  /** The export SET_META_CONTEXT selected base:allocation for (undefined: none selected). */
  metaContextExport: string | undefined;
}

export type OptionOutcome =
  | { next: 'continue'; replies: Buffer[] }
  | { next: 'close'; replies: Buffer[]; reason: string }
  /** STARTTLS accepted: send the replies, then the TLS handshake on the same socket. */
  | { next: 'starttls'; replies: Buffer[] }
  | { next: 'transmission'; replies: Buffer[]; export: NbdExport; baseAllocation: boolean };

/** Context id of base:allocation once selected (ids in LIST replies are 0). */
export const BASE_ALLOCATION_ID = 1;

export function transmissionFlagsFor(device: BlockDevice): number {
  let flags = C.NBD_FLAG_HAS_FLAGS | C.NBD_FLAG_SEND_FLUSH | C.NBD_FLAG_SEND_FUA | C.NBD_FLAG_SEND_CACHE;
  // Like qemu-nbd: a read-only export does not offer write-type commands it would refuse anyway.
  flags |= device.readOnly ? C.NBD_FLAG_READ_ONLY : C.NBD_FLAG_SEND_TRIM | C.NBD_FLAG_SEND_WRITE_ZEROES;
  if (device.multiConnSafe) flags |= C.NBD_FLAG_CAN_MULTI_CONN;
  return flags;
}

function cont(...replies: Buffer[]): OptionOutcome {
  return { next: 'continue', replies };
}

function refuse(option: number, errorType: number, message: string): OptionOutcome {
  return cont(codec.encodeOptionError(option, errorType, message));
}

/** Handle one option; mutates state (SR, meta context selection). */
export function handleOption(
  state: NegotiationState,
  catalog: ExportCatalog,
  option: number,
  data: Buffer,
): OptionOutcome {
  if (state.tls === 'required') return beforeTls(option, data);
  switch (option) {
    case C.NBD_OPT_EXPORT_NAME:
      return exportName(state, catalog, data);
    case C.NBD_OPT_ABORT:
      return { next: 'close', replies: [codec.encodeAck(option)], reason: 'client sent NBD_OPT_ABORT' };
    case C.NBD_OPT_LIST:
      if (data.length !== 0) return refuse(option, C.NBD_REP_ERR_INVALID, 'LIST takes no data');
      return cont(
        ...catalog.list().map((e) => codec.encodeRepServer(option, e.name, e.description ?? '')),
        codec.encodeAck(option),
      );
    case C.NBD_OPT_STARTTLS:
      if (data.length !== 0) return refuse(option, C.NBD_REP_ERR_INVALID, 'STARTTLS takes no data');
      if (state.tls === 'active') return refuse(option, C.NBD_REP_ERR_INVALID, 'TLS is already active');
      return refuse(option, C.NBD_REP_ERR_POLICY, 'TLS is not configured on this server');
    case C.NBD_OPT_INFO:
    case C.NBD_OPT_GO:
      return infoOrGo(state, catalog, option, data);
    case C.NBD_OPT_STRUCTURED_REPLY:
      if (data.length !== 0) return refuse(option, C.NBD_REP_ERR_INVALID, 'STRUCTURED_REPLY takes no data');
      if (state.structuredReplies) return refuse(option, C.NBD_REP_ERR_INVALID, 'structured replies already negotiated');
      state.structuredReplies = true;
      return cont(codec.encodeAck(option));
    case C.NBD_OPT_LIST_META_CONTEXT:
    case C.NBD_OPT_SET_META_CONTEXT:
      return metaContext(state, catalog, option, data);
    case C.NBD_OPT_EXTENDED_HEADERS:
      return refuse(option, C.NBD_REP_ERR_UNSUP, 'extended headers are not supported');
    default:
      return refuse(option, C.NBD_REP_ERR_UNSUP, `unsupported option ${option}`);
  }
}

/** FORCEDTLS before STARTTLS: nothing about the exports is told, nothing is served. */
function beforeTls(option: number, data: Buffer): OptionOutcome {
  switch (option) {
    case C.NBD_OPT_STARTTLS:
      if (data.length !== 0) return refuse(option, C.NBD_REP_ERR_INVALID, 'STARTTLS takes no data');
      return { next: 'starttls', replies: [codec.encodeAck(option)] };
    case C.NBD_OPT_ABORT:
      return { next: 'close', replies: [codec.encodeAck(option)], reason: 'client sent NBD_OPT_ABORT' };
    case C.NBD_OPT_EXPORT_NAME:
      // No error reply exists for EXPORT_NAME: the spec says close.
      return { next: 'close', replies: [], reason: 'EXPORT_NAME before STARTTLS on a TLS-only server' };
    default:
      return refuse(option, C.NBD_REP_ERR_TLS_REQD, 'this server requires TLS: send NBD_OPT_STARTTLS first');
  }
}

/** State after a successful TLS handshake: everything negotiated in the clear is forgotten. */
export function resetAfterTls(state: NegotiationState): void {
  state.tls = 'active';
  state.structuredReplies = false;
  state.metaContextExport = undefined;
}

function exportName(state: NegotiationState, catalog: ExportCatalog, data: Buffer): OptionOutcome {
  // No error reply exists for EXPORT_NAME: the only way to refuse is to close.
  if (data.length > C.NBD_MAX_STRING) return { next: 'close', replies: [], reason: `EXPORT_NAME longer than ${C.NBD_MAX_STRING}` };
  const exp = catalog.find(data.toString('utf8'));
  if (!exp) return { next: 'close', replies: [], reason: 'EXPORT_NAME names an unknown export' };
  const reply = codec.encodeExportNameReply(exp.device.size, transmissionFlagsFor(exp.device), state.noZeroes);
  return { next: 'transmission', replies: [reply], export: exp, baseAllocation: selectedFor(state, exp) };
}

function selectedFor(state: NegotiationState, exp: NbdExport): boolean {
  return state.metaContextExport === exp.name;
}

function infoOrGo(state: NegotiationState, catalog: ExportCatalog, option: number, data: Buffer): OptionOutcome {
  const req = codec.parseInfoRequest(data);
  if (!req.ok) return refuse(option, req.tooBig ? C.NBD_REP_ERR_TOO_BIG : C.NBD_REP_ERR_INVALID, req.reason);
  const exp = catalog.find(req.name);
  if (!exp) return refuse(option, C.NBD_REP_ERR_UNKNOWN, 'no such export');
  const replies: Buffer[] = [codec.encodeInfoExport(option, exp.device.size, transmissionFlagsFor(exp.device))];
  const asked = new Set(req.infoIds);
  // Unknown ids are ignored; each known one is answered at most once.
  if (asked.has(C.NBD_INFO_NAME)) replies.push(codec.encodeInfoName(option, exp.name));
  if (asked.has(C.NBD_INFO_DESCRIPTION) && exp.description) {
    replies.push(codec.encodeInfoDescription(option, exp.description));
  }
  if (asked.has(C.NBD_INFO_BLOCK_SIZE)) replies.push(codec.encodeInfoBlockSize(option, catalog.blockSizes(exp)));
  replies.push(codec.encodeAck(option));
  if (option === C.NBD_OPT_INFO) return cont(...replies);
  return { next: 'transmission', replies, export: exp, baseAllocation: selectedFor(state, exp) };
}

function metaContext(state: NegotiationState, catalog: ExportCatalog, option: number, data: Buffer): OptionOutcome {
  const isSet = option === C.NBD_OPT_SET_META_CONTEXT;
  if (isSet && !state.structuredReplies) {
    return refuse(option, C.NBD_REP_ERR_INVALID, 'SET_META_CONTEXT needs structured replies first');
  }
  const req = codec.parseMetaContextRequest(data);
  if (!req.ok) return refuse(option, req.tooBig ? C.NBD_REP_ERR_TOO_BIG : C.NBD_REP_ERR_INVALID, req.reason);
  const exp = catalog.find(req.exportName);
  if (!exp) {
    if (isSet) state.metaContextExport = undefined;
    return refuse(option, C.NBD_REP_ERR_UNKNOWN, 'no such export');
  }
  // Zero queries: LIST means "everything", SET means "nothing". "base:" is a LIST-only wildcard.
  const matches = isSet
    ? req.queries.includes(C.NBD_META_BASE_ALLOCATION)
    : req.queries.length === 0 ||
      req.queries.some((q) => q === C.NBD_META_BASE_ALLOCATION || q === C.NBD_META_BASE_NAMESPACE);
  if (isSet) state.metaContextExport = matches ? exp.name : undefined;
  const replies: Buffer[] = [];
  if (matches) {
    replies.push(codec.encodeRepMetaContext(option, isSet ? BASE_ALLOCATION_ID : 0, C.NBD_META_BASE_ALLOCATION));
  }
  replies.push(codec.encodeAck(option));
  return cont(...replies);
}
