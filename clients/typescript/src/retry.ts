// When to send a request again: after a 429 or a 503 (the API did nothing with it), after the
// server's Retry-After, as long as that stays within the client's bounds.

export const RETRIED_STATUSES: ReadonlySet<number> = new Set([429, 503]);

export interface RetryPolicy {
  /** Tries after the first; 0: never retry. */
  maxRetries: number;
  /** A longer Retry-After is not waited: the error is thrown with `retryAfterSeconds`. */
  maxWaitMs: number;
  /** Without Retry-After: this, doubled each time. */
  backoffMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = { maxRetries: 3, maxWaitMs: 30_000, backoffMs: 1_000 };

/** Retry-After in seconds: delay-seconds or an HTTP date; undefined when absent or unreadable. */
export function retryAfterSeconds(
  value: string | null,
  now: number = Date.now(),
): number | undefined {
  if (!value) {
    return undefined;
  }
  const text = value.trim();
  if (/^\d+$/.test(text)) {
    return Number(text);
  }
  const at = Date.parse(text);
  return Number.isNaN(at) ? undefined : Math.max(0, (at - now) / 1000);
}

/** Milliseconds to wait before retry number `retry` (0-based); undefined: do not retry. */
export function retryDelayMs(
  policy: RetryPolicy,
  status: number,
  retryAfter: number | undefined,
  retry: number,
): number | undefined {
  if (!RETRIED_STATUSES.has(status) || retry >= policy.maxRetries) {
    return undefined;
  }
  const delay = retryAfter !== undefined ? retryAfter * 1000 : policy.backoffMs * 2 ** retry;
  return delay <= policy.maxWaitMs ? delay : undefined;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
