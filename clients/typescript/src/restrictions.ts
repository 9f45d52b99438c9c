// Plan restrictions for Next.js route handlers and Express, in the seed's shape:
//
//   const plans = createPlanRestrictions(client, { accountId: (req) => req.headers.get("x-workspace-id") });
//   const denied = await plans.applyPlanRestrictions(request, requireFeature("customBranding"));
//   if (denied) return denied; // a 403 Response naming the plan to upgrade to
//
// Checks go through EntitlementsClient, so with local evaluation they are answered from memory.
import type { EntitlementsClient } from "./client.js";

export type Restriction =
  | { kind: "feature"; feature: string }
  | { kind: "minimumPlan"; planId: string }
  | { kind: "usageLimit"; limit: string; current: number | bigint };

/** The account must have `feature` ("customBranding"). */
export function requireFeature(feature: string): Restriction {
  return { kind: "feature", feature };
}

/** The account must be on `planId` ("pro") or a higher plan. */
export function requireMinimumPlan(planId: string): Restriction {
  return { kind: "minimumPlan", planId };
}

/** The account must have room for one more under `limit` ("maxUsers") with `current` in use. */
export function checkUsageLimit(limit: string, current: number | bigint): Restriction {
  return { kind: "usageLimit", limit, current };
}

/** Why a request was refused: the body of the 403 response. */
export interface PlanRestrictionDenial {
  error: "plan_restriction";
  /** FEATURE_NOT_IN_PLAN, PLAN_TOO_LOW or LIMIT_EXCEEDED. */
  code: "FEATURE_NOT_IN_PLAN" | "PLAN_TOO_LOW" | "LIMIT_EXCEEDED";
  message: string;
  currentPlan: string;
  /** The restriction that failed: `feature`, `minimumPlan` or `limit` (with `current` and `max`). */
  feature?: string;
  minimumPlan?: string;
  limit?: string;
  current?: string;
  max?: string;
  /** The lowest plan that lifts the restriction, and where to buy it; null when no plan does. */
  upgrade: { planId: string; url: string | null } | null;
}

export interface PlanRestrictionOptions<Req> {
  /** The billing account (the nchat workspace) of a request. */
  accountId: (request: Req) => string | null | undefined | Promise<string | null | undefined>;
  /** Where to send the user to upgrade to `planId` (e.g. `/settings/billing?plan=${planId}`). */
  upgradeUrl?: (planId: string, accountId: string) => string;
}

export interface PlanRestrictions<Req> {
  /** The first restriction the request's account fails, as a denial, or null when all pass. */
  check(request: Req, ...restrictions: Restriction[]): Promise<PlanRestrictionDenial | null>;
  /** A 403 JSON Response (the denial) for a route handler to return, or null to go on. */
  applyPlanRestrictions(request: Req, ...restrictions: Restriction[]): Promise<Response | null>;
  /** The same as Express middleware: 403 JSON, or next(); errors go to next(error). */
  middleware(...restrictions: Restriction[]): (
    request: Req,
    response: ExpressLikeResponse,
    next: (error?: unknown) => void,
  ) => void;
}

export interface ExpressLikeResponse {
  status(code: number): { json(body: unknown): unknown };
}

export function createPlanRestrictions<Req = Request>(
  client: EntitlementsClient,
  options: PlanRestrictionOptions<Req>,
): PlanRestrictions<Req> {
  const upgrade = (planId: string, accountId: string): PlanRestrictionDenial["upgrade"] =>
    planId ? { planId, url: options.upgradeUrl?.(planId, accountId) ?? null } : null;

  async function one(accountId: string, restriction: Restriction): Promise<PlanRestrictionDenial | null> {
    switch (restriction.kind) {
      case "feature": {
        const answer = await client.canUseFeature(accountId, restriction.feature);
        if (answer.allowed) return null;
        return {
          error: "plan_restriction",
          code: "FEATURE_NOT_IN_PLAN",
          message: answer.message || `the ${answer.planId} plan does not include ${restriction.feature}`,
          currentPlan: answer.planId,
          feature: restriction.feature,
          upgrade: upgrade(answer.upgradePlanId, accountId),
        };
      }
      case "minimumPlan": {
        const answer = await client.checkMinimumPlan(accountId, restriction.planId);
        if (answer.allowed) return null;
        return {
          error: "plan_restriction",
          code: "PLAN_TOO_LOW",
          message: `this needs the ${restriction.planId} plan or higher; the account is on ${answer.planId}`,
          currentPlan: answer.planId,
          minimumPlan: restriction.planId,
          upgrade: upgrade(restriction.planId, accountId),
        };
      }
      case "usageLimit": {
        const answer = await client.checkLimit(accountId, restriction.limit, restriction.current);
        if (answer.allowed) return null;
        const catalog = await client.catalog();
        const next = catalog.limitUpgradePath(answer.planId, restriction.limit, answer.current);
        return {
          error: "plan_restriction",
          code: "LIMIT_EXCEEDED",
          message: `${restriction.limit} is ${answer.limit} on the ${answer.planId} plan and ${answer.current} are in use`,
          currentPlan: answer.planId,
          limit: restriction.limit,
          current: answer.current.toString(),
          max: answer.limit?.toString(),
          upgrade: upgrade(next, accountId),
        };
      }
    }
  }

  async function check(request: Req, ...restrictions: Restriction[]): Promise<PlanRestrictionDenial | null> {
    const accountId = await options.accountId(request);
    if (!accountId) throw new TypeError("plan restrictions: the request names no account");
    for (const restriction of restrictions) {
      const denial = await one(accountId, restriction);
      if (denial) return denial;
    }
    return null;
  }

  return {
    check,
    async applyPlanRestrictions(request, ...restrictions) {
      const denial = await check(request, ...restrictions);
      return denial ? Response.json(denial, { status: 403 }) : null;
    },
    middleware(...restrictions) {
      return (request, response, next) => {
        check(request, ...restrictions).then(
          (denial) => (denial ? response.status(403).json(denial) : next()),
          (error: unknown) => next(error),
        );
      };
    },
  };
}
