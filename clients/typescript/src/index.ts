// @bedrock-imagegen/client: bedrock-imagegen's HTTP API from TypeScript, on `fetch`.
export { ImagegenClient } from "./client.js";
export type { ClientOptions, ListOptions, SubmitOptions, WaitOptions } from "./client.js";
export {
  ApiError,
  ChainFailedError,
  ImagegenClientError,
  JobFailedError,
  RequestFailedError,
  StreamEndedError,
  WaitTimeoutError,
} from "./errors.js";
export { DEFAULT_RETRY, type RetryPolicy } from "./retry.js";
export { FINAL_STATUSES, isFinal } from "./types.js";
export type {
  Batch,
  BatchCreated,
  Chain,
  ChainCreated,
  Job,
  JobPage,
  JobSpec,
  JobStatus,
  Model,
  Problem,
  Upload,
  WebhookSecrets,
} from "./types.js";
export { type WebhookEvent, WebhookVerificationError, verifyWebhook } from "./webhooks.js";
export type { components, operations, paths } from "./schema.js";
