// Webhook verification: Standard Webhooks v1 signatures, checked by the `standardwebhooks`
// package with each of the tenant's secrets (GET /v1/webhook-secrets; two during a rotation).
import { Webhook, WebhookVerificationError } from "standardwebhooks";

import type { JobStatus } from "./types.js";

export { WebhookVerificationError };

/** A delivery's body: `job.succeeded`, `job.failed`, ..., `chain.succeeded`, `tenant.budget_warning`. */
export interface WebhookEvent {
  type: string;
  timestamp: string;
  data: {
    job_id?: string;
    status?: JobStatus;
    image_url?: string | null;
    image_url_expires_at?: string | null;
    metadata?: Record<string, unknown>;
    [field: string]: unknown;
  };
}

type HeaderSource = Headers | Record<string, string | string[] | undefined>;

/** The event, once its signature (with any of `secrets`) and its timestamp (within 5 minutes)
 * check out; throws `WebhookVerificationError` otherwise. Pass the body exactly as received. */
export function verifyWebhook(
  body: string | Uint8Array,
  headers: HeaderSource,
  secrets: string | readonly string[],
): WebhookEvent {
  const signed = {
    "webhook-id": header(headers, "webhook-id"),
    "webhook-timestamp": header(headers, "webhook-timestamp"),
    "webhook-signature": header(headers, "webhook-signature"),
  };
  let failure: unknown = new WebhookVerificationError("no secret to verify with");
  for (const secret of typeof secrets === "string" ? [secrets] : secrets) {
    try {
      return new Webhook(secret).verify(body, signed) as WebhookEvent;
    } catch (error) {
      failure = error;
    }
  }
  throw failure;
}

function header(headers: HeaderSource, name: string): string {
  if (headers instanceof Headers) {
    return headers.get(name) ?? "";
  }
  const found = Object.entries(headers).find(([key]) => key.toLowerCase() === name)?.[1];
  return (Array.isArray(found) ? found[0] : found) ?? "";
}
