// The plan catalog as ListPlans returns it, with the rules a local answer needs: which plan is
// higher, the upgrade path for a feature or a limit, and the judgement of usage against a limit.
import type { ListPlansResponse } from "./gen/nchat/entitlements/v1/entitlements_service_pb.js";
import type { Limit, Plan } from "./gen/nchat/entitlements/v1/plan_pb.js";
import { UsageLevel } from "./gen/nchat/entitlements/v1/plan_pb.js";

export class PlanCatalog {
  /** The plans from the lowest tier to the highest. */
  readonly plans: readonly Plan[];
  readonly featureKeys: ReadonlySet<string>;
  readonly limitKeys: ReadonlySet<string>;
  private readonly byId: ReadonlyMap<string, Plan>;

  constructor(response: ListPlansResponse) {
    this.plans = [...response.plans].sort((a, b) => a.tier - b.tier);
    this.byId = new Map(this.plans.map((plan) => [plan.id, plan]));
    this.featureKeys = new Set(response.features.map((feature) => feature.key));
    this.limitKeys = new Set(this.plans.flatMap((plan) => plan.limits.map((limit) => limit.key)));
  }

  plan(planId: string): Plan | undefined {
    return this.byId.get(planId);
  }

  /** The lowest plan above `planId` with `feature`; "" when `planId` has it or none does. */
  upgradePath(planId: string, feature: string): string {
    const current = this.plan(planId);
    if (!current || current.features.includes(feature)) return "";
    return this.plans.find((p) => p.tier > current.tier && p.features.includes(feature))?.id ?? "";
  }

  /** The lowest plan above `planId` whose `limitKey` leaves room for `current` + 1; "" if none. */
  limitUpgradePath(planId: string, limitKey: string, current: bigint): string {
    const tier = this.plan(planId)?.tier ?? -1;
    for (const plan of this.plans) {
      if (plan.tier <= tier) continue;
      const limit = plan.limits.find((l) => l.key === limitKey);
      if (limit && (limit.unlimited || current < limit.value)) return plan.id;
    }
    return "";
  }

  /** Whether `planId` is `minimumPlanId` or above (an unknown current plan is below all). */
  atLeast(planId: string, minimumPlanId: string): boolean {
    const minimum = this.plan(minimumPlanId);
    const current = this.plan(planId);
    return minimum !== undefined && current !== undefined && current.tier >= minimum.tier;
  }
}

export interface LimitJudgement {
  allowed: boolean;
  percentage: number;
  level: UsageLevel;
  /** Room left; undefined when unlimited. */
  remaining: bigint | undefined;
}

/** `current` against `limit` with the service's thresholds (75 % warning, 90 % prompt, 100 %). */
export function judgeLimit(limit: Limit, current: bigint): LimitJudgement {
  if (limit.unlimited) {
    return { allowed: true, percentage: 0, level: UsageLevel.OK, remaining: undefined };
  }
  const value = limit.value;
  if (value <= 0n) {
    return { allowed: false, percentage: 100, level: UsageLevel.EXCEEDED, remaining: 0n };
  }
  // Integer comparisons, as the server does: no float rounding at exactly 75 % or 90 %.
  let level = UsageLevel.OK;
  if (current >= value) level = UsageLevel.EXCEEDED;
  else if (100n * current >= 90n * value) level = UsageLevel.UPGRADE_PROMPT;
  else if (100n * current >= 75n * value) level = UsageLevel.WARNING;
  const remaining = value - current;
  return {
    allowed: remaining > 0n,
    percentage: (Number(current) * 100) / Number(value),
    level,
    remaining: remaining > 0n ? remaining : 0n,
  };
}
