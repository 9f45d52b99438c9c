// @nchat/entitlements-client: the typed client of the nchat entitlements service (local
// evaluation, usage reporter, retries, typed errors, plan restrictions for route handlers), and
// the generated protobuf-es messages and Connect service descriptors underneath it.
import type { Client, Interceptor, Transport } from "@connectrpc/connect";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";

import { AdminService } from "./gen/nchat/entitlements/v1/admin_service_pb.js";
import { BillingService } from "./gen/nchat/entitlements/v1/billing_service_pb.js";
import { CryptoPaymentService } from "./gen/nchat/entitlements/v1/crypto_payment_service_pb.js";
import { EntitlementsService } from "./gen/nchat/entitlements/v1/entitlements_service_pb.js";
import { TokenGateService } from "./gen/nchat/entitlements/v1/token_gate_service_pb.js";
import { UsageService } from "./gen/nchat/entitlements/v1/usage_service_pb.js";

// google.rpc error details (BadRequest, ErrorInfo, ...) for ConnectError.findDetails.
export * from "./gen/google/rpc/error_details_pb.js";
export * from "./gen/google/rpc/status_pb.js";
export * from "./gen/nchat/entitlements/v1/admin_service_pb.js";
export * from "./gen/nchat/entitlements/v1/billing_service_pb.js";
export * from "./gen/nchat/entitlements/v1/crypto_payment_service_pb.js";
export * from "./gen/nchat/entitlements/v1/entitlements_service_pb.js";
export * from "./gen/nchat/entitlements/v1/error_reason_pb.js";
export * from "./gen/nchat/entitlements/v1/event_delivery_pb.js";
export * from "./gen/nchat/entitlements/v1/plan_pb.js";
export * from "./gen/nchat/entitlements/v1/subscription_pb.js";
export * from "./gen/nchat/entitlements/v1/token_gate_service_pb.js";
export * from "./gen/nchat/entitlements/v1/usage_service_pb.js";

export type { AnswerSource, FeatureCheck, LimitCheck, LocalState, MinimumPlanCheck } from "./answers.js";
export { judgeLimit, PlanCatalog } from "./catalog.js";
export {
  type CryptoPaymentConfirmedData,
  type CryptoPaymentReversedData,
  type CryptoPaymentUnderpaidData,
  type EntitlementsEvent,
  EventVerificationError,
  type OtherEventType,
  type PaymentFailedData,
  type RenewalUpcomingData,
  type SubscriptionActivatedData,
  type SubscriptionCanceledData,
  type SubscriptionChangedData,
  type SubscriptionPastDueData,
  type ThresholdCrossedData,
  type TokenAccessData,
  verifyEvent,
  type VerifyOptions,
} from "./events.js";
export {
  type CallOptions,
  type ClientOptions,
  EntitlementsClient,
  type LocalEvaluationOptions,
  type UsageEventInit,
} from "./client.js";
export {
  AlreadyExists,
  BufferFull,
  DeadlineExceeded,
  EntitlementsError,
  FailedPrecondition,
  InvalidArgument,
  NotFound,
  Overloaded,
  PermissionDenied,
  ReporterClosed,
  ReporterError,
  ServerError,
  toEntitlementsError,
  Unauthenticated,
  Unavailable,
  UndeliveredUsage,
  Unimplemented,
} from "./errors.js";
export {
  checkUsageLimit,
  createPlanRestrictions,
  type ExpressLikeResponse,
  type PlanRestrictionDenial,
  type PlanRestrictionOptions,
  type PlanRestrictions,
  type Restriction,
  requireFeature,
  requireMinimumPlan,
} from "./restrictions.js";
export { RetryPolicy, type RetryOptions } from "./retry.js";
export { type FailedUsage, UsageReporter, type UsageReporterOptions } from "./usage.js";

export interface EntitlementsClientOptions {
  /** Sent as `authorization: Bearer <token>` on every call; omit for a dev-mode server. */
  token?: string;
  /** Extra Connect interceptors (logging, metrics), run after the auth one. */
  interceptors?: Interceptor[];
  /** Default deadline of every call in milliseconds (default 500, for hot-path checks). */
  timeoutMs?: number;
}

/** One typed client per service of the API, sharing one HTTP/2 transport. */
export interface EntitlementsClients {
  transport: Transport;
  entitlements: Client<typeof EntitlementsService>;
  usage: Client<typeof UsageService>;
  tokenGate: Client<typeof TokenGateService>;
  billing: Client<typeof BillingService>;
  cryptoPayments: Client<typeof CryptoPaymentService>;
  admin: Client<typeof AdminService>;
}

/**
 * Clients of all six services for `baseUrl`, e.g. "http://entitlements:50051" (plaintext
 * HTTP/2) or "https://..." (TLS). Errors are `ConnectError`s with the gRPC code and the
 * google.rpc details (ErrorInfo reason, BadRequest field): see README.md.
 */
export function createEntitlementsClients(
  baseUrl: string,
  options: EntitlementsClientOptions = {},
): EntitlementsClients {
  const auth: Interceptor = (next) => async (req) => {
    if (options.token) {
      req.header.set("authorization", `Bearer ${options.token}`);
    }
    return next(req);
  };
  const transport = createGrpcTransport({
    baseUrl,
    interceptors: [auth, ...(options.interceptors ?? [])],
    defaultTimeoutMs: options.timeoutMs ?? 500,
  });
  return {
    transport,
    entitlements: createClient(EntitlementsService, transport),
    usage: createClient(UsageService, transport),
    tokenGate: createClient(TokenGateService, transport),
    billing: createClient(BillingService, transport),
    cryptoPayments: createClient(CryptoPaymentService, transport),
    admin: createClient(AdminService, transport),
  };
}
