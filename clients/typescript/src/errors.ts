// The client's typed errors, built from a gRPC status and its google.rpc details.
//
// EntitlementsError
//   InvalidArgument (.field)
//   NotFound, AlreadyExists, FailedPrecondition
//   Unauthenticated, PermissionDenied
//   Unavailable (worth retrying)
//     DeadlineExceeded, Overloaded
//   Unimplemented
//   ServerError (any other status)
// ReporterError
//   ReporterClosed, BufferFull, UndeliveredUsage
//
// Every EntitlementsError carries the gRPC `code`, the server's message, the stable `reason` of
// the google.rpc.ErrorInfo detail (an ERROR_REASON_* name, "" when the server sent none) and its
// `metadata`; the same hierarchy as the Python client's.
import { Code, ConnectError } from "@connectrpc/connect";

import { BadRequestSchema, ErrorInfoSchema } from "./gen/google/rpc/error_details_pb.js";
import type { UsageEvent } from "./gen/nchat/entitlements/v1/usage_service_pb.js";

export interface ErrorFields {
  code?: Code;
  reason?: string;
  metadata?: Record<string, string>;
  field?: string;
  cause?: unknown;
}

/** An RPC to the entitlements service failed. */
export class EntitlementsError extends Error {
  readonly code: Code;
  readonly reason: string;
  readonly metadata: Readonly<Record<string, string>>;

  constructor(message: string, fields: ErrorFields = {}) {
    super(message, fields.cause === undefined ? undefined : { cause: fields.cause });
    this.name = new.target.name;
    this.code = fields.code ?? Code.Unknown;
    this.reason = fields.reason ?? "";
    this.metadata = Object.freeze({ ...(fields.metadata ?? {}) });
  }
}

/** The request had a bad field; `field` names it (`feature`, `events[2].delta`). */
export class InvalidArgument extends EntitlementsError {
  readonly field: string;

  constructor(message: string, fields: ErrorFields = {}) {
    super(message, {
      ...fields,
      code: fields.code ?? Code.InvalidArgument,
      reason: fields.reason || "ERROR_REASON_INVALID_ARGUMENT",
    });
    this.field = fields.field ?? "";
  }
}

/** The named object does not exist (never for an account: unknown accounts are free). */
export class NotFound extends EntitlementsError {}
/** An object with the same key exists, or an idempotency key was reused with another payload. */
export class AlreadyExists extends EntitlementsError {}
/** The request is valid but the current state forbids it. */
export class FailedPrecondition extends EntitlementsError {}
/** No valid bearer token was sent. */
export class Unauthenticated extends EntitlementsError {}
/** The caller's token lacks the scope the RPC needs. */
export class PermissionDenied extends EntitlementsError {}
/** The service (or a dependency of it) could not answer now; retry later with backoff. */
export class Unavailable extends EntitlementsError {}
/** The call did not finish within its deadline. */
export class DeadlineExceeded extends Unavailable {}
/** The server is past its in-flight limit (RESOURCE_EXHAUSTED). */
export class Overloaded extends Unavailable {}
/** The RPC is part of the published API but the server does not implement it. */
export class Unimplemented extends EntitlementsError {}
/** Any other status (INTERNAL, UNKNOWN, ABORTED, CANCELED, ...). */
export class ServerError extends EntitlementsError {}

/** A UsageReporter could not take an increment. */
export class ReporterError extends Error {
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}
/** `add()` after `close()`. */
export class ReporterClosed extends ReporterError {}
/** The reporter's buffer is full; nothing was added. */
export class BufferFull extends ReporterError {}
/** `close()` ran out of time: `events` (with their keys) were not confirmed; resending them later cannot double count. */
export class UndeliveredUsage extends ReporterError {
  readonly events: UsageEvent[];

  constructor(events: UsageEvent[]) {
    super(`${events.length} usage events were not delivered`);
    this.events = events;
  }
}

type ErrorClass = new (message: string, fields?: ErrorFields) => EntitlementsError;

const BY_CODE = new Map<Code, ErrorClass>([
  [Code.InvalidArgument, InvalidArgument],
  [Code.OutOfRange, InvalidArgument],
  [Code.NotFound, NotFound],
  [Code.AlreadyExists, AlreadyExists],
  [Code.FailedPrecondition, FailedPrecondition],
  [Code.Unauthenticated, Unauthenticated],
  [Code.PermissionDenied, PermissionDenied],
  [Code.Unavailable, Unavailable],
  [Code.DeadlineExceeded, DeadlineExceeded],
  [Code.ResourceExhausted, Overloaded],
  [Code.Unimplemented, Unimplemented],
]);

/** The typed error for anything a Connect call threw (a ConnectError or any other value). */
export function toEntitlementsError(error: unknown): EntitlementsError {
  if (error instanceof EntitlementsError) return error;
  const connect = ConnectError.from(error);
  let reason = "";
  let field = "";
  const metadata: Record<string, string> = {};
  for (const info of connect.findDetails(ErrorInfoSchema)) {
    reason ||= info.reason;
    Object.assign(metadata, info.metadata);
  }
  for (const bad of connect.findDetails(BadRequestSchema)) {
    field ||= bad.fieldViolations[0]?.field ?? "";
  }
  const cls = BY_CODE.get(connect.code) ?? ServerError;
  return new cls(connect.rawMessage || Code[connect.code], {
    code: connect.code,
    reason,
    metadata,
    field: field || metadata.field || "",
    cause: error,
  });
}

/** A status from a CheckFeatures item (google.rpc.Status) as a typed error. */
export function errorFromStatus(
  code: number,
  message: string,
  details: { reason?: string; field?: string },
): EntitlementsError {
  const cls = BY_CODE.get(code as Code) ?? ServerError;
  return new cls(message, { code: code as Code, reason: details.reason, field: details.field });
}
